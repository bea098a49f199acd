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
        (("rounds = 2", "rounds = 2.0"), "rounds", "expected int, got float 2.0"),
        (("availability = 0.5", "availability = true"), "fleet[1].availability", "expected float, got bool True"),
        (("availability = 0.5", "availability = \"x\""), "fleet[1].availability", "expected float, got str 'x'"),
        (("availability = 0.5", "availability = 1.5"), "fleet[1].availability", ": 1.5 is above the maximum 1.0"),
        (("count = 2", "count = 0"), "fleet[0].count", ": 0 is below the minimum 1"),
        (("availability = 0.5", "availability = nan"), "fleet[1].availability", "expected a finite number, got nan"),
        (("tasks = [5, 6, 7]", "tasks = [5, -6]"), "fleet[1].tasks[1]", "-6 is below the minimum 0"),
        (("[channels]", "[channels]\nsnr_db = -inf"), "channels.snr_db", "finite"),
        (("[channels]", "channels = 5\n[server]"), "channels", "expected a table, got int 5"),
        (("count = 2", "count = 2\ncolour = 1\nn_conv = \"x\""), "fleet[0].colour", "unknown key; expected one of ['availability', "),
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


def test_ints_for_floats_become_floats_and_defaults_are_not_shared(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD.replace("availability = 0.5", "availability = 1\nuplink_bps = 1000")))
    assert s.classes[1]["availability"] == 1.0 and type(s.classes[1]["availability"]) is float
    assert type(s.classes[1]["uplink_bps"]) is float and type(s.classes[1]["count"]) is int
    s.classes[0]["crash_rounds"].append(1)
    s.data["channels"]["options"]["x"] = 1
    again = load_scenario(write(tmp_path, GOOD))
    assert again.classes[0]["crash_rounds"] == [] and again.data["channels"]["options"] == {}


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path, "name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML") as e:
        load_scenario(p)
    assert str(e.value).startswith(f"{p}: not valid TOML: ")  # no empty key segment
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")
    p.write_bytes(b"name = \"\xe9t\xe9\"\n")  # Latin-1, not UTF-8
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert str(e.value) == f"{p}: not UTF-8 text (byte 0xe9 at offset 8); a scenario is a TOML file"
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


def test_validate_section_corners() -> None:
    from common.schema import Field, validate_section

    schema = {
        "n": Field((int, str), 1, doc="an int or a name"),
        "level": Field(int, 1, choices=(1, 2)),
        "free": Field(list, []),
        "pair": Field(list, [0.0, 1.0], item=float, min=0.0),
    }
    out = validate_section({"n": "auto", "pair": [1, 2.5]}, schema, "s")
    assert out == {"n": "auto", "level": 1, "free": [], "pair": [1.0, 2.5]} and type(out["pair"][0]) is float
    assert validate_section(None, schema, "s")["n"] == 1
    bad = [
        ({"n": 1.5}, "s.n", "expected int or str, got float 1.5"),
        ({"level": True}, "s.level", "True is not one of [1, 2]"),
        ({"level": 3}, "s.level", "3 is not one of [1, 2]"),
        ({"free": [1, {"x": float("inf")}]}, "s.free[1].x", "expected a finite number, got inf"),
        ({"pair": [0.5, -1]}, "s.pair[1]", "-1 is below the minimum 0.0"),
        ({"pair": [0.5, "x"]}, "s.pair[1]", "expected float, got str 'x'"),
        ({"pair": 0.5}, "s.pair", "expected list, got float 0.5"),
        ({"zz": 1, "level": 7}, "s.zz", "unknown key; expected one of ['free', 'level', 'n', 'pair']"),
        ("text", "s", "expected a table, got str 'text'"),
    ]
    for raw, key, message in bad:
        with pytest.raises(ScenarioError) as e:
            validate_section(raw, schema, "s")  # type: ignore[arg-type]
        assert (e.value.key, e.value.message) == (key, message)
    with pytest.raises(TypeError, match="needs an item type"):
        validate_section({}, {"xs": Field(list, [], min=0)}, "s")
