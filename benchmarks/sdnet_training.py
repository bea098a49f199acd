"""SDNet training throughput and held-out SER by training path (issue #21, item 3).

Paths (all one CPU thread, same initial weights, same data, batch size, Adam, loss (eq. 13)
and shuffling):

- ``bare``: a plain PyTorch loop, NCHW, float32 (the reference);
- ``fp32_unfused``: the plain loop, channels-last, float32 (the product's path until batch
  norm and tanh were fused);
- ``fp32``: ``common.learngene.training.finetune`` (channels-last, float32, batch norm and
  tanh fused by ``common.models.bn_tanh``: the product's path);
- ``bf16``: ``finetune(precision="bf16")`` (channels-last, forward under bfloat16 autocast);
- ``bare_bf16``: the plain loop under bfloat16 autocast, NCHW;
- ``compile`` / ``compile_bf16``: the plain loop on ``torch.compile(model)`` (the first epoch
  includes the compilation and is left out of the rate).

Each path trains ``--epochs`` epochs on ``--samples`` samples of a default-model task
(``--task``, the ``benchmarks/sdnet_map.py`` draws) and is then evaluated (eval-mode BN,
float32) on that task's 1,000 held-out samples. The bf16 paths are left out by default: on a
CPU without bfloat16 arithmetic (this one: AVX-512 without BF16) they run at ~50 samples/s. Prints one JSON object: per path the median
samples/s over the epochs after the first (wall clock and process CPU time: the fairer
measure on a shared machine), the held-out SER and SER / MMSE, and each rate over ``fp32``'s.

    flock /tmp/airfleet-train.lock flock /tmp/airfleet-heavy.lock \\
        .venv/bin/python benchmarks/sdnet_training.py [--paths bare fp32 bf16 ...] [--epochs 6 --samples 8100 --task 146]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.*` when run as a script

from benchmarks.sdnet_map import held_out, map_task, training_set
from common.learngene.training import evaluate_ser, finetune, mse_loss
from common.models.complexity import layer_costs
from common.models.sdnet import SDNet
from common.phy.metrics import baseline_sers

PATHS = ("bare", "fp32_unfused", "fp32", "bf16", "bare_bf16", "compile", "compile_bf16")
DEFAULT_PATHS = ("bare", "fp32_unfused", "fp32", "compile")


def bare_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor, batch_size: int, g: torch.Generator, bf16: bool) -> None:
    """One epoch of the reference loop (optionally under bfloat16 autocast)."""
    model.train()
    perm = torch.randperm(len(X), generator=g)
    for s in range(0, len(X), batch_size):
        idx = perm[s : s + batch_size]
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(X[idx])
        else:
            out = model(X[idx])
        loss = mse_loss(out.float(), Y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def run_path(path: str, init: dict[str, torch.Tensor], train, epochs: int, batch_size: int) -> tuple[SDNet, list[tuple[float, float]]]:
    """Train a fresh SDNet from ``init`` along ``path``; returns it and (wall, cpu) s per epoch."""
    model = SDNet(32, 8, 8)
    model.load_state_dict(init)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times: list[tuple[float, float]] = []
    if path in ("fp32", "bf16"):
        prec = "bf16" if path == "bf16" else "fp32"
        for _ in range(epochs):
            times.append(_timed(lambda: finetune(model, train, epochs=1, batch_size=batch_size, lr=1e-3, generator=g, optimizer=opt, precision=prec)))
        return model, times
    net: torch.nn.Module = torch.compile(model) if path.startswith("compile") else model
    bf16 = path.endswith("bf16")
    X = train.sdnet_input
    if path == "fp32_unfused":
        model.to(memory_format=torch.channels_last)
        X = X.contiguous(memory_format=torch.channels_last)
    for _ in range(epochs):
        times.append(_timed(lambda: bare_epoch(net, opt, X, train.x, batch_size, g, bf16)))
    model.to(memory_format=torch.contiguous_format)
    return model, times


def sgemm_gflops(n: int = 1024, reps: int = 5) -> float:
    """This core's float32 matrix-multiply rate (GFLOP/s, one thread, median of ``reps``
    ``n x n`` products): the practical ceiling a convolution kernel is measured against."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e9


