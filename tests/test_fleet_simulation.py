"""A real Flower simulation (Ray backend) of a small heterogeneous fleet.

One module-scoped pair of runs with the same seed feeds every test here: Ray starts in
seconds on 2 cores, so the runs are few and each test reads their tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from common.learngene import LearngeneUnit
from common.records import WALL_COLUMNS
from common.scenario import load_scenario
from server.app import message_bytes
from cli.main import main as cli_main
from cli.main import run_fleet
from tests.fleet_scenarios import tiny_fleet

pytestmark = pytest.mark.flower


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("fleet")
    scen = load_scenario(tiny_fleet(tmp / "tiny.toml", tmp / "cache"))
    first = run_fleet(scen, tmp / "run1", quiet=True)
    second = run_fleet(scen, tmp / "run2", quiet=True)
    return first, second


def test_rows_ids_classes_and_failures(runs: tuple[Path, Path]) -> None:
    rows = pq.read_table(runs[0] / "rounds.parquet").to_pylist()
    assert len(rows) == 8
    assert sorted((r["round"], r["device_id"]) for r in rows) == [(k, d) for k in (1, 2) for d in range(4)]
    assert {r["device_id"]: r["device_class"] for r in rows} == {0: "a", 1: "a", 2: "b", 3: "b"}
    for r in rows:
        crashed = r["device_class"] == "b" and r["round"] == 1
        assert r["status"] == ("failed" if crashed else "ok"), r
        if crashed:
            assert "crashes in round 1" in r["error"]
        else:
            assert r["error"] is None
            assert 0.0 <= r["ser"] <= 1.0 and 0.0 <= r["ser_zf"] <= 1.0 and r["flops"] > 0
        assert r["bytes_down"] > 0 and r["bytes_up"] > 0
    # model sizes differ by class (SDNet depth 8 at 8 UE antennas vs depth 4 at 4)
    params = {r["device_class"]: r["n_params"] for r in rows if r["status"] == "ok"}
    assert params["a"] == 21_627 and params["b"] < params["a"]


def test_byte_counts_match_the_messages(runs: tuple[Path, Path]) -> None:
    rows = {(r["round"], r["device_id"]): r for r in pq.read_table(runs[0] / "rounds.parquet").to_pylist()}
    unit = json.loads((runs[0] / "summary.json").read_text())["unit_version"]
    # round 2 of a device that already holds the unit: exactly the instruction record
    sent = RecordDict({"config": ConfigRecord({"round": 2, "device-id": 0, "unit-version": unit})})
    assert rows[(2, 0)]["bytes_down"] == message_bytes(sent)
    assert rows[(2, 0)]["bytes_unit"] == 0
    # the unit travels in the first round a device takes part in: exactly its two records
    saved = LearngeneUnit.load(runs[0] / "collective" / "learngene_unit.bin")
    arrays = ArrayRecord({k: Array(v) for k, v in saved.to_arrays().items()})
    first = rows[(1, 0)]
    assert first["bytes_unit"] == message_bytes(arrays) + message_bytes(ConfigRecord(saved.meta))
    assert first["bytes_unit"] > 2_336 * 4  # 2,336 float32 parameters and their framing
    extra = first["bytes_down"] - rows[(2, 0)]["bytes_down"]
    assert first["bytes_unit"] <= extra <= first["bytes_unit"] + 400
    # a device that crashed in round 1 never confirmed the unit, so it gets it again
    assert rows[(1, 2)]["bytes_unit"] > 0 and rows[(2, 2)]["bytes_unit"] > 0
    setup = pq.read_table(runs[0] / "setup.parquet").to_pylist()
    assert len(setup) == 4 and all(s["bytes_down"] > 200 and s["bytes_up"] > 0 for s in setup)
    # emulated time = compute (FLOPs / FLOP/s) + transfer (bits / link rate) with the class defaults
    r = rows[(2, 0)]
    assert r["emulated_compute_s"] == pytest.approx(r["flops"] / 1e10)
    assert r["emulated_transfer_s"] == pytest.approx(8 * r["bytes_down"] / 1e7 + 8 * r["bytes_up"] / 1e6)


def test_same_seed_same_table(runs: tuple[Path, Path]) -> None:
    a, b = (pq.read_table(p / "rounds.parquet") for p in runs)
    assert a.schema == b.schema
    keep = [c for c in a.column_names if c not in WALL_COLUMNS and c not in ("emulated_compute_s", "emulated_s")]
    assert a.select(keep).to_pylist() == b.select(keep).to_pylist()
    # the emulated compute time derives from FLOPs alone, so it matches too
    assert a.column("emulated_s").to_pylist() == b.column("emulated_s").to_pylist()


def test_outputs_and_report(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = runs[0]
    for name in ("scenario.toml", "scenario.resolved.json", "summary.json", "ser_vs_round.png", "bytes_per_round.png", "round_latency.png", "gradient_significance.png"):
        assert (d / name).is_file(), name
    summary = json.loads((d / "summary.json").read_text())
    assert [c["class"] for c in summary["classes"]] == ["a", "b"] and summary["unit_params"] == 2_336
    (d / "ser_vs_round.png").unlink()
    assert cli_main(["report", str(d)]) == 0
    assert (d / "ser_vs_round.png").is_file()
    assert "SER ZF" in capsys.readouterr().out
