"""Base-station decode-and-aggregate of one round of coded unit updates, against a no-work round.

The federated learngene loop's base-station half (``server.stages.unit_update``) takes
every on-time device's coded update of the learngene unit, decodes it with the class's
codec, checks it and streams it into the cohort's weighted mean; at the end of the round it
publishes a new version (the step coded with the fp32 downlink codec). This measures, for
N coded updates of the paper's 2,336-parameter unit (four 8x8x3x3 conv layers and their
biases), the wall time of ``ingest`` x N + ``end_round`` and its peak Python heap
(``tracemalloc``, a separate pass: tracing slows the timed one), per codec.

The updates are synthetic (N(0, 1e-3) per weight, a fresh draw per device, coded before
the clock starts): a codec's decode cost depends on the stream's length, which its
options fix for all but the entropy coders (topk, qsgd, spike_slab), whose streams here are
about as long as on a trained unit's update.

The reference is a no-work round of the same N devices (``benchmarks/overhead.py``'s
airfleet system: ``workload = "none"`` devices through the real ServerApp on Flower's
simulation engine, median of rounds 2..R), run in a fresh process, interleaved with the
aggregation measurements (one no-work run, then every codec, per repeat) so that slow
drifts of a shared machine hit both. ``--nowork-n`` picks the fleet sizes whose no-work
round is run; the ratio is reported for each N that has one.

    python benchmarks/aggregation.py [--n 100 1000] [--nowork-n 100 1000] [--rounds 6] [--repeats 2]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CODECS: dict[str, dict] = {
    "fp32": {},
    "fp16": {},
    "int8": {},
    "int4": {},
    "topk": {"fraction": 0.1},
    "qsgd": {"levels": 16},
    "sign": {},
    "spike_slab": {"step": 1e-4},
}


def _unit():  # the paper's unit shapes: 4 x (8x8x3x3 + 8) = 2,336 parameters
    from common.learngene import LearngeneUnit

    g = np.random.default_rng(0)
    t = {}
    for m in range(4):
        t[f"{m}.weight"] = g.normal(0, 0.1, (8, 8, 3, 3)).astype(np.float32)
        t[f"{m}.bias"] = g.normal(0, 0.1, 8).astype(np.float32)
    return LearngeneUnit(t, {"n_r": 32, "n_t": 8})


def _streams(codec: str, n: int, unit) -> list[bytes]:  # noqa: ANN001
    from common.coding.registry import make_codec

    c = make_codec(codec, **CODECS[codec])
    g = np.random.default_rng(1)
    return [c.encode({k: g.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in unit.tensors.items()}).data for _ in range(n)]


def _round(codec: str, streams: list[bytes], unit) -> float:  # noqa: ANN001
    """Wall time (s) of one round's ingest of every stream and the publication."""
    from common.learngene.federation import UPDATE_KEY
    from server.stages.unit_update import UnitUpdateBaseStation

    cfg = {"codec": codec, "options": CODECS[codec], "down_codec": "fp32", "down_options": {}}
    bs = UnitUpdateBaseStation({"c": cfg}, 0, {}, {"c": 200.0})
    bs.begin_round(1, unit)
    devices = [SimpleNamespace(device_id=i, class_name="c") for i in range(len(streams))]
    t0 = time.perf_counter()
    for d, s in zip(devices, streams):
        bs.ingest(d, {UPDATE_KEY: s}, {})
    rows = bs.end_round(1)
    wall = time.perf_counter() - t0
    assert rows["unit_versions"][-1]["contributors"] == len(streams)
    return wall


def _peak_heap(codec: str, streams: list[bytes], unit) -> int:  # noqa: ANN001
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    _round(codec, streams, unit)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def _nowork_round(n: int, rounds: int) -> float:
    """Median wall (s) of rounds 2..R of a no-work fleet of ``n`` (overhead.py's airfleet system)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--one", "airfleet", "--n", str(n), "--rounds", str(rounds)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    per = json.loads(out.stdout.strip().splitlines()[-1])["per_round_s"]
    return statistics.median(per[1:] or per)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000], help="coded updates per round")
    ap.add_argument("--nowork-n", type=int, nargs="*", default=[100, 1000], help="fleet sizes of the no-work reference round")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each no-work run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--codecs", nargs="+", default=list(CODECS))
    args = ap.parse_args()
    unit = _unit()
    streams = {(c, n): _streams(c, n, unit) for c in args.codecs for n in args.n}
    walls: dict[tuple[str, int], list[float]] = {k: [] for k in streams}
    nowork: dict[int, list[float]] = {n: [] for n in args.nowork_n}
    for _ in range(args.repeats):  # interleaved: a no-work run, then every codec, per repeat
        for n in args.nowork_n:
            nowork[n].append(_nowork_round(n, args.rounds))
            print(json.dumps({"nowork_n": n, "round_s": nowork[n][-1]}), file=sys.stderr, flush=True)
        for key, s in streams.items():
            walls[key].append(_round(key[0], s, unit))
    results = []
    for (codec, n), w in walls.items():
        s = streams[(codec, n)]
        row = {
            "codec": codec,
            "options": CODECS[codec],
            "n_updates": n,
            "bits_per_update": 8 * statistics.mean(len(x) for x in s),
            "decode_aggregate_s": statistics.median(w),
            "decode_aggregate_s_all": [round(x, 4) for x in w],
            "per_update_us": 1e6 * statistics.median(w) / n,
            "peak_heap_mib": _peak_heap(codec, s, unit) / 2**20,
            "streams_mib": sum(len(x) for x in s) / 2**20,  # the round's received bytes, held by the caller
        }
        if n in nowork and nowork[n]:
            row["nowork_round_s"] = statistics.median(nowork[n])
            row["fraction_of_nowork_round"] = row["decode_aggregate_s"] / row["nowork_round_s"]
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "aggregation", "unit_params": unit.n_params, "target_fraction": 0.10, "nowork_rounds_s": {str(k): v for k, v in nowork.items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
