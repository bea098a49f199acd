"""Base-station halves of the stages (``common.stage.BaseStationStage``), by stage name.

A stage with no entry here has a device half only (influence, prune). The server's round
loop builds one instance per run for every stage some device class enables.
"""

from __future__ import annotations

from common.stage import BaseStationStage
from server.stages.csi_feedback import CsiFeedbackBaseStation
from server.stages.unit_update import UnitUpdateBaseStation

__all__ = ["BASE_STATION_STAGES"]

#: stage name -> base-station half
BASE_STATION_STAGES: dict[str, type[BaseStationStage]] = {
    CsiFeedbackBaseStation.spec.name: CsiFeedbackBaseStation,
    UnitUpdateBaseStation.spec.name: UnitUpdateBaseStation,
}
