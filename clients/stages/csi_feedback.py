"""Device half of the ``csi_feedback`` stage: fine-tune the CSI compressor on the device's
own CSI and send the coded decoder update and latents (paper: "Online Neural Model
Fine-Tuning in Massive MIMO CSI Feedback"); the method is in ``common.csi``."""

from __future__ import annotations

from typing import Any

from common.csi.config import SPEC
from common.csi.core import run_stage
from common.stage import DeviceContext, StageResult

__all__ = ["CsiFeedbackDevice"]


class CsiFeedbackDevice:
    """Sync with the base station's decoder, fine-tune, code the update and latents."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        return run_stage(ctx, cfg)
