"""Base-station half of CSI feedback: tell each device which decoder the BS holds, decode
its uplink (paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback").

A thin adapter onto :class:`common.csi.base_station.FeedbackServer`, which keeps one
decoder per device, decodes the coded decoder update and the latent CSI, and commits
only when every stream decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.csi.base_station import FeedbackServer
from common.csi.config import DECODER_TAG_KEY, SPEC
from common.profiles import DeviceProfile
from common.stage import BaseStationStage

__all__ = ["CsiFeedbackBaseStation"]


class CsiFeedbackBaseStation(BaseStationStage):
    """Per-device CSI decoders at the base station (built on first use)."""

    spec = SPEC

    def __init__(self, cfg_by_class: dict[str, dict[str, Any]], seed: int) -> None:
        super().__init__(cfg_by_class, seed)
        self._server: FeedbackServer | None = None

    @property
    def server(self) -> FeedbackServer:
        if self._server is None:
            self._server = FeedbackServer(self.cfg_by_class, self.seed)
        return self._server

    def instructions(self, device: DeviceProfile) -> dict[str, Any]:
        # the decoder the base station holds: a device whose last uplink was rejected goes back to it
        return {DECODER_TAG_KEY: self.server.decoder_tag(device.device_id, device.class_name)}

    def ingest(self, device: DeviceProfile, payloads: dict[str, bytes], side: dict[str, np.ndarray]) -> dict[str, float]:
        return self.server.ingest(device.device_id, device.class_name, payloads, side)

    def checkpoint(self) -> dict[str, np.ndarray]:
        return self.server.checkpoint() if self._server is not None else {}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            self.server.restore(arrays)
