"""Runs that survive, with Flower and Ray for real (issue #22): a busy machine, Ctrl-C and
resume, a Ray worker killed mid-round. Each waits on events (a file, a line of output, a
process), never on a guessed sleep."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cli.main import main as cli_main
from cli.main import run_fleet
from common.records import WALL_COLUMNS
from common.scenario import load_scenario
from tests.fleet_scenarios import tiny_fleet

pytestmark = [pytest.mark.flower, pytest.mark.slow]

AIRFLEET = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[1]


def _ray_pids() -> set[int]:
    """Processes of Ray (GCS, raylet, workers) on this machine."""
    out = subprocess.run(["pgrep", "-f", r"^ray::|raylet|gcs_server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _wait_for(cond, what: str, proc: subprocess.Popen | None = None, limit_s: float = 300.0) -> None:  # noqa: ANN001
    """Poll ``cond()`` (an event: a file, a process) until true; fail if ``proc`` ends first."""
    end = time.monotonic() + limit_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {limit_s} s")
        time.sleep(0.1)


@pytest.fixture()
def busy_loops() -> Iterator[None]:
    """Two normal-priority CPU-bound processes beside the run (a 2-core machine's worth)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _rows(run_dir: Path) -> list[dict]:
    t = pq.read_table(run_dir / "rounds.parquet")
    return t.select([c for c in t.column_names if c not in WALL_COLUMNS]).to_pylist()


def test_busy_machine_then_interrupt_and_resume_equal_the_uninterrupted_run(tmp_path: Path, busy_loops: None) -> None:
    path = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", rounds=3)
    path.write_text(path.read_text().replace("round_timeout_s = 600.0", "round_timeout_s = 600.0\nregister_timeout_s = 300.0"))
    # 1. beside two busy loops the simulated devices (Ray workers at the driver's niceness)
    #    register and the run completes (with Ray's default niceness 15 it starved)
    whole = run_fleet(load_scenario(path), tmp_path / "whole", quiet=True)
    statuses = {(r["round"], r["device_id"]): r["status"] for r in _rows(whole)}
    assert len(statuses) == 12 and all(s == ("failed" if (rnd, d) in {(1, 2), (1, 3)} else "ok") for (rnd, d), s in statuses.items())

    # 2. Ctrl-C once round 1 is on disk: exit 130 within seconds, Ray gone, resumable
    before = _ray_pids()
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen([*AIRFLEET, "run", str(path), "--run-dir", str(run_dir), "--quiet"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "checkpoint.npz").is_file(), "checkpoint of round 1", proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 60
    assert f"airfleet run --resume {run_dir}" in err
    _wait_for(lambda: not (_ray_pids() - before), "exit of the run's Ray processes", limit_s=30)

    # 3. resume: the tables equal the uninterrupted run's, wall columns aside
    assert cli_main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert _rows(run_dir) == _rows(whole)
    assert pq.read_table(run_dir / "rounds.parquet").schema == pq.read_table(whole / "rounds.parquet").schema


def test_a_killed_ray_worker_fails_its_device_and_the_next_round_gets_a_fresh_one(tmp_path: Path) -> None:
    path = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", rounds=3, crash_b=False)
    path.write_text(path.read_text().replace("train_samples = 100", "train_samples = 2000").replace("epochs = 1\n", "epochs = 4\n"))  # rounds long enough to kill into
    run_dir = tmp_path / "run"
    before = _ray_pids()
    env = {k: v for k, v in os.environ.items() if k != "AIRFLEET_QUIET"}  # its progress lines are the event
    proc = subprocess.Popen([*AIRFLEET, "run", str(path), "--run-dir", str(run_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:  # the event: round 1's messages are out
        if line.startswith("round 1/3"):
            break
    workers = lambda: {p for p in _ray_pids() - before if "ClientAppActor" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")}  # noqa: E731
    _wait_for(lambda: bool(workers()), "a device worker", proc)
    os.kill(min(workers()), signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    rows = _rows(run_dir)
    died = [r for r in rows if r["status"] != "ok"]
    # the device whose job the dead worker held (or was handed next) fails, once ...
    assert len(died) == 1 and re.match(r"Actor\w*Error: ", died[0]["error"]), died
    # ... and every later round runs on a fresh worker (Flower alone reused the dead one)
    assert died[0]["round"] < 3 and all(r["status"] == "ok" for r in rows if r["round"] > died[0]["round"]), rows
