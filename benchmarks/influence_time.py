"""Time per target of influence scoring over N training samples: ours vs captum's Arnoldi.

For the SDNet-size model (``SDNet(32, 8, 8)``: the paper's 21,627 parameters, 32 x 8 MIMO) and the receiver-size
model (the compact DeepRx on a 14 x 24 OFDM slot), with random inputs and bits (timing
does not depend on the data): our :class:`common.influence.scores.InfluenceEngine` (vmap
per-sample gradients + Arnoldi IHVP, fitted once, then one target gradient and one
projection per target) against ``captum``'s ``ArnoldiInfluenceFunction`` with the same
Krylov dimension and rank on the same model and data.

Prints one JSON object: per model, ``params``, ``n_train``, ``n_targets``, and for each
implementation the one-off fit time, the per-target scoring time and the amortised time
per target, in seconds (1 CPU thread); ours also reports ``warmup_s``, the one-off
start-up of ``torch.func`` in a fresh process (excluded from ``fit_s``).

    .venv/bin/python benchmarks/influence_time.py [--n-train 256] [--n-targets 8] [--k 20] [--arnoldi 50]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.influence.detector import sdnet_bce_loss  # noqa: E402
from common.influence.gradients import mean_grad, per_sample_grads  # noqa: E402
from common.influence.losses import bce_bits  # noqa: E402
from common.influence.scores import InfluenceEngine  # noqa: E402
from common.models.deeprx import DeepRx  # noqa: E402
from common.models.sdnet import SDNet  # noqa: E402


def _ours(model, loss_fn, X, Y, Xt, Yt, k, n_arnoldi):
    t0 = time.perf_counter()
    per_sample_grads(model, loss_fn, X[:2], Y[:2])  # one-off torch.func start-up, reported apart
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    eng = InfluenceEngine.fit(model, loss_fn, X, Y, k=k, n_steps=n_arnoldi, generator=torch.Generator().manual_seed(0))
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(Xt.shape[0]):
        eng.scores("classical", mean_grad(model, loss_fn, Xt[i : i + 1], Yt[i : i + 1]))
    per = (time.perf_counter() - t0) / Xt.shape[0]
    return {"warmup_s": warm, "fit_s": fit, "per_target_s": per, "amortised_per_target_s": fit / Xt.shape[0] + per}


def _captum(model, loss_fn, X, Y, Xt, Yt, k, n_arnoldi):
    from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction

    with tempfile.TemporaryDirectory() as d:
        ckpt = pathlib.Path(d) / "m.pt"
        torch.save(model.state_dict(), ckpt)
        t0 = time.perf_counter()
        f = ArnoldiInfluenceFunction(model, TensorDataset(X, Y), str(ckpt), loss_fn=loss_fn, batch_size=X.shape[0],
                                     projection_dim=k, arnoldi_dim=n_arnoldi, seed=0)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        f.influence((Xt, Yt))
        per = (time.perf_counter() - t0) / Xt.shape[0]
    return {"fit_s": fit, "per_target_s": per, "amortised_per_target_s": fit / Xt.shape[0] + per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-targets", type=int, default=8)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--arnoldi", type=int, default=50)
    ap.add_argument("--skip-captum", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, t = a.n_train, a.n_targets
    mask = torch.ones(14, 24, dtype=torch.bool)
    mask[[2, 11]] = False

    def deeprx_loss(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce_bits(o, y, mask=mask)

    torch.manual_seed(0)
    models = {
        "sdnet": (SDNet(32, 8, 8).eval(), sdnet_bce_loss, (1, 65, 16), (16,)),
        "deeprx": (DeepRx(9).eval(), deeprx_loss, (9, 14, 24), (2, 14, 24)),
    }
    out: dict[str, object] = {"n_train": n, "n_targets": t, "k": a.k, "arnoldi_steps": a.arnoldi, "threads": 1}
    for name, (model, loss_fn, xs, ys) in models.items():
        X = torch.randn(n + t, *xs, generator=g)
        Y = torch.randint(0, 2, (n + t, *ys), generator=g).float()
        row = {"params": sum(p.numel() for p in model.parameters())}
        row["ours"] = _ours(model, loss_fn, X[:n], Y[:n], X[n:], Y[n:], a.k, a.arnoldi)
        if not a.skip_captum:
            row["captum_arnoldi"] = _captum(model, loss_fn, X[:n], Y[:n], X[n:], Y[n:], a.k, a.arnoldi)
            row["speedup_amortised"] = row["captum_arnoldi"]["amortised_per_target_s"] / row["ours"]["amortised_per_target_s"]
        out[name] = row
    print(json.dumps(out))


if __name__ == "__main__":
    main()
