"""Time of the link simulation of one round (common.radio): N devices, real payload sizes.

The cell and the fleet are ``scenarios/radio_cost.toml`` (5 MHz, 25 PRBs, half cell-centre
phones, half cell-edge watches, one ring of neighbour cells), scaled to N devices doing
no model work (0 FLOPs). Timed: the whole pricing of a round as the server does it
(``common.radio.round.price_round``: each device's channel realisation per PRB, path
loss at its position, neighbour interference, then the slot loop), and of it the
channel draw alone (``channels_s``). The
payload sizes are those a radio_cost run measured (serialized messages, bytes): the round
that carries the learngene unit (14,554 B down of which 13,389 B unit, 522 B up) and a
round without it (388 B down, 522 B up); ``--run-dir`` takes the medians of another run's
``rounds.parquet`` instead. Each case is timed warm (the Sionna tables built once per
process, timed separately as ``setup_s``), on one torch thread, ``--repeats`` times (median).

Compare with a round's wall time at the same N (e.g. ``benchmarks/scaling.py`` or
``benchmarks/overhead.py``): ``--round-wall 100=2.1 1000=9.5`` adds the ratio.

    python benchmarks/radio_link.py [--n 100 1000] [--repeats 3] [--round-wall N=S ...]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.profiles import device_profile  # noqa: E402
from common.radio.channel import round_channels  # noqa: E402
from common.radio.config import CellConfig  # noqa: E402
from common.radio.round import OUT_OF_COVERAGE, price_round  # noqa: E402
from common.runtime import torch_threads  # noqa: E402
from common.scenario import parse_scenario  # noqa: E402

#: (bytes_down, bytes_unit, bytes_up) measured by scenarios/radio_cost.toml (seed 13)
SIZES = {"unit_round": (14_554, 13_389, 522), "plain_round": (388, 0, 522)}


def _sizes_from_run(run_dir: Path) -> dict[str, tuple[int, int, int]]:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(run_dir / "rounds.parquet").to_pylist() if r["status"] in ("ok", "late")]
    out = {}
    for name, pick in (("unit_round", lambda r: (r["bytes_unit"] or 0) > 0), ("plain_round", lambda r: not r["bytes_unit"])):
        mine = [r for r in rows if pick(r)]
        if mine:
            out[name] = tuple(int(statistics.median(r[k] or 0 for r in mine)) for k in ("bytes_down", "bytes_unit", "bytes_up"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--round-wall", nargs="*", default=[], help="N=SECONDS: a measured round wall time at N devices")
    ap.add_argument("--bandwidth-hz", type=float, default=None, help="override the cell's bandwidth (n_prb: the maximum)")
    ap.add_argument("--numerology", type=int, default=None)
    args = ap.parse_args()
    sizes = _sizes_from_run(args.run_dir) if args.run_dir else SIZES
    walls = {int(k): float(v) for k, v in (w.split("=") for w in args.round_wall)}
    raw = tomllib.loads((ROOT / "scenarios" / "radio_cost.toml").read_text())

    t0 = time.perf_counter()
    from common.radio.transfer import link_tables
    out: dict = {"sizes_bytes": {k: list(v) for k, v in sizes.items()}, "cases": []}
    out["cell"] = {"bandwidth_hz": args.bandwidth_hz or raw["radio"]["bandwidth_hz"], "numerology": raw["radio"]["numerology"] if args.numerology is None else args.numerology}
    for n in args.n:
        for c in raw["fleet"]:
            c["count"] = max(1, n // 2)
            c["workload"] = "none"
        if args.bandwidth_hz is not None:
            raw["radio"]["bandwidth_hz"] = args.bandwidth_hz
        if args.numerology is not None:
            raw["radio"]["numerology"] = args.numerology
        sc = parse_scenario(raw, "radio_cost", check_sources=False)
        cell = CellConfig.from_data(sc.data["radio"])
        if "setup_s" not in out:
            from common.radio.transfer import PDSCH, PUSCH

            for cat in (PUSCH, PDSCH):
                link_tables(cell.n_prb, cell.re_per_prb, cat, float(cell["bler_target"]))
            out["setup_s"] = time.perf_counter() - t0
        profiles = [device_profile(sc, d) for d in range(sc.num_devices)]
        price_round(cell, profiles[:2], [{"status": "ok", "bytes_down": 1, "bytes_up": 1}] * 2, sc.seed, 1)  # warm: path-loss table, grid
        for name, (down, unit, up) in sizes.items():
            rows = [{"status": "ok", "bytes_down": down, "bytes_unit": unit, "bytes_up": up, "flops": 0} for _ in profiles]
            times, ch_times, res = [], [], None
            for rep in range(args.repeats):
                t = time.perf_counter()
                res = price_round(cell, profiles, rows, sc.seed, 2 + rep)
                times.append(time.perf_counter() - t)
                t = time.perf_counter()
                with torch_threads(1):
                    round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 2 + rep)
                ch_times.append(time.perf_counter() - t)
            case = {
                "n": sc.num_devices,
                "round": name,
                "link_sim_s": statistics.median(times),
                "link_sim_s_all": times,
                "channels_s": statistics.median(ch_times),
                "simulated_slots": round(max(r["emulated_s"] for r in res) / cell.slot_s),
                "emulated_round_s": max(r["emulated_s"] for r in res),
                "out_of_coverage": sum(r[OUT_OF_COVERAGE] for r in res),
            }
            if sc.num_devices in walls:
                case["round_wall_s"] = walls[sc.num_devices]
                case["fraction_of_round_wall"] = case["link_sim_s"] / walls[sc.num_devices]
            out["cases"].append(case)
            print(json.dumps(case), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
