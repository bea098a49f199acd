"""Device half of the ``prune`` stage: fit the device's detector to its FLOP budget by LRP
relevance (Gizzini and Medjahdi, X-REFINE); the method is ``common.xrefine.detector``."""

from __future__ import annotations

from typing import Any

from common.stage import DeviceContext, StageResult
from common.xrefine.config import SPEC
from common.xrefine.detector import prune_detector

__all__ = ["PruneDevice"]


class PruneDevice:
    """Prune conv channels and input rows to ``budget_flops``, retrain, report SER."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        """Prune ``ctx.model`` on ``ctx.train`` / ``ctx.val`` with the round's seed.

        Returns
        -------
        StageResult
            The metrics and FLOPs of ``prune_detector``; ``model``: the pruned SDNet (None
            when it already fit); ``state``: its ``widths`` and ``input_rows`` (int64).
        """
        out = prune_detector(ctx.model, ctx.train, ctx.val, cfg, ctx.seed)
        return StageResult(metrics=out.metrics, flops=out.flops, model=out.model, state=out.architecture)
