"""The X-REFINE thresholds: quantile pruning, the grid over both thresholds, the cheapest point.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation" -- joint input filtering and architecture
fine-tuning, "a superior interpretability-performance-complexity trade-off". This module
implements (X6) (equations numbered in ``common.xrefine``'s docstring): a threshold
``q`` on a layer of ``n`` units scored ``s`` removes the ``round(q n)`` lowest,

    (X6)  keep(s, q) = { u : rank_s(u) >= round(q n) }   (stable ranks, ties by position),

with one threshold ``q_in`` for the input units and one ``q_h`` for every hidden layer.
A grid over ``(q_in, q_h)`` prunes by every criterion, retrains and evaluates; the
cheapest point that meets a target BER is the X-REFINE operating point, and the
magnitude and random criteria are compared with it at equal FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from common.models.complexity import count_parameters
from common.xrefine.budget import model_flops
from common.xrefine.scores import UnitScores
from common.xrefine.surgery import prune_model, unit_counts

__all__ = ["keep_lowest_dropped", "prune_by_fraction", "threshold_grid", "cheapest_meeting"]


def keep_lowest_dropped(scores: torch.Tensor, drop_fraction: float, min_keep: int = 1) -> torch.Tensor:
    """Positions kept after dropping the ``round(drop_fraction * n)`` lowest scores (X6).

    Parameters
    ----------
    scores : float tensor [n]
    drop_fraction : float in [0, 1]
    min_keep : int, default 1

    Returns
    -------
    torch.Tensor
        int64 [n_kept], sorted. Ties break by position (stable sort).
    """
    if not 0.0 <= drop_fraction <= 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
    n = scores.numel()
    n_drop = min(int(round(drop_fraction * n)), n - min(min_keep, n))
    order = torch.sort(scores.double(), stable=True).indices
    return order[n_drop:].sort().values  # (X6)


def prune_by_fraction(model: nn.Module, scores: UnitScores, input_drop: float, hidden_drop: float) -> nn.Module:
    """Filter ``input_drop`` of the input units and prune ``hidden_drop`` of every hidden
    layer's units, lowest scores first (the X-REFINE thresholds as relevance quantiles, X6).

    Returns
    -------
    nn.Module
        A pruned copy of the same class (the input model is untouched).
    """
    keep_in = keep_lowest_dropped(scores.inputs, input_drop)
    keep_h = [keep_lowest_dropped(h, hidden_drop) for h in scores.hidden]
    return prune_model(model, keep_in, keep_h)


def threshold_grid(
    model: nn.Module,
    scores: Mapping[str, UnitScores],
    input_drops: Sequence[float],
    hidden_drops: Sequence[float],
    retrain: Callable[[nn.Module], None],
    evaluate: Callable[[nn.Module], dict[str, float]],
    progress: Callable[[str, int, int], None] | None = None,
    cell: Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Prune by every (input threshold, hidden threshold) pair and criterion, retrain, evaluate.

    Parameters
    ----------
    model : ChannelEstimator or SDNet
        The trained full model (not modified).
    scores : mapping method -> UnitScores
        One entry per criterion (e.g. relevance, magnitude, random).
    input_drops, hidden_drops : sequences of float in [0, 1]
        Fractions of input units / of each hidden layer's units removed.
    retrain : callable
        Trains a pruned model in place.
    evaluate : callable
        Returns metrics of a model (e.g. ``{"ber_qpsk": ..., "nmse_db": ...}``).
    progress : callable, optional
        ``progress(label, done, total)``.
    cell : callable, optional
        ``cell(key, compute) -> row`` runs one grid point, ``key`` naming it
        (``"<method>-<input_drop>-<hidden_drop>"``, a plain file name): a study that keeps
        completed points returns the kept row instead of calling ``compute()``. Default:
        ``compute()``. Every point is independent of the others (it prunes ``model``).

    Returns
    -------
    list of dict
        One row per (method, input_drop, hidden_drop): those keys, ``flops``,
        ``params``, ``n_inputs``, ``widths``, the evaluated metrics after retraining,
        and the same metrics before retraining with the suffix ``_pre``. The unpruned
        point (0, 0) is evaluated once per method after the same retraining as the others.
    """
    rows: list[dict[str, Any]] = []
    total = len(scores) * len(input_drops) * len(hidden_drops)
    done = 0
    for method, sc in scores.items():
        for q_in in input_drops:
            for q_h in hidden_drops:

                def compute(sc: UnitScores = sc, method: str = method, q_in: float = float(q_in), q_h: float = float(q_h)) -> dict[str, Any]:
                    pruned = prune_by_fraction(model, sc, q_in, q_h)
                    before = {f"{k}_pre": v for k, v in evaluate(pruned).items()}
                    retrain(pruned)
                    n_in, widths = unit_counts(pruned)
                    row: dict[str, Any] = {
                        "method": method,
                        "input_drop": q_in,
                        "hidden_drop": q_h,
                        "n_inputs": n_in,
                        "widths": ",".join(map(str, widths)),
                        "flops": model_flops(pruned),
                        "params": count_parameters(pruned),
                    }
                    row.update(evaluate(pruned))
                    row.update(before)
                    return row

                rows.append(compute() if cell is None else cell(f"{method}-{float(q_in):g}-{float(q_h):g}", compute))
                done += 1
                if progress is not None:
                    progress("xrefine grid", done, total)
    return rows


def cheapest_meeting(rows: Sequence[Mapping[str, Any]], metric: str, target: float, method: str | None = None) -> dict[str, Any] | None:
    """The row with the fewest FLOPs whose ``metric <= target`` (ties: lower metric).

    Parameters
    ----------
    rows : rows of ``threshold_grid``
    metric : str
        Column to compare (e.g. ``"ber_qpsk"``).
    target : float
    method : str, optional
        Only rows of this criterion.

    Returns
    -------
    dict or None
        None when no row meets the target.
    """
    ok = [r for r in rows if (method is None or r["method"] == method) and r[metric] <= target]
    if not ok:
        return None
    return dict(min(ok, key=lambda r: (r["flops"], r[metric])))
