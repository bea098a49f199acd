"""Fleet scaling: real-work rounds at N = 10, 100, 1,000 devices of one small class.

Issue #14's target: a device's round costs the same at N = 1,000 as at N = 100. Each N
runs in a fresh process (``airfleet``'s own ``run_fleet``, Flower's simulation engine on
Ray, one CPU per device) with one device class: SDNet depth 4 on 32x8 gbsm channels
(tasks 100-109), 200 training and 200 validation samples, 1 epoch, batch 50; the
manufacturer trains 2 tasks x 300 samples x 1 epoch (cached after the first run).

Printed per N (rounds 2.. only: round 1 ships the unit and warms the Ray actors up):

- ``device_wall_s_median``: the median of the devices' own ``wall_s`` (their work);
- ``round_wall_s_median``: the median round wall time;
- ``work_bound_s``: the devices' summed ``wall_s`` of a round over the Ray workers, and
  ``round_over_work`` = round wall / that bound (1.0 = the workers never idle);
- ``driver_cpu_share``: the driver process's CPU time (user + system, all its threads:
  ServerApp, SuperLink state, simulation engine) over the wall time of those rounds,
  as a fraction of one core;
- ``peak_rss_mib``: the peak resident memory of the whole process tree (driver, Ray).

Targets (issue #14): device ``wall_s`` at N = 1,000 within 1.1x of N = 100; driver CPU
under 25 % of one core; round wall within 1.2x of the work bound.

    python benchmarks/scaling.py [--sizes 10,100,1000] [--rounds 3]

Prints one JSON object (each N's row also goes to stderr as it finishes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _proc_tree import measure

ROOT = Path(__file__).resolve().parents[1]


def scenario_text(n: int, rounds: int) -> str:
    """The benchmark's scenario: ``n`` devices of one small SDNet class."""
    return f"""name = "scaling"
seed = 1
rounds = {rounds}
[channels]
source = "gbsm"
n_rx = 32
n_tx = 8
[manufacturer]
n_conv = 4
tasks = 2
samples_per_task = 300
epochs_per_task = 1
batch_size = 50
unit_layers = 4
[server]
round_timeout_s = 3600.0
register_timeout_s = 3600.0
cpus_per_device = 1.0
[[fleet]]
name = "small"
count = {n}
n_conv = 4
tasks = [100, 101, 102, 103, 104, 105, 106, 107, 108, 109]
train_samples = 200
val_samples = 200
epochs = 1
batch_size = 50
"""


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_one(n: int, rounds: int) -> dict:
    """One fresh run at ``n`` devices; per-round wall and driver CPU, per-device wall_s."""
    import pyarrow.parquet as pq

    import server.app
    from cli.main import run_fleet
    from common.scenario import load_scenario

    spans: dict[int, tuple[float, float]] = {}  # round -> (wall s, driver CPU s)
    inner = server.app.FleetServer.run_round

    def timed_round(self, rnd: int):  # noqa: ANN001, ANN202 - wraps the real method
        w0, c0 = time.perf_counter(), _cpu_s()
        rows = inner(self, rnd)
        spans[rnd] = (time.perf_counter() - w0, _cpu_s() - c0)
        return rows

    server.app.FleetServer.run_round = timed_round  # type: ignore[method-assign]
    tmp = Path(tempfile.mkdtemp(prefix="airfleet-scaling-"))
    scen = tmp / "scaling.toml"
    scen.write_text(scenario_text(n, rounds))
    run_fleet(load_scenario(scen), tmp / "run", quiet=True)
    t = pq.read_table(tmp / "run" / "rounds.parquet").to_pylist()
    return {
        "n": n,
        "spans": {str(k): v for k, v in sorted(spans.items())},
        "wall_s": {str(k): [r["wall_s"] for r in t if r["round"] == k and r["status"] == "ok"] for k in range(1, rounds + 1)},
        "statuses": sorted({r["status"] for r in t}),
    }


def summarize(res: dict, workers: int, peak_bytes: int) -> dict:
    """The printed row of one N from a child's raw figures."""
    steady = [k for k in res["spans"] if int(k) > 1] or list(res["spans"])
    walls = [w for k in steady for w in res["wall_s"][k]]
    round_wall = statistics.median(res["spans"][k][0] for k in steady)
    bound = statistics.median(sum(res["wall_s"][k]) / workers for k in steady)
    return {
        "n_devices": res["n"],
        "rounds_measured": len(steady),
        "device_wall_s_median": round(statistics.median(walls), 4),
        "round_wall_s_median": round(round_wall, 3),
        "work_bound_s": round(bound, 3),
        "round_over_work": round(round_wall / bound, 3),
        "driver_cpu_share": round(sum(res["spans"][k][1] for k in steady) / sum(res["spans"][k][0] for k in steady), 3),
        "peak_rss_mib": round(peak_bytes / 2**20, 1),
        "statuses": res["statuses"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000", help="comma-separated fleet sizes")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per run (round 1 is not measured)")
    ap.add_argument("--py-spy", metavar="DIR", help="profile each driver with py-spy (collapsed stacks, DIR/profile_<N>.txt)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import logging

        logging.getLogger("flwr").setLevel(logging.ERROR)
        print(json.dumps(run_one(args.one, args.rounds)))
        return
    workers = max(1, int((os.cpu_count() or 1) / 1.0))  # Ray's CPUs over cpus_per_device
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)]
        if args.py_spy:
            out = Path(args.py_spy) / f"profile_{n}.txt"
            cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "50", "-f", "raw", "-o", str(out), "--", *cmd]
        res, peak = measure(cmd, ROOT)
        rows.append(summarize(res, workers, peak))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "scaling", "workers": workers, "targets": {"device_wall_ratio_1000_100": 1.1, "driver_cpu_share": 0.25, "round_over_work": 1.2}, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
