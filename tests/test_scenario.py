"""Scenario validation: every kind of bad input names the file and key, and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.profiles import device_profile, emulated_seconds, is_available
from common.scenario import ScenarioError, load_scenario, parse_scenario
from cli.main import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
name = "t"
seed = 3
rounds = 2
[channels]
source = "rayleigh"
[[fleet]]
name = "a"
count = 2
[[fleet]]
name = "b"
count = 3
n_conv = 6
availability = 0.5
tasks = [5, 6, 7]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_good_scenario_resolves_defaults(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.num_devices == 5
    assert [d.class_name for d in s.devices()] == ["a", "a", "b", "b", "b"]
    assert s.classes[0]["n_conv"] == 8 and s.classes[0]["n_rx"] == 32 and s.classes[1]["snr_db"] == 25.0
    assert s.data["manufacturer"]["n_conv"] == 12
    # the resolved scenario survives the trip to a device
    assert type(s).from_json(s.to_json()).data == s.data


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (("[[fleet]]\nname = \"a\"", "[[fleet]]\nname = \"a\"\ncolour = 1"), "fleet[0].colour", "unknown key"),
        (("count = 2", "count = \"two\""), "fleet[0].count", "expected int"),
        (("count = 2", "count = 0"), "fleet[0].count", "below the minimum"),
        (("availability = 0.5", "availability = 1.5"), "fleet[1].availability", "above the maximum"),
        (("rounds = 2", "rounds = true"), "rounds", "expected int"),
        (("source = \"rayleigh\"", "source = \"nosuch\""), "channels.source", "unknown channel source"),
        (("name = \"a\"\ncount = 2", "count = 2"), "fleet[0].name", "required key is missing"),
        (("name = \"b\"", "name = \"a\""), "fleet[1].name", "duplicate"),
        (("tasks = [5, 6, 7]", "tasks = [5, \"x\"]"), "fleet[1].tasks[1]", "expected int"),
        (("[channels]", "[channels]\nn_pilots = 4"), "channels.n_pilots", "cannot be orthogonal"),
        (("tasks = [5, 6, 7]", "tasks = [5, 6, 7]\n[manufacturer]\nstrategy = \"sideways\""), "manufacturer.strategy", "is not one of"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, edit: tuple[str, str], key: str, words: str) -> None:
    assert edit[0] in GOOD
    p = write(tmp_path, GOOD.replace(edit[0], edit[1], 1))
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert e.value.key == key
    assert words in str(e.value)
    assert str(p) in str(e.value)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(write(tmp_path, "name = \n"))
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="fleet"):
        parse_scenario({"name": "x"})


def test_cli_bad_input_exit_2_and_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, GOOD.replace("count = 2", "count = -1"))
    runs = tmp_path / "runs"
    assert main(["validate", str(bad)]) == 2
    assert main(["run", str(bad), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "fleet[0].count" in err and str(bad) in err
    assert not runs.exists()


def test_shipped_scenarios_validate() -> None:
    files = sorted((ROOT / "scenarios").glob("*.toml"))
    assert any(f.name == "quickstart.toml" for f in files)
    from cli.main import load_any_scenario

    for f in files:
        load_any_scenario(f)


def test_profiles_are_deterministic_and_priced(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    p = device_profile(s, 3)
    assert p.class_name == "b" and p.task.task_id in (5, 6, 7) and p.n_conv == 6
    assert device_profile(s, 3) == p
    with pytest.raises(ValueError, match="outside the fleet"):
        device_profile(s, 5)
    # availability 0.5: seeded, so the same every time, and roughly half over many rounds
    draws = [is_available(s, p, r) for r in range(1, 401)]
    assert draws == [is_available(s, p, r) for r in range(1, 401)]
    assert 150 < sum(draws) < 250
    compute, transfer = emulated_seconds(p, flops=10**10, bytes_down=10**6, bytes_up=10**5)
    assert compute == pytest.approx(1.0)  # 1e10 FLOPs at the default 1e10 FLOP/s
    assert transfer == pytest.approx(8e6 / 1e7 + 8e5 / 1e6)
