"""SDNet training throughput: ``common.learngene.training.finetune`` vs a bare PyTorch loop.

Same model (same initial weights), same data, same batch size, optimiser, loss (eq. 13)
and shuffling; one CPU thread. Prints one JSON object: samples/s of each (median of
``--reps`` alternating repetitions) and their ratio (target >= 0.95), by wall clock and by
process CPU time (the fairer measure on a machine shared with other jobs).

    .venv/bin/python benchmarks/sdnet_training.py [--n-r 32 --n-t 8 --n-conv 8 --samples 2000 --epochs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from common.learngene.training import finetune, mse_loss
from common.channels import ChannelTask, sample_channels
from common.models.sdnet import SDNet
from common.phy.dataset import make_detection_batch


def bare_loop(model: SDNet, X: torch.Tensor, Y: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """The reference loop."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            idx = perm[s : s + batch_size]
            loss = mse_loss(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-r", type=int, default=32)
    ap.add_argument("--n-t", type=int, default=8)
    ap.add_argument("--n-conv", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = ChannelTask.make("gbsm", a.n_r, a.n_t, 0, 0)
    batch = make_detection_batch(sample_channels(task, a.samples, 1), 25.0, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in SDNet(a.n_r, a.n_t, a.n_conv).state_dict().items()}
    n = a.samples * a.epochs
    res: dict[str, list[tuple[float, float]]] = {"finetune": [], "bare": []}
    for r in range(a.reps):
        m = SDNet(a.n_r, a.n_t, a.n_conv)
        m.load_state_dict(init)
        res["finetune"].append(_timed(lambda: finetune(m, batch, epochs=a.epochs, batch_size=a.batch_size, lr=1e-3, generator=torch.Generator().manual_seed(r))))
        m2 = SDNet(a.n_r, a.n_t, a.n_conv)
        m2.load_state_dict(init)
        res["bare"].append(_timed(lambda: bare_loop(m2, batch.sdnet_input, batch.x, a.epochs, a.batch_size, 1e-3, r)))
    rate = {k: [n / w for w, _ in v] for k, v in res.items()}
    cpu_rate = {k: [n / c for _, c in v] for k, v in res.items()}
    o, b = statistics.median(rate["finetune"]), statistics.median(rate["bare"])
    oc, bc = statistics.median(cpu_rate["finetune"]), statistics.median(cpu_rate["bare"])
    print(json.dumps({
        "benchmark": "sdnet_training",
        "config": {"n_r": a.n_r, "n_t": a.n_t, "n_conv": a.n_conv, "samples": a.samples, "epochs": a.epochs, "batch_size": a.batch_size, "threads": 1},
        "finetune_samples_per_s": round(o, 1),
        "bare_loop_samples_per_s": round(b, 1),
        "ratio": round(o / b, 3),
        "finetune_samples_per_cpu_s": round(oc, 1),
        "bare_loop_samples_per_cpu_s": round(bc, 1),
        "ratio_cpu": round(oc / bc, 3),
        "target_ratio": 0.95,
        "reps": a.reps,
        "finetune_all": [round(x, 1) for x in rate["finetune"]],
        "bare_all": [round(x, 1) for x in rate["bare"]],
    }))


if __name__ == "__main__":
    main()
