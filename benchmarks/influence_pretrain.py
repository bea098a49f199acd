"""The influence study's SDNet pre-training, unfused against ``conv_fast_layout`` (issue #21, item 3).

``studies/influence_paper.py`` pre-trains its SDNet receiver (8 x 4, depth 4, Rayleigh,
6 dB, BCE on the bits) in its own loop: Adam with a cosine decay, mini-batches of 64 drawn
with replacement. Since issue #21 that loop runs inside ``conv_fast_layout``
(channels-last, batch norm and tanh fused by ``common.models.bn_tanh``), as every other
SDNet training does. This script times both layouts from the same weights on the
study's default sizes (1,024 samples, 240 steps), alternating them ``--reps`` times on one
thread, and prints one JSON object: each layout's seconds per repetition (the first
repetition includes Numba's and oneDNN's warm-up), their medians over the later ones, the
speed-up, and the largest weight difference after training (float32 rounding, grown
over 240 steps). The receiver is small enough that per-call overheads dominate, so the
fused path is not expected to pay here as it does at the paper's 32 x 8
(``benchmarks/sdnet_training.py``); the study uses it so that one path trains every SDNet,
and a scenario that raises ``sdnet_n_r`` / ``sdnet_n_t`` gets the faster one.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/influence_pretrain.py [--reps 4]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from common.channels import ChannelTask, sample_channels
from common.influence.detector import sdnet_bce_loss
from common.models.sdnet import SDNet
from common.phy.dataset import make_detection_batch
from common.seeding import torch_generator
from studies.influence_paper import _pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = ChannelTask.make("rayleigh", 8, 4, 0, 1)
    H = sample_channels(task, 256, 1).repeat_interleave(4, 0)  # the study's 256 channels x 4 samples
    batch = make_detection_batch(H, 6.0, generator=torch_generator(0, "influence-pretrain-bench"))
    torch.manual_seed(0)
    base = SDNet(8, 4, 4)
    seconds: dict[str, list[float]] = {"unfused": [], "fast_layout": []}
    weights: dict[str, torch.Tensor] = {}
    for _ in range(a.reps):
        for name in seconds:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            _pretrain(model, sdnet_bce_loss, batch.sdnet_input, batch.bits.float(), steps=240, batch=64, lr=2e-3,
                      gen=torch_generator(0, "pretrain"), fast_layout=name == "fast_layout")
            seconds[name].append(round(time.perf_counter() - t0, 3))
            weights[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    med = {k: statistics.median(v[1:] or v) for k, v in seconds.items()}
    print(json.dumps({
        "seconds": seconds,
        "median_s_after_first": med,
        "speedup": round(med["unfused"] / med["fast_layout"], 3),
        "max_abs_weight_diff": float((weights["unfused"] - weights["fast_layout"]).abs().max()),
    }, indent=1))


if __name__ == "__main__":
    main()
