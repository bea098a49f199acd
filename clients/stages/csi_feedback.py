"""Device half of the ``csi_feedback`` stage: fine-tune the CSI compressor on the device's
own CSI and send the coded decoder update and latents (paper: "Online Neural Model
Fine-Tuning in Massive MIMO CSI Feedback"; eq. 9, 11, 12-21 are implemented in
``common.csi``). A thin adapter onto :func:`common.csi.device.device_round`."""

from __future__ import annotations

from typing import Any

from common.csi.config import DECODER_TAG_KEY, SPEC
from common.csi.device import device_round
from common.stage import DeviceContext, StageResult

__all__ = ["CsiFeedbackDevice"]


class CsiFeedbackDevice:
    """Sync with the base station's decoder, fine-tune, code the update and latents."""

    spec = SPEC

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        """The device's round (``common.stage.DeviceStage``).

        ``ctx.instructions`` may carry the base station's decoder tag
        (:data:`common.csi.config.DECODER_TAG_KEY`); the table's ``device = "class"``
        (default) fine-tunes where the class computes (``ctx.torch_device``); payloads, side channel, state and
        metrics are those of :class:`common.csi.device.DeviceRound`.
        """
        tag = ctx.instructions.get(DECODER_TAG_KEY)
        if cfg.get("device", "class") == "class":
            cfg = {**cfg, "device": ctx.torch_device}
        r = device_round(cfg, ctx.task, ctx.device_id, ctx.round, ctx.seed, ctx.state, None if tag is None else int(tag))
        return StageResult(metrics=r.metrics, flops=r.flops, payloads=r.payloads, side=r.side, state=r.state)
