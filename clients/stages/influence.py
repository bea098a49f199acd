"""Device half of the ``influence`` stage: influence-guided fine-tuning of the device's
detector (Tuononen et al., "Targeted Fine-Tuning of DNN-Based Receivers via Influence
Functions"); the method, :func:`common.influence.detector.targeted_finetune`, is in
``common.influence``. This module implements no equation itself.
"""

from __future__ import annotations

from typing import Any

from common.influence.config import SPEC
from common.influence.detector import targeted_finetune
from common.stage import DeviceContext, StageResult

__all__ = ["InfluenceDevice"]


class InfluenceDevice:
    """Pick the worst validation targets, score the local training set by influence on
    them, fine-tune on the most beneficial samples."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        """Run :func:`~common.influence.detector.targeted_finetune` on the device's
        detector (``ctx.model``), data (``ctx.train``, ``ctx.val``) and seed.

        Returns
        -------
        StageResult
            Its metrics and FLOPs; ``model`` the influence-tuned copy if ``keep_model``.
        """
        if ctx.model is None or ctx.train is None or ctx.val is None:
            raise ValueError("the influence stage needs ctx.model, ctx.train and ctx.val")
        res = targeted_finetune(ctx.model, ctx.train, ctx.val, cfg, ctx.seed)
        return StageResult(metrics=res.metrics, flops=res.flops, model=res.model)
