"""Pruning an SDNet to a FLOP budget: forward FLOPs, the tight keep set, the pruned copy.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation" -- "significantly reducing computational complexity".
The fleet gives each device class a FLOP budget instead of the paper's thresholds; this
module implements (X7) (equations numbered in ``common.xrefine``'s docstring): units are
ranked by their score normalised within their layer,

    (X7)  s~_u = s_u / mean_{u' in layer(u)} |s_u'|,

removed lowest first until ``FLOPs <= B``, then re-admitted best first wherever they
still fit. FLOPs follow ``common.models.complexity.count_flops`` (2 x MACs of conv/linear
weights per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator
from common.models.complexity import count_flops
from common.models.sdnet import SDNet
from common.xrefine.scores import UnitScores, unit_scores
from common.xrefine.surgery import prune_sdnet

__all__ = ["model_flops", "budget_keep", "prune_sdnet_to_budget"]


def model_flops(model: nn.Module) -> int:
    """Forward FLOPs per sample (``common.models.complexity.count_flops``) of an estimator or SDNet."""
    if isinstance(model, (SDNet, ChannelEstimator)):
        return count_flops(model, (1, *model.input_shape))
    raise ValueError(f"model_flops supports ChannelEstimator and SDNet, got {type(model).__name__}")


def _sdnet_config_flops(model: SDNet, rows: Sequence[int], widths: Sequence[int]) -> int:
    """Forward FLOPs per sample of ``model``'s architecture with only ``rows`` and ``widths``."""
    probe = SDNet(model.n_r, model.n_t, model.n_conv, list(widths), list(rows), model.col_upsample)
    return count_flops(probe, (1, *probe.input_shape))


def budget_keep(
    model: SDNet, scores: UnitScores, budget_flops: int, min_width: int = 1, min_rows: int = 1
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Which input rows and conv channels to keep so that the SDNet fits ``budget_flops`` (X7).

    Units (input rows; channels of ``convs[0..n_conv]``) are ranked by their score
    divided by the mean absolute score of their layer (so layers of different sizes
    compare). The lowest are removed one by one until the FLOPs are within the budget;
    then removed units are re-admitted, best first, wherever they still fit. The result
    is within the budget and *tight*: no single removed unit can be put back without
    exceeding it.

    Parameters
    ----------
    model : SDNet
    scores : UnitScores
        ``inputs`` aligned with ``model.input_rows``, ``hidden`` with ``model.widths``.
    budget_flops : int
        FLOPs of one forward pass (``count_flops`` convention).
    min_width, min_rows : int, default 1
        Fewest channels per conv layer / input rows kept.

    Returns
    -------
    (keep_rows, keep_channels)
        int64 positions for ``prune_sdnet``: ``[n_rows_kept]`` and one ``[width_kept_l]``
        per conv layer, sorted.

    Raises
    ------
    ValueError
        When even the smallest model (``min_rows`` rows, ``min_width`` channels) exceeds the budget.
    """
    n_rows, widths = len(model.input_rows), list(model.widths)
    if len(scores.inputs) != n_rows or [len(h) for h in scores.hidden] != widths:
        raise ValueError("scores do not match the model's input rows and widths")
    smallest = _sdnet_config_flops(model, list(model.input_rows)[:min_rows], [min(min_width, w) for w in widths])
    if budget_flops < smallest:
        raise ValueError(f"budget_flops={budget_flops} is below the smallest prunable SDNet ({smallest} FLOPs)")

    def norm(v: torch.Tensor) -> torch.Tensor:
        scale = float(v.double().abs().mean())
        return v.double() / scale if scale > 0 else v.double()  # (X7)

    units: list[tuple[float, int, int]] = [(float(v), -1, i) for i, v in enumerate(norm(scores.inputs))]
    for l, h in enumerate(scores.hidden):
        units += [(float(v), l, j) for j, v in enumerate(norm(h))]
    units.sort(key=lambda u: (u[0], u[1], u[2]))
    kept = {(-1, i) for i in range(n_rows)} | {(l, j) for l, w in enumerate(widths) for j in range(w)}

    def config() -> tuple[list[int], list[int]]:
        rows = [model.input_rows[i] for i in range(n_rows) if (-1, i) in kept]
        return rows, [sum((l, j) in kept for j in range(w)) for l, w in enumerate(widths)]

    def flops() -> int:
        rows, ws = config()
        return _sdnet_config_flops(model, rows, ws)

    removed: list[tuple[float, int, int]] = []
    current = flops()
    for score, l, j in units:  # remove the lowest until within the budget
        if current <= budget_flops:
            break
        rows, ws = config()
        if (l < 0 and len(rows) <= min_rows) or (l >= 0 and ws[l] <= min_width):
            continue
        kept.discard((l, j))
        removed.append((score, l, j))
        current = flops()
    for score, l, j in sorted(removed, key=lambda u: -u[0]):  # re-admit the best that still fit
        kept.add((l, j))
        trial = flops()
        if trial <= budget_flops:
            current = trial
        else:
            kept.discard((l, j))
    keep_rows = torch.tensor([i for i in range(n_rows) if (-1, i) in kept])
    keep_ch = [torch.tensor([j for j in range(w) if (l, j) in kept]) for l, w in enumerate(widths)]
    return keep_rows, keep_ch


def _sdnet_inputs(data: Any) -> torch.Tensor:
    """SDNet input images float32 [n, 1, 2 n_r + 1, 2 n_t] of a DetectionBatch, or the tensor itself."""
    x = getattr(data, "sdnet_input", data)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("data must be a DetectionBatch or a float32 [n, 1, 2 n_r + 1, 2 n_t] tensor")
    return x


def prune_sdnet_to_budget(
    model: nn.Module,
    data: Any,
    budget_flops: int,
    method: str = "relevance",
    *,
    seed: int = 0,
    epsilon: float = 1e-3,
    n_samples: int = 512,
    min_width: int = 1,
    min_rows: int = 1,
) -> nn.Module:
    """Prune an SDNet's conv channels and input rows to fit ``budget_flops`` (no retraining).

    Parameters
    ----------
    model : SDNet
        Trained detector (not modified).
    data : DetectionBatch or float32 [n, 1, 2 n_r + 1, 2 n_t]
        Samples the relevance (and the row magnitudes) are computed on; the first
        ``n_samples`` are used.
    budget_flops : int
        FLOPs of one forward pass the result may cost (``count_flops`` convention).
    method : {"relevance", "magnitude", "random"}, default "relevance"
    seed : int, default 0
        Seed of the random criterion.
    epsilon : float, default 1e-3
        LRP stabilizer.
    n_samples : int, default 512
    min_width, min_rows : int, default 1

    Returns
    -------
    SDNet
        ``model`` itself (a copy) when it already fits, otherwise a pruned SDNet with
        ``count_flops <= budget_flops``, tight as ``budget_keep`` describes.
    """
    if not isinstance(model, SDNet):
        raise ValueError(f"prune_sdnet_to_budget expects an SDNet, got {type(model).__name__}")
    if budget_flops < 1:
        raise ValueError(f"budget_flops must be positive, got {budget_flops}")
    if model_flops(model) <= budget_flops:
        return prune_sdnet(model, range(len(model.input_rows)), [range(w) for w in model.widths])
    x = _sdnet_inputs(data)[:n_samples]
    scores = unit_scores(model, method, x, seed, epsilon)
    keep_rows, keep_ch = budget_keep(model, scores, int(budget_flops), min_width, min_rows)
    return prune_sdnet(model, keep_rows, keep_ch)