def profile_steps(batch_size: int, steps: int = 5, width: int = 8) -> None:
    """Print the per-op CPU time of ``steps`` Adam steps of SDNet(32, 8, 8) (every conv but the
    last ``width`` channels wide; the paper's 8) at ``batch_size``, channels-last float32 on one
    thread with batch norm and tanh fused (the product's path), after 3 warm-up steps: which
    kernels a faster path has to beat. Then a roofline line: the convolutions' forward and
    backward rates in GFLOP/s (``2 x MACs``; backward = weight and input gradients, the first
    conv's input needs none) beside this core's float32 ``sgemm_gflops``, and each kind of
    op's share of the step."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SDNet(32, 8, 8, widths=[width] * 9).to(memory_format=torch.channels_last)
    model.fuse_bn_tanh = True
    X = torch.randn(batch_size, 1, 65, 16).to(memory_format=torch.channels_last)
    Y = torch.rand(batch_size, 16) * 2 - 1
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = mse_loss(model(X), Y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = time.perf_counter() - t0
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    self_s = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    conv_fwd = [c.flops for c in layer_costs(model, (1, *model.input_shape)) if c.kind == "Conv2d"]
    fwd = batch_size * steps * sum(conv_fwd)
    bwd = batch_size * steps * (2 * sum(conv_fwd) - conv_fwd[0])
    t_fwd, t_bwd = self_s.get("aten::mkldnn_convolution", float("nan")), self_s.get("aten::convolution_backward", float("nan"))
    t_bn = self_s.get("_BNTanh", 0.0) + self_s.get("_BNTanhBackward", 0.0)
    total = sum(self_s.values())
    print(json.dumps({
        "roofline": {"width": width, "batch_size": batch_size, "sgemm_gflops": round(sgemm_gflops(), 1),
                     "conv_fwd_gflops": round(fwd / t_fwd / 1e9, 1), "conv_bwd_gflops": round(bwd / t_bwd / 1e9, 1),
                     "share_conv_fwd": round(t_fwd / total, 3), "share_conv_bwd": round(t_bwd / total, 3),
                     "share_bn_tanh": round(t_bn / total, 3), "samples_per_s_profiled": round(batch_size * steps / wall, 1)},
    }))
    n = batch_size * 8 * 65 * 16
    x = torch.randn(batch_size, 8, 65, 16).to(memory_format=torch.channels_last)
    for name, fn in (("tanh", torch.tanh), ("exp", torch.exp), ("relu", torch.relu)):
        fn(x)
        t0 = time.perf_counter()
        for _ in range(20):
            fn(x)
        print(json.dumps({"elementwise": name, "ns_per_element": round((time.perf_counter() - t0) / 20 / n * 1e9, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS), choices=PATHS)
    ap.add_argument("--task", type=int, default=146, help="default-model task id (146: one SDNet learns, docs/sdnet_fidelity/map.md)")
    ap.add_argument("--samples", type=int, default=8100)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--profile", action="store_true", help="instead: where one thread's time goes in 5 training steps of the fp32 path (torch.profiler, per op), and the convolutions' GFLOP/s against this core's sgemm")
    ap.add_argument("--width", type=int, default=8, help="with --profile: channels of every conv but the last (the paper's 8)")
    a = ap.parse_args()
    if a.profile:
        profile_steps(a.batch_size, width=a.width)
        return
    if a.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is warm-up)")
    torch.set_num_threads(1)
    task = map_task(a.task)
    train, test = training_set(task, a.samples), held_out(task)
    mmse = baseline_sers(test)["ser_mmse"]
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in SDNet(32, 8, 8).state_dict().items()}
    out: dict[str, dict[str, float]] = {}
    for p in a.paths:
        model, times = run_path(p, init, train, a.epochs, a.batch_size)
        s = evaluate_ser(model, test)
        out[p] = {
            "samples_per_s": round(a.samples / statistics.median(w for w, _ in times[1:]), 1),
            "samples_per_cpu_s": round(a.samples / statistics.median(c for _, c in times[1:]), 1),
            "first_epoch_s": round(times[0][0], 1),
            "ser": s,
            "ser_over_mmse": round(s / mmse, 3),
        }
        print(json.dumps({"path": p, **out[p]}), flush=True)
    base = out.get("fp32")
    if base:
        for p in out:
            out[p]["speedup_vs_fp32"] = round(out[p]["samples_per_s"] / base["samples_per_s"], 3)
            out[p]["cpu_speedup_vs_fp32"] = round(out[p]["samples_per_cpu_s"] / base["samples_per_cpu_s"], 3)
    print(json.dumps({
        "benchmark": "sdnet_training",
        "config": {"n_r": 32, "n_t": 8, "n_conv": 8, "task": a.task, "samples": a.samples, "epochs": a.epochs, "batch_size": a.batch_size, "threads": 1, "torch": torch.__version__},
        "ser_mmse": mmse,
        "paths": out,
    }))


if __name__ == "__main__":
    main()
