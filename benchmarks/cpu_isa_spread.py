"""Does the CPU's instruction set change a trained figure? (issue #12, item 8)

The same commit and seed gave the ``fleet_stages`` CSI class -0.98 dB on one machine and
-2.21 dB on another. One candidate cause is the CPU: torch, oneDNN and MKL pick their
kernels by the instruction set the CPU has (SSE / AVX2 / AVX-512), each sums in its own
order, and training amplifies last-bit differences. This script emulates three CPUs on
one machine by capping the kernels' instruction set (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``) and runs, in a fresh process with an
empty cache for each: the ``fleet_stages`` CSI class's backbone pre-training and two
rounds of CSI feedback for its two devices (``common.csi.device.device_round``). Next to
it, the same at the native instruction set with other seeds: the seed spread that a
machine difference must be told from.

    python benchmarks/cpu_isa_spread.py [--isa default avx2 avx512] [--seeds 1 2]

Prints one JSON object: per run the backbone's hash, each device-round's NMSE (dB) and
total rate (bits/dim), and the largest difference between instruction sets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISA_ENV = {
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "native": {},
}


def one_run(seed: int) -> dict:
    """In this process: pre-train the backbone and run rounds 1-2 of both CSI devices."""
    sys.path.insert(0, str(ROOT))
    import torch

    from common.csi.config import resolve_cfg
    from common.csi.device import device_round
    from common.csi.pretrain import pretrained_compressor
    from common.profiles import device_profile
    from common.scenario import parse_scenario
    from common.seeding import derive_seed

    torch.set_num_threads(1)
    raw = tomllib.loads((ROOT / "scenarios" / "fleet_stages.toml").read_text())
    raw["seed"] = seed
    sc = parse_scenario(raw, "fleet_stages", check_sources=False)
    profiles = [p for p in (device_profile(sc, d) for d in range(sc.num_devices)) if p.cfg.get("csi_feedback")]
    cfg = resolve_cfg(profiles[0].cfg["csi_feedback"])
    backbone = pretrained_compressor(cfg)
    h = hashlib.blake2b(digest_size=8)
    for v in backbone.state_dict().values():
        h.update(v.detach().numpy().tobytes())
    rows = []
    for p in profiles:  # as clients.device runs the stage: the class's task, the stage seed of the round
        state: dict = {}
        for rnd in (1, 2):
            r = device_round(cfg, p.task, p.device_id, rnd, derive_seed(p.seed, "stage", rnd), state, None)
            state = r.state
            rows.append({"device": p.device_id, "round": rnd, "nmse_db": r.metrics["nmse_db_device"], "bits_per_dim": r.metrics["bits_per_dim_total"]})
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "backbone": h.hexdigest(), "rounds": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", nargs="+", default=["default", "avx2", "avx512"], choices=sorted(ISA_ENV))
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2], help="extra seeds at the native instruction set")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one_run(a.one)))
        return
    seed = int(tomllib.loads((ROOT / "scenarios" / "fleet_stages.toml").read_text())["seed"])
    runs = [(isa, seed) for isa in a.isa] + [("native", s) for s in a.seeds]
    out: dict = {"seed": seed, "runs": []}
    for isa, s in runs:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, **ISA_ENV[isa], "AIRFLEET_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
            p = subprocess.run([sys.executable, __file__, "--one", str(s)], env=env, capture_output=True, text=True, check=False)
        if p.returncode:
            print(f"run {isa} seed {s} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}", file=sys.stderr)
            continue
        r = {"isa": isa, "seed": s, **json.loads(p.stdout.strip().splitlines()[-1])}
        out["runs"].append(r)
        print(json.dumps(r), file=sys.stderr)
    same_seed = [r for r in out["runs"] if r["seed"] == seed]
    if len(same_seed) > 1:
        nm = [[x["nmse_db"] for x in r["rounds"]] for r in same_seed]
        out["isa_max_nmse_diff_db"] = max(max(col) - min(col) for col in zip(*nm))
        out["isa_backbones_identical"] = len({r["backbone"] for r in same_seed}) == 1
    allnm = [[x["nmse_db"] for x in r["rounds"]] for r in out["runs"]]
    if len(allnm) > 1:
        mean = [sum(v) / len(v) for v in allnm]
        out["mean_nmse_db_per_run"] = {f"{r['isa']}/seed {r['seed']}": round(m, 3) for r, m in zip(out["runs"], mean)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
