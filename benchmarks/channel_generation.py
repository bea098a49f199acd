"""Channel generation throughput (samples/s) of the channel sources, 32x8 uplink.

Prints one JSON object. Each figure is the best of ``--repeats`` timed calls after one
untimed warm-up call (which pays Sionna's import and model construction). Narrowband
unless the key says ``wideband``. Run: ``.venv/bin/python benchmarks/channel_generation.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from common.channels import ChannelTask, sample_channels


def samples_per_s(task: ChannelTask, n: int, repeats: int, n_subcarriers: int | None = None) -> float:
    """Best-of-``repeats`` throughput of ``sample_channels(task, n, seed)``, samples/s."""
    sample_channels(task, min(n, 8), seed=10_000, n_subcarriers=n_subcarriers)  # warm-up
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        sample_channels(task, n, seed=r, n_subcarriers=n_subcarriers)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smaller sample counts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    q = 4 if args.quick else 1
    umi = dict(source="umi", n_rx=32, n_tx=8, task_id=0, seed=0)
    res: dict[str, object] = {
        "config": {
            "n_rx": 32,
            "n_tx": 8,
            "carrier_hz": 6e9,
            "torch_threads": args.threads,
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "samples_per_s": {},
    }
    figures: dict[str, float] = res["samples_per_s"]  # type: ignore[assignment]
    figures["rayleigh"] = samples_per_s(ChannelTask.make("rayleigh", 32, 8), 100_000 // q, args.repeats)
    figures["gbsm"] = samples_per_s(ChannelTask.make("gbsm", 32, 8), 20_000 // q, args.repeats)
    figures["sionna_umi_direct"] = samples_per_s(ChannelTask.make(**umi, method="direct"), 256 // q, args.repeats)
    figures["sionna_umi_rays"] = samples_per_s(ChannelTask.make(**umi), 1024 // q, args.repeats)
    figures["sionna_cdl_c"] = samples_per_s(ChannelTask.make("cdl", 32, 8, profile="C"), 1024 // q, args.repeats)
    figures["gbsm_wideband_64sc"] = samples_per_s(ChannelTask.make("gbsm", 32, 8), 1000 // q, args.repeats, 64)
    figures["sionna_umi_rays_wideband_64sc"] = samples_per_s(ChannelTask.make(**umi), 256 // q, args.repeats, 64)
    figures["sionna_umi_direct_wideband_64sc"] = samples_per_s(ChannelTask.make(**umi, method="direct"), 128 // q, args.repeats, 64)
    res["speedup_rays_over_direct"] = figures["sionna_umi_rays"] / figures["sionna_umi_direct"]
    print(json.dumps({k: ({kk: round(vv, 1) for kk, vv in v.items()} if k == "samples_per_s" else v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
