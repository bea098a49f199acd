"""X-REFINE costs: LRP-epsilon relevance time per 1,000 samples, pruned vs unpruned throughput.

Models (random weights: timing does not depend on training):

- the FC OFDM channel estimator (K = 64 subcarriers, hidden 128-128-128), pruned by
  relevance at input_drop = 0.5, hidden_drop = 0.5;
- SDNet at the fleet's size (n_r = 32, n_t = 8, N_conv = 8, input 65 x 16), pruned by
  relevance to 50 % and 25 % of its FLOPs (``prune_sdnet_to_budget``).

Relevance time: ``relevance_profile`` (forward + LRP backward, aggregation) over
``--samples`` inputs, reported per 1,000 samples (median of ``--repeats``). Throughput:
eval-mode forward passes in batches of ``--batch``, samples per second (median).
Single thread (``torch.set_num_threads(1)``).

    python benchmarks/relevance_time.py [--samples 2000] [--repeats 3] [--batch 1000]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.models.channel_estimator import ChannelEstimator, predict  # noqa: E402
from common.models.complexity import count_parameters  # noqa: E402
from common.models.sdnet import SDNet  # noqa: E402
from common.xrefine.budget import model_flops, prune_sdnet_to_budget  # noqa: E402
from common.xrefine.relevance import relevance_profile  # noqa: E402
from common.xrefine.scores import unit_scores  # noqa: E402
from common.xrefine.thresholds import prune_by_fraction  # noqa: E402


def _median_time(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _throughput(model: torch.nn.Module, x: torch.Tensor, batch: int, repeats: int) -> float:
    model.eval()
    predict(model, x[:batch], batch)  # warm-up
    t = _median_time(lambda: predict(model, x, batch), repeats)
    return x.shape[0] / t


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out: dict[str, object] = {"threads": 1, "samples": args.samples, "batch": args.batch}

    torch.manual_seed(0)
    ce = ChannelEstimator(64, (128, 128, 128)).eval()
    x_ce = torch.randn(args.samples, 128, generator=g)
    t = _median_time(lambda: relevance_profile(ce, x_ce), args.repeats)
    ce_pruned = prune_by_fraction(ce, unit_scores(ce, "relevance", x_ce[:500]), 0.5, 0.5)
    out["channel_estimator"] = {
        "relevance_s_per_1000": 1000 * t / args.samples,
        "flops": model_flops(ce), "params": count_parameters(ce),
        "pruned_flops": model_flops(ce_pruned), "pruned_params": count_parameters(ce_pruned),
        "throughput_full_per_s": _throughput(ce, x_ce, args.batch, args.repeats),
        "throughput_pruned_per_s": _throughput(ce_pruned, x_ce, args.batch, args.repeats),
    }

    torch.manual_seed(1)
    sd = SDNet(32, 8, 8).eval()
    x_sd = torch.randn(args.samples, 1, 65, 16, generator=g)
    t = _median_time(lambda: relevance_profile(sd, x_sd, batch_size=500), args.repeats)
    full_flops = model_flops(sd)
    sd_out: dict[str, object] = {
        "relevance_s_per_1000": 1000 * t / args.samples,
        "flops": full_flops, "params": count_parameters(sd),
        "throughput_full_per_s": _throughput(sd, x_sd, args.batch, args.repeats),
    }
    for frac in (0.5, 0.25):
        t0 = time.perf_counter()
        p = prune_sdnet_to_budget(sd, x_sd, int(frac * full_flops), "relevance", n_samples=500)
        prune_s = time.perf_counter() - t0
        sd_out[f"budget_{frac}"] = {
            "flops": model_flops(p), "params": count_parameters(p), "input_rows": len(p.input_rows),  # type: ignore[union-attr]
            "widths": list(p.widths),  # type: ignore[union-attr]
            "prune_s": prune_s,
            "throughput_per_s": _throughput(p, x_sd, args.batch, args.repeats),
        }
    out["sdnet"] = sd_out
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
