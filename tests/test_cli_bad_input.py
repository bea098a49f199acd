"""Bad scenario input through the real CLI: one stderr line naming file and key, exit 2,
no run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import cli.main
from cli.main import main

FLEET = """
name = "t"
[channels]
source = "rayleigh"
[[fleet]]
name = "a"
count = 2
"""

ONE_CLASS = """
[[fleet]]
name = "a"
count = 1
"""

# (file content, the key the error line must name, a word its message must hold)
CASES: list[tuple[str, bytes | str, str, str]] = [
    ("binary", b"\xff\xfe\x00\x01\x89PNG\r\n", "", "not UTF-8"),
    ("broken-toml", "name = \n", "", "not valid TOML"),
    ("channels-int", "channels = 5\n" + ONE_CLASS, "channels", "expected a table"),
    ("channels-str", 'channels = "gbsm"\n' + ONE_CLASS, "channels", "expected a table"),
    ("gbsm-model-unknown", '[channels]\nsource = "gbsm"\noptions = {model = "qd"}\n' + ONE_CLASS, "channels.options", "model"),
    ("gbsm-38901-los", '[channels]\nsource = "gbsm"\noptions = {model = "38.901", los = true}\n' + ONE_CLASS, "channels.options", "legacy"),
    ("server-list", "server = [1]\n" + ONE_CLASS, "server", "expected a table"),
    ("fleet-int", "fleet = 3\n", "fleet", "array of tables"),
    ("fleet-list-of-int", "fleet = [1]\n", "fleet[0]", "expected a table"),
    ("study-int", "study = 2\n", "study", "expected a table"),
    ("study-kind-list", '[study]\nkind = ["x"]\n', "study.kind", "is not one of"),
    ("stage-not-table", FLEET + "influence = 5\n", "fleet[0].influence", "expected a table"),
    ("channels-snr-nan", FLEET.replace('source = "rayleigh"', 'source = "rayleigh"\nsnr_db = nan'), "channels.snr_db", "finite"),
    ("class-snr-nan", FLEET + "snr_db = nan\n", "fleet[0].snr_db", "finite"),
    ("availability-nan", FLEET + "availability = nan\n", "fleet[0].availability", "finite"),
    ("uplink-inf", FLEET + "uplink_bps = inf\n", "fleet[0].uplink_bps", "finite"),
    ("uplink-minus-inf", FLEET + "uplink_bps = -inf\n", "fleet[0].uplink_bps", "finite"),
    ("server-timeout-nan", FLEET + "[server]\nround_timeout_s = nan\n", "server.round_timeout_s", "finite"),
    ("options-nan", FLEET.replace('source = "rayleigh"', 'source = "rayleigh"\noptions = {k = [1.0, nan]}'), "channels.options.k[1]", "finite"),
    ("stage-float-inf", FLEET + "[fleet.csi_feedback]\nlr = inf\n", "fleet[0].csi_feedback.lr", "finite"),
    ("stage-unknown-key", FLEET + "[fleet.csi_feedback]\nn_antt = 32\n", "fleet[0].csi_feedback.n_antt", "unknown key"),
    ("stage-own-check", FLEET + "[fleet.csi_feedback]\nn_ant = 30\n", "fleet[0].csi_feedback.n_ant", "multiples of 4"),
    ("radio-negative-bandwidth", FLEET + "[radio]\nbandwidth_hz = -20e6\n", "radio.bandwidth_hz", "minimum"),
    ("radio-unknown-scenario", FLEET + "[radio]\nscenario = \"rma\"\n", "radio.scenario", "unknown scenario"),
    ("radio-negative-speed", FLEET + "speed_mps = -1.0\n", "fleet[0].speed_mps", "minimum"),
    ("radio-speed-and-distance", FLEET + "speed_mps = 1.0\ndistance_m = 300.0\n", "fleet[0].speed_mps", "not both"),
    ("radio-unknown-heading", FLEET + "heading = \"north\"\n", "fleet[0].heading", "is not one of"),
    ("radio-impossible-prbs", FLEET + "[radio]\nbandwidth_hz = 20e6\nnumerology = 1\nn_prb = 106\n", "radio.n_prb", "cannot fit"),
    ("study-float-nan", '[study]\nkind = "xrefine"\nlr = nan\n', "study.lr", "finite"),
    ("study-list-inf", '[study]\nkind = "csi_feedback_paper"\nlmbdas = [32.0, inf]\n', "study.lmbdas[1]", "finite"),
    ("study-list-nan", '[study]\nkind = "learngene_paper"\neval_snr_db = [20.0, nan]\n', "study.eval_snr_db[1]", "finite"),
]


@pytest.fixture
def no_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input that got past validation fails the test at once (no Flower simulation, no study)."""

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("bad input got past validation")

    monkeypatch.setattr(cli.main, "run_fleet", must_not_run)
    monkeypatch.setattr(cli.main, "run_study", must_not_run)


@pytest.mark.parametrize(("content", "key", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_input_is_one_line_exit_2_nothing_created(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_runs: None,
    command: str,
    content: bytes | str,
    key: str,
    words: str,
) -> None:
    f = tmp_path / "bad.toml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content, encoding="utf-8")
    runs = tmp_path / "runs"
    argv = ["validate", str(f)] if command == "validate" else ["run", str(f), "--runs-dir", str(runs), "--quiet"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    head = f"error: {f}: {key}: " if key else f"error: {f}: "
    assert lines[0].startswith(head), lines[0]
    assert words in lines[0]
    assert ": : " not in lines[0]  # no empty key segment
    assert "Traceback" not in out + err
    assert not runs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_validate_stops_at_the_first_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(FLEET)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\x00\xff")
    assert main(["validate", str(good), str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{good}: ok (2 devices in 1 classes, 3 rounds)"]
    assert err.count("\n") == 1 and str(bad) in err


def test_devices_reports_bad_input_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.toml"
    f.write_text(FLEET + "count = 3\n")  # a key given twice is not valid TOML
    assert main(["devices", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}: not valid TOML") and err.count("\n") == 1


def test_a_study_module_check_runs_at_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_runs: None
) -> None:
    from common.schema import ScenarioError
    from studies import load_study

    module = load_study("learngene_paper")

    def check(cfg: dict) -> None:
        if cfg["scaling"]:
            raise ScenarioError("study.scaling", "not with this target")
        raise ValueError("the table as a whole is refused")

    monkeypatch.setattr(module, "check", check, raising=False)
    f = tmp_path / "s.toml"
    runs = tmp_path / "runs"
    for scaling, head in (("true", "study.scaling: not with this target"), ("false", "study: the table as a whole is refused")):
        f.write_text(f'[study]\nkind = "learngene_paper"\nscaling = {scaling}\n')
        assert main(["run", str(f), "--runs-dir", str(runs)]) == 2
        assert capsys.readouterr().err == f"error: {f}: {head}\n"
    assert not runs.exists()
