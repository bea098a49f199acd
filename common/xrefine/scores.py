"""Importance of every prunable unit under one criterion: LRP relevance, weight magnitude, random.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation". The X-REFINE criterion is the dataset-aggregated
LRP-epsilon relevance (X4) of ``common.xrefine.relevance`` (equations numbered in
``common.xrefine``'s docstring): the signed mean for input units, so that harmful
subcarriers go first, and by default the mean absolute relevance for hidden units. The
baselines compared at equal budget are not from the paper: the L1 norm of a unit's
weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets") and uniform random
scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator
from common.models.sdnet import SDNet
from common.seeding import derive_seed
from common.xrefine.relevance import relevance_profile
from common.xrefine.surgery import unit_counts

__all__ = ["METHODS", "UnitScores", "unit_scores"]

#: pruning criteria: LRP relevance (X-REFINE), L1 weight magnitude, uniform random
METHODS: tuple[str, ...] = ("relevance", "magnitude", "random")


@dataclass
class UnitScores:
    """Importance of every structural unit under one criterion (higher = keep).

    Attributes
    ----------
    inputs : float64 [n_input_units]
        Aligned with ``kept_subcarriers`` (estimator) or ``input_rows`` (SDNet).
    hidden : list of float64 [width_l]
        One vector per prunable hidden layer.
    method : str
    """

    inputs: torch.Tensor
    hidden: list[torch.Tensor]
    method: str = "relevance"


def _magnitude_scores(model: nn.Module, x: torch.Tensor | None) -> UnitScores:
    """L1-magnitude scores; SDNet input rows (no weights of their own) need the data ``x``."""
    if isinstance(model, ChannelEstimator):
        W0 = model.layers[0].weight.detach().abs()
        k = len(model.kept_subcarriers)
        inputs = W0[:, :k].sum(0) + W0[:, k:].sum(0)  # L1 of the re and im columns
        hidden = [model.layers[i].weight.detach().abs().sum(1) for i in range(3)]  # L1 of incoming weights
        return UnitScores(inputs.double(), [h.double() for h in hidden], "magnitude")
    if isinstance(model, SDNet):
        # conv channels: L1 norm of the filter (Li et al. 2017). Rows have no weights of
        # their own (convs are shared over rows): the magnitude criterion uses the
        # mean absolute input value of each kept row.
        hidden = [model.convs[i].weight.detach().abs().sum(dim=(1, 2, 3)).double() for i in range(model.n_conv + 1)]
        if x is None:
            raise ValueError("magnitude scores of SDNet input rows need data x")
        rows = torch.tensor(model.input_rows)
        inputs = x.detach().abs().double().mean(dim=(0, 1, 3))[rows]
        return UnitScores(inputs, hidden, "magnitude")
    raise ValueError(f"magnitude scores support ChannelEstimator and SDNet, got {type(model).__name__}")


def unit_scores(
    model: nn.Module,
    method: str,
    x: torch.Tensor | None = None,
    seed: int = 0,
    epsilon: float = 1e-3,
    hidden_score: str = "abs",
) -> UnitScores:
    """Scores of every input unit and hidden unit under ``method``.

    Parameters
    ----------
    model : ChannelEstimator or SDNet
    method : {"relevance", "magnitude", "random"}
        ``relevance``: LRP-epsilon aggregated over ``x`` (X4) (signed mean for inputs, so
        harmful subcarriers go first; ``hidden_score`` for hidden units);
        ``magnitude``: L1 norm of the unit's weights; ``random``: uniform draws.
    x : float32 [n, ...], optional
        Data for relevance (and SDNet row magnitudes).
    seed : int, default 0
        Seed of the random scores.
    epsilon : float, default 1e-3
    hidden_score : {"abs", "signed"}, default "abs"
        Hidden units ranked by mean |R| or mean signed R.

    Returns
    -------
    UnitScores
    """
    if method == "relevance":
        if x is None:
            raise ValueError("relevance scores need data x")
        prof = relevance_profile(model, x, epsilon)
        if hidden_score not in ("abs", "signed"):
            raise ValueError(f"hidden_score must be 'abs' or 'signed', got {hidden_score!r}")
        hidden = prof.hidden_abs if hidden_score == "abs" else prof.hidden
        return UnitScores(prof.inputs, hidden, "relevance")
    if method == "magnitude":
        return _magnitude_scores(model, x)
    if method == "random":
        n_in, widths = unit_counts(model)
        g = torch.Generator().manual_seed(derive_seed(seed, "random-pruning"))
        return UnitScores(torch.rand(n_in, generator=g).double(), [torch.rand(w, generator=g).double() for w in widths], "random")
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
