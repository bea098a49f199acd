"""No device is starved: one slow device behind many fast ones, a real simulation.

The server pushes the slow device first (longest work first) and polls only a small
window of the oldest pending replies (``server.app.PULL_WINDOW``, shrunk to 4 here so
most fast replies lie outside it); every device must still be recorded, every round.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import server.app
from cli.main import run_fleet
from common.scenario import load_scenario

pytestmark = pytest.mark.flower

N_FAST = 40


def _scenario(path: Path) -> Path:
    path.write_text(
        f"""
name = "uneven"
seed = 5
rounds = 2
[channels]
source = "gbsm"
[manufacturer]
tasks = 2
samples_per_task = 200
epochs_per_task = 1
batch_size = 100
[server]
round_timeout_s = 600.0
poll_interval_s = 0.02
[[fleet]]
name = "fast"
count = {N_FAST}
workload = "none"
[[fleet]]
name = "slow"
count = 1
n_conv = 8
train_samples = 400
val_samples = 200
epochs = 2
batch_size = 50
tasks = [100]
"""
    )
    return path


def test_one_slow_many_fast_every_device_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.app, "PULL_WINDOW", 4)
    run = run_fleet(load_scenario(_scenario(tmp_path / "uneven.toml")), tmp_path / "run", quiet=True)
    rows = pq.read_table(run / "rounds.parquet").to_pylist()
    for rnd in (1, 2):
        got = {r["device_id"]: r for r in rows if r["round"] == rnd}
        assert sorted(got) == list(range(N_FAST + 1))
        assert {r["status"] for r in got.values()} == {"ok"}, [r.get("error") for r in got.values() if r["status"] != "ok"]
        slow = got[N_FAST]
        assert slow["device_class"] == "slow" and slow["flops"] > 0 and slow["wall_s"] > 0
