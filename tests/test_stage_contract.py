"""The stage registries of both ends agree with the stage specs in common."""

from __future__ import annotations

import pytest

from clients.stages import DEVICE_STAGES
from common.schema import ScenarioError
from common.stage import BaseStationStage, DeviceStage, StageSpec, stage_names, stage_spec
from server.stages import BASE_STATION_STAGES


def test_every_stage_has_a_device_half_with_its_own_spec() -> None:
    assert tuple(DEVICE_STAGES) == stage_names()
    for name, half in DEVICE_STAGES.items():
        assert isinstance(half, DeviceStage)
        assert half.spec is stage_spec(name)


def test_base_station_halves_belong_to_registered_stages() -> None:
    for name, half in BASE_STATION_STAGES.items():
        assert issubclass(half, BaseStationStage)
        assert half.spec is stage_spec(name)
        # what the base station ingests is what the device half sends
        assert half.spec.payload_keys


def test_spec_check_errors_name_the_table_and_the_key() -> None:
    def check(cfg: dict) -> None:
        if cfg["n"] % 2:
            raise ScenarioError("n", "must be even")
        if cfg["n"] > 10:
            raise ValueError("too large for this stage")

    from common.schema import Field

    spec = StageSpec("demo", {"n": Field(int, 2, min=0)}, check=check)
    assert spec.validate({"n": 4}, "fleet[0].demo") == {"n": 4}
    with pytest.raises(ScenarioError, match=r"^fleet\[0\]\.demo\.n: must be even$"):
        spec.validate({"n": 3}, "fleet[0].demo")
    with pytest.raises(ScenarioError, match=r"^fleet\[0\]\.demo: too large for this stage$"):
        spec.validate({"n": 12}, "fleet[0].demo")
