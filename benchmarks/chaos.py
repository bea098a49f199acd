"""Chaos suite: inject faults into real runs and count what survived (issue #22).

Runs a small two-class fleet (``tests/fleet_scenarios.tiny_fleet``, 3 rounds) once
untouched, then once per fault, and prints one JSON object:

- ``sigint``: Ctrl-C once round 1 is checkpointed; exit code, seconds to stop, seconds
  until the run's last process (Ray's, the watchdog) is gone, those still alive 30 s
  later; then ``airfleet run --resume``: tables equal to the untouched run's?
- ``sigkill_driver``: SIGKILL of the driver once round 1 is checkpointed; the same
  counts (``cli/ray_watchdog.py`` ends what Ray's own fate-sharing leaves), completed
  rounds readable; resume equal to the untouched run?
- ``ray_worker_killed``: SIGKILL of a device worker in round 1; the run completes, rows
  failed, later rounds all ok?
- ``corrupt_cache``: one byte flipped in each cached artifact (channels, collective model,
  CSI backbone): detected (logged) and regenerated, never loaded?
- ``unwritable_run_dir``: runs dir is a file: exit code and the one line.

Totals: faults injected, runs completed, rows lost (rows of a completed round missing
after the fault), resumed tables identical. Usage::

    flock /tmp/airfleet-heavy.lock .venv/bin/python benchmarks/chaos.py
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from cli.ray_watchdog import run_processes, still_running  # noqa: E402
from clients.persistence import STATE_DIR_ENV  # noqa: E402
from common.records import WALL_COLUMNS  # noqa: E402
from tests.fleet_scenarios import tiny_fleet  # noqa: E402

AIRFLEET = [sys.executable, "-m", "cli.main"]


def run_pids(run_dir: Path) -> dict[int, int]:
    """pid -> start time of every live process of the run in ``run_dir``: those whose
    environment names its device state directory (Ray's and the watchdog: they inherit the
    driver's) and their descendants (Ray's agents, whose environment block is partly
    overwritten by their process title). Other runs' and other sessions' processes are
    never counted or touched."""
    return run_processes(f"{STATE_DIR_ENV}={(run_dir / 'device_state').resolve()}")


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[:40]
    except OSError:
        return "?"


def rows(run_dir: Path) -> list[dict]:
    parts = run_dir / "rounds.parquet"
    t = pq.read_table(parts)
    return t.select([c for c in t.column_names if c not in WALL_COLUMNS]).to_pylist()


def wait_for(cond, proc: subprocess.Popen, limit_s: float = 600.0) -> None:  # noqa: ANN001
    end = time.monotonic() + limit_s
    while not cond():
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError("the run ended before the fault could be injected")
        time.sleep(0.1)


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([*AIRFLEET, *args], cwd=ROOT, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def stop_mid_run(path: Path, run_dir: Path, sig: int) -> dict:
    """Start a run, send ``sig`` to the driver once round 1 is checkpointed, resume it."""
    proc = subprocess.Popen([*AIRFLEET, "run", str(path), "--run-dir", str(run_dir), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run_dir / "checkpoint.npz").is_file(), proc)
    at_signal = run_pids(run_dir)  # what runs now, by pid and start time
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.communicate(timeout=300)
    stop_s = time.monotonic() - t0
    end = t0 + 30.0  # what outlives the signal by 30 s is an orphan
    while still_running(at_signal) and time.monotonic() < end:
        time.sleep(0.1)
    gone_s = time.monotonic() - t0
    left = {p: command(p) for p in still_running(at_signal)}
    for p in left:  # clean up for the next fault: this run's processes only
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    parts = sorted((run_dir / "rounds.parts").glob("round-*.parquet"))
    readable = sum(pq.read_table(p).num_rows for p in parts)
    resumed = run(["run", "--resume", str(run_dir), "--quiet"], timeout=900)
    return {
        "exit_code": proc.returncode, "stop_s": round(stop_s, 2), "run_processes_at_signal": len(at_signal),
        "run_processes_gone_after_s": None if left else round(gone_s, 1), "ray_processes_left": len(left),
        "ray_processes_left_names": sorted(set(left.values())), "rows_readable_after_stop": readable, "resume_exit_code": resumed.returncode,
    }


def worker_killed(path: Path, run_dir: Path) -> dict:
    path.write_text(path.read_text().replace("train_samples = 100", "train_samples = 2000").replace("epochs = 1\n", "epochs = 4\n"))
    env = {k: v for k, v in os.environ.items() if k != "AIRFLEET_QUIET"}  # its progress lines are the event
    proc = subprocess.Popen([*AIRFLEET, "run", str(path), "--run-dir", str(run_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("round 1/"):
            break

    def workers() -> set[int]:
        return {p for p in run_pids(run_dir) if "ClientAppActor" in command(p)}

    wait_for(lambda: bool(workers()), proc)
    os.kill(min(workers()), signal.SIGKILL)
    proc.communicate(timeout=900)
    got = rows(run_dir)
    failed = [r for r in got if r["status"] != "ok"]
    first = min((r["round"] for r in failed), default=None)
    later_ok = all(r["status"] == "ok" for r in got if first is not None and r["round"] > first)
    return {"exit_code": proc.returncode, "rows": len(got), "rows_failed": len(failed), "errors": sorted({(r["error"] or "")[:60] for r in failed}), "later_rounds_all_ok": later_ok}


def corrupt_cache(tmp: Path) -> dict:
    """Flip a byte in each cached artifact; count what was detected and regenerated."""
    from common.channels import ChannelTask
    from common.channels.cache import cached_channels
    from common.csi import pretrain as csi_pretrain
    from common.learngene.collective import CollectiveConfig, load_or_train_collective

    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger().addHandler(Grab(level=logging.WARNING))

    def flip(p: Path) -> None:
        b = bytearray(p.read_bytes())
        b[len(b) * 3 // 4] ^= 0x40
        p.write_bytes(bytes(b))

    out = {}
    task = ChannelTask.make("gbsm", 8, 4, task_id=0, seed=2)
    H = cached_channels(task, 64, 1, cache_dir=tmp / "channels")
    (f,) = (tmp / "channels").rglob("*.arrow") or (tmp / "channels").rglob("*")
    flip(f)
    n = len(records)
    H2 = cached_channels(task, 64, 1, cache_dir=tmp / "channels")
    out["channels"] = {"detected": len(records) > n, "regenerated_equal": bool((H == H2).all())}

    cfg = CollectiveConfig(tasks=(task,), n_conv=5, samples_per_task=100, epochs_per_task=1, batch_size=50, unit_layers=2, val_samples=50, seed=3)
    load_or_train_collective(cfg, tmp / "collective")
    (mb,) = (tmp / "collective").rglob("model.bin")
    flip(mb)
    n = len(records)
    again = load_or_train_collective(cfg, tmp / "collective")
    out["collective"] = {"detected": len(records) > n, "loaded_corrupt": again.from_cache}

    ccfg = dict(n_ant=8, n_sc=8, width=4, kernel=3, lmbda=64.0, pretrain_samples=48, pretrain_tasks=1, pretrain_steps=4, pretrain_batch=16, cache_dir=str(tmp / "csi"))
    csi_pretrain.pretrained_compressor(ccfg)
    (npz,) = (tmp / "csi").rglob("csi-*.npz")
    flip(npz)
    csi_pretrain._MEMO.clear()
    n = len(records)
    csi_pretrain.pretrained_compressor(ccfg)
    out["csi_backbone"] = {"detected": len(records) > n}
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="airfleet-chaos-"))
    os.environ["AIRFLEET_CACHE_DIR"] = str(tmp / "cache")
    path = tiny_fleet(tmp / "tiny.toml", tmp / "cache", rounds=3)
    t0 = time.perf_counter()
    ref = run(["run", str(path), "--run-dir", str(tmp / "reference"), "--quiet"], timeout=900)
    reference = rows(tmp / "reference")
    res: dict = {"reference_exit_code": ref.returncode}

    res["sigint"] = stop_mid_run(path, tmp / "sigint", signal.SIGINT)
    res["sigint"]["resumed_identical"] = rows(tmp / "sigint") == reference
    res["sigkill_driver"] = stop_mid_run(path, tmp / "sigkill", signal.SIGKILL)
    res["sigkill_driver"]["resumed_identical"] = rows(tmp / "sigkill") == reference
    res["ray_worker_killed"] = worker_killed(tiny_fleet(tmp / "slow.toml", tmp / "cache", rounds=3, crash_b=False), tmp / "worker")
    res["corrupt_cache"] = corrupt_cache(tmp / "corrupt")
    blocker = tmp / "not-a-dir"
    blocker.write_text("x")
    bad = run(["run", str(path), "--runs-dir", str(blocker), "--quiet"], timeout=120)
    res["unwritable_run_dir"] = {"exit_code": bad.returncode, "message": bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else "", "stderr_lines": len(bad.stderr.strip().splitlines())}

    runs = [res["sigint"], res["sigkill_driver"]]
    res["totals"] = {
        "faults_injected": 2 + 1 + 3 + 1,
        "runs_completed": sum(r["resume_exit_code"] == 0 for r in runs) + (res["ray_worker_killed"]["exit_code"] == 0),
        "rows_lost": sum(len(reference) - len(rows(tmp / n)) for n in ("sigint", "sigkill")),
        "resumed_tables_identical": sum(r["resumed_identical"] for r in runs),
        "corrupt_files_detected": sum(v["detected"] for v in res["corrupt_cache"].values()),
        "ray_processes_left": sum(r["ray_processes_left"] for r in runs),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
