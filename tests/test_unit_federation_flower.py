"""The federated learngene loop in a real Flower simulation (Ray backend): two runs of a
tiny fleet with ``unit_update`` stages and the same seed.

Class ``a`` codes its updates with int8, class ``b`` with top-k (error feedback) and
crashes in round 1, so in round 2 it still holds no unit: it gets the manufacturer's unit
whole and the coded step to the version published after round 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli.main import main as cli_main
from cli.main import run_fleet
from common.records import WALL_COLUMNS
from common.scenario import load_scenario
from tests.fleet_scenarios import tiny_fleet

pytestmark = [pytest.mark.flower, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("federation")
    path = tiny_fleet(tmp / "tiny.toml", tmp / "cache")
    text = path.read_text()
    head, b = text.split('[[fleet]]\nname = "b"')
    text = head + '[fleet.unit_update]\ncodec = "int8"\ndown_codec = "fp16"\n[[fleet]]\nname = "b"' + b
    text += '[fleet.unit_update]\ncodec = "topk"\noptions = { fraction = 0.25 }\ndown_codec = "fp16"\n[manufacturer.federation]\npublish_every_rounds = 1\n'
    path.write_text(text)
    scen = load_scenario(path)
    return run_fleet(scen, tmp / "run1", quiet=True), run_fleet(scen, tmp / "run2", quiet=True)


def test_versions_rows_and_the_device_that_was_behind(runs: tuple[Path, Path]) -> None:
    rows = {(r["round"], r["device_id"]): r for r in pq.read_table(runs[0] / "rounds.parquet").to_pylist()}
    versions = pq.read_table(runs[0] / "unit_versions.parquet").to_pylist()
    v0 = json.loads((runs[0] / "summary.json").read_text())["unit_version"]
    assert [(v["generation"], v["round_published"], v["contributors"]) for v in versions] == [(0, 0, 0), (1, 1, 2), (2, 2, 4)]
    assert versions[0]["version"] == v0 and versions[1]["parent"] == v0 and versions[2]["parent"] == versions[1]["version"]
    v1 = versions[1]["version"]
    for d in range(4):
        assert rows[(1, d)]["unit_version"] == v0
        assert rows[(2, d)]["status"] == "ok" and rows[(2, d)]["unit_version"] == v1  # the version it trained from
        assert rows[(2, d)]["unit_update_down_bits"] == versions[1]["down_bits"]  # one coded step each
    # class b crashed in round 1: in round 2 the unit whole, then the step; class a only the step
    assert rows[(2, 2)]["bytes_unit"] > 0 and rows[(2, 0)]["bytes_unit"] == 0
    # the uplink payload is the coded update: int8 ~ 8 bits a parameter; top-k 25 %: float32
    # values of a quarter (8 bits a parameter) and their range-coded positions
    assert 8 <= rows[(2, 0)]["unit_update_bits_per_param"] < 10 and 8 < rows[(2, 2)]["unit_update_bits_per_param"] < 11
    assert rows[(2, 0)]["payload_bits_unit_update"] == rows[(2, 0)]["unit_update_bits"]


def test_same_seed_same_tables(runs: tuple[Path, Path]) -> None:
    a, b = (pq.read_table(p / "rounds.parquet") for p in runs)
    keep = [c for c in a.column_names if c not in WALL_COLUMNS and c not in ("emulated_compute_s", "emulated_s")]
    assert a.select(keep).to_pylist() == b.select(keep).to_pylist()
    assert pq.read_table(runs[0] / "unit_versions.parquet").to_pylist() == pq.read_table(runs[1] / "unit_versions.parquet").to_pylist()


def test_codec_report(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = runs[0]
    for name in ("codec_rounds.parquet", "codec_summary.parquet", "codec_pareto.parquet", "rate_accuracy.png"):
        assert (d / name).is_file(), name
    summary = pq.read_table(d / "codec_summary.parquet").to_pylist()
    assert [s["codec"] for s in summary] == ["int8", "topk(fraction=0.25)"]
    (d / "rate_accuracy.png").unlink()
    assert cli_main(["report", str(d)]) == 0
    assert (d / "rate_accuracy.png").is_file()
    assert "Pareto front" in capsys.readouterr().out
