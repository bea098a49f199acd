"""The one ``device`` setting: cpu, cuda, auto (issue #12, item 5). Tests run on the CPU."""

from __future__ import annotations

import pytest
import torch

from common.runtime import resolve_device


def test_device_setting_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="one of"):
        resolve_device("gpu")


def test_learngene_study_accepts_auto_and_rejects_other_words() -> None:
    from common.schema import ScenarioError, validate_section
    from studies import learngene_paper as study

    assert validate_section({"device": "auto"}, study.SCHEMA, "study")["device"] == "auto"
    with pytest.raises(ScenarioError):
        validate_section({"device": "gpu"}, study.SCHEMA, "study")


def test_server_device_and_fractional_gpus_are_scenario_settings() -> None:
    from common.scenario import ScenarioError, parse_scenario

    base = {"fleet": [{"name": "phone", "count": 1}]}
    sc = parse_scenario({**base, "server": {"gpus_per_device": 0.25, "device": "auto"}})
    assert sc.data["server"]["gpus_per_device"] == 0.25 and sc.data["server"]["device"] == "auto"
    plain = parse_scenario(base)
    assert plain.data["server"]["gpus_per_device"] == 0.0 and plain.data["server"]["device"] == "cpu"  # CPU stays the default
    with pytest.raises(ScenarioError, match="server.device"):
        parse_scenario({**base, "server": {"device": "gpu"}})
    with pytest.raises(ScenarioError, match="gpus_per_device"):
        parse_scenario({**base, "server": {"gpus_per_device": -1}})
