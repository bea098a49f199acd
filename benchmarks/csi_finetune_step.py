"""Fine-tuning step time of the CSI compressor per scheme (prints JSON).

One Adam step on a batch of CSI (default 32 x 32, 64 kernels, batch 32): EO (encoder only),
GA (full model), FM (full model with STE-quantized decoder update and the spike-and-slab
rate of eq. 21). Random weights: the step time does not depend on what was learned.

One intra-op thread, as ``finetune`` always runs (same numbers in any process).

Usage: ``python benchmarks/csi_finetune_step.py [--n 32] [--width 64] [--batch 32] [--steps 5] [--device cpu]``
(``--n 64``: the paper's 64 x 64 CSI; ``--device auto`` times CUDA where present).
"""

from __future__ import annotations

import argparse
import json

import torch

from common.csi import finetune, resolve_cfg
from common.models.csi_compressor import CSICompressor, CompressorConfig
from common.runtime import DEVICE_CHOICES, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32, help="antennas = subcarriers")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="torch device of the steps")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    model = CSICompressor(CompressorConfig(n_ant=a.n, n_sc=a.n, width=a.width))
    g = torch.Generator().manual_seed(0)
    H = torch.complex(torch.randn(4 * a.batch, a.n, a.n, generator=g), torch.randn(4 * a.batch, a.n, a.n, generator=g)) / 2**0.5
    out = {"benchmark": "csi_finetune_step", "n_ant": a.n, "n_sc": a.n, "width": a.width, "batch": a.batch, "device": dev.type, "threads": 1,  # finetune() always runs on one intra-op thread
           "decoder_params": model.n_decoder_params(), "encoder_params": sum(p.numel() for _, p in model.encoder_named()),
           "forward_flops_per_sample": model.forward_flops()}
    for scheme in ("eo", "ga", "fm"):
        cfg = resolve_cfg({"scheme": scheme, "n_ant": a.n, "n_sc": a.n, "width": a.width, "steps": 1, "batch": a.batch})
        finetune(model, H, cfg, seed=0, device=dev)  # warm-up
        cfg["steps"] = a.steps
        res = finetune(model, H, cfg, seed=1, device=dev)
        out[scheme] = {"s_per_step": res.seconds / a.steps, "flops_per_step": res.flops // a.steps,
                       "gflops_per_s": res.flops / res.seconds / 1e9}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
