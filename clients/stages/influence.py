"""Device half of the ``influence`` stage: influence-guided fine-tuning of the device's
detector (Tuononen et al., "Targeted Fine-Tuning of DNN-Based Receivers via Influence
Functions"); the method is in ``common.influence``."""

from __future__ import annotations

from typing import Any

from common.influence.config import SPEC
from common.influence.core import run_stage
from common.stage import DeviceContext, StageResult

__all__ = ["InfluenceDevice"]


class InfluenceDevice:
    """Pick the worst validation targets, score the local training set by influence on
    them, fine-tune on the most beneficial samples."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        return run_stage(ctx, cfg)
