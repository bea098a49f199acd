"""Device half of the ``prune`` stage: fit the device's detector to its FLOP budget by LRP
relevance (Gizzini and Medjahdi, X-REFINE); the method is in ``common.xrefine``."""

from __future__ import annotations

from typing import Any

from common.stage import DeviceContext, StageResult
from common.xrefine.config import SPEC
from common.xrefine.core import run_stage

__all__ = ["PruneDevice"]


class PruneDevice:
    """Prune conv channels and input rows to ``budget_flops``, retrain, report SER."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        return run_stage(ctx, cfg)
