"""Device halves of the stages (``common.stage.DeviceStage``), by stage name, in the order
a device runs them. Each is a thin adapter from a device's round onto its paper's method
under ``common/``.
"""

from __future__ import annotations

from clients.stages.csi_feedback import CsiFeedbackDevice
from clients.stages.influence import InfluenceDevice
from clients.stages.prune import PruneDevice
from clients.stages.unit_update import UnitUpdateDevice
from common.stage import DeviceStage, stage_names

__all__ = ["DEVICE_STAGES"]

_HALVES: dict[str, DeviceStage] = {s.spec.name: s for s in (InfluenceDevice(), UnitUpdateDevice(), PruneDevice(), CsiFeedbackDevice())}

#: stage name -> device half, in ``common.stage.stage_names()`` order
DEVICE_STAGES: dict[str, DeviceStage] = {n: _HALVES[n] for n in stage_names()}
