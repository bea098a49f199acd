"""Codec throughput and bits per parameter on a real learngene unit update.

The update is the one the fleet sends: ``scenarios/update_codecs.toml``'s collective model
is trained (or loaded from the artifact cache, as the server does), its unit is expanded
into device 0's and device 1's individual SDNets (class ``fp32``), each runs its real
round-1 device round (local fine-tuning on its own task, eq. 21) and its ``unit_update``
stage codes ``Theta_lg' - Theta_lg`` with fp32, which this script decodes: two real
updates of the 2,336-parameter unit (four 8x8x3x3 conv layers and biases).

Per codec of the scenario's classes (registry name and options, as the classes set them;
plus ``nnc`` where NNCodec is installed): bits per parameter of the real frame (``8 *
len(data) / n``, framing included) and of its payload alone, the codec's ideal bits per
parameter (an estimate, as each codec states it), the max abs reconstruction error and
the relative L2 error, and encode / decode throughput in MB/s of float32 input (``4 n``
bytes per call; best of ``--repeats`` timings of ``--calls`` calls each, on the real
update; and, with ``--tile K``, on the update tiled K times, to show where per-call
overhead stops dominating).

    python benchmarks/codecs.py [--scenario scenarios/update_codecs.toml] [--repeats 5] [--calls 200] [--tile 100] [--codecs qsgd spike_slab]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: NNCodec's DeepCABAC (not in the scenario: an optional extra), when installed
NNC_OPTIONS: dict = {"qp": -44}


def real_updates(scenario_path: Path) -> tuple[list[dict[str, np.ndarray]], dict, dict[str, dict]]:
    """Round-1 unit updates of devices 0 and 1 of ``scenario_path`` (their class must code
    with fp32), where they came from, and the scenario's codecs (name -> options, in class
    order)."""
    from clients.device import run_device_round
    from common.coding.registry import make_codec
    from common.learngene.collective import collective_config, load_or_train_collective, unit_for_strategy
    from common.profiles import device_profile
    from common.runtime import cache_root
    from common.scenario import load_scenario

    s = load_scenario(scenario_path)
    root = cache_root(s.data["server"]["cache_dir"])
    t0 = time.perf_counter()
    res = load_or_train_collective(collective_config(s), root / "collective", channel_cache=root / "channels")
    unit = unit_for_strategy(res, str(s.data["manufacturer"]["strategy"]))
    t_collective = time.perf_counter() - t0
    updates, tasks = [], []
    for dev in (0, 1):
        p = device_profile(s, dev)
        cfg = p.cfg.get("unit_update")
        if cfg is None or cfg["codec"] != "fp32":
            raise SystemExit(f"device {dev} ({p.class_name}) must send its unit update with fp32 to serve as the raw update")
        out = run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {}, {})
        updates.append(make_codec("fp32").decode(out.payloads["unit_update"]))
        tasks.append(p.task.task_id)
    src = {
        "scenario": str(scenario_path),
        "unit_hash": unit.meta["content_hash"][:16],
        "collective_from_cache": bool(res.from_cache),
        "collective_s": round(t_collective, 1),
        "device_tasks": tasks,
        "n_params": int(sum(a.size for a in updates[0].values())),
        "update_abs_mean": float(np.mean([np.abs(a).mean() for u in updates for a in u.values()])),
        "update_abs_max": float(max(np.abs(a).max() for u in updates for a in u.values())),
    }
    codecs = {c["unit_update"]["codec"]: dict(c["unit_update"]["options"]) for c in s.classes if c.get("unit_update")}
    return updates, src, codecs


def _best_rate(fn, nbytes: int, calls: int, repeats: int) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return nbytes / best / 1e6


def measure(name: str, options: dict, updates: list[dict[str, np.ndarray]], calls: int, repeats: int, tile: int) -> dict:
    """Bits, errors and MB/s of one codec on ``updates``."""
    from common.coding.registry import make_codec

    codec = make_codec(name, **options)
    n = sum(a.size for a in updates[0].values())
    bits, payload_bits, ideal, max_err, rel_l2 = [], [], [], [], []
    for u in updates:
        enc = codec.encode(u)  # one round from a zero residual (error feedback starts empty)
        d = codec.decode(enc.data)
        bits.append(8 * len(enc.data) / n)
        payload_bits.append(8 * (len(enc.data) - enc.overhead_bytes) / n)
        ideal.append(enc.ideal_bits / n)
        diff = np.concatenate([(d[k].astype(np.float64) - u[k]).ravel() for k in u])
        ref = np.concatenate([u[k].astype(np.float64).ravel() for k in u])
        max_err.append(float(np.abs(diff).max()))
        rel_l2.append(float(np.linalg.norm(diff) / np.linalg.norm(ref)))
    u = updates[0]
    data = codec.encode(u).data
    row = {
        "codec": name,
        "options": options,
        "bits_per_param": round(float(np.mean(bits)), 4),
        "payload_bits_per_param": round(float(np.mean(payload_bits)), 4),
        "ideal_bits_per_param_estimate": round(float(np.mean(ideal)), 4),
        "frame_bytes": len(data),
        "max_abs_error": float(np.max(max_err)),
        "stated_error_bound": codec.error_bound(u),
        "rel_l2_error": round(float(np.mean(rel_l2)), 5),
        "encode_MBps": round(_best_rate(lambda: codec.encode(u), 4 * n, calls, repeats), 2),
        "decode_MBps": round(_best_rate(lambda: codec.decode(data), 4 * n, calls, repeats), 2),
    }
    if tile > 1:
        big = {k: np.tile(v.ravel(), tile) for k, v in u.items()}
        big_data = codec.encode(big).data
        c = max(1, calls // tile)
        row[f"encode_MBps_tiled_x{tile}"] = round(_best_rate(lambda: codec.encode(big), 4 * n * tile, c, repeats), 2)
        row[f"decode_MBps_tiled_x{tile}"] = round(_best_rate(lambda: codec.decode(big_data), 4 * n * tile, c, repeats), 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "update_codecs.toml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--tile", type=int, default=100, help="also time the update tiled this many times (1: off)")
    ap.add_argument("--codecs", nargs="+", default=None, help="only these of the scenario's codecs (and nnc)")
    args = ap.parse_args()
    from common.coding.registry import available_codecs

    updates, src, codecs = real_updates(args.scenario)
    codecs.setdefault("nnc", NNC_OPTIONS)
    if args.codecs:
        codecs = {n: o for n, o in codecs.items() if n in args.codecs}
    have = available_codecs()
    rows = [measure(n, o, updates, args.calls, args.repeats, args.tile) for n, o in codecs.items() if n in have]
    print(
        json.dumps(
            {
                "update": src,
                "codecs": rows,
                "not_available": [n for n in codecs if n not in have],
                "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
