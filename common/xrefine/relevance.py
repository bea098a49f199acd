"""Relevance of a model's structural units over a dataset, and the subcarrier classes.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation" -- "high-resolution relevance scores for both
subcarriers and hidden neurons". Equations numbered as in ``common.xrefine``'s docstring:
this module implements (X4) (unit relevance aggregated over a dataset) and (X5) (the
classes of input units), on the relevance of (X1)-(X3) (``common.xrefine.lrp``).

Units: input units are subcarriers (re + im features) of the FC estimator, or input rows
of SDNet's image; hidden units are FC neurons, or SDNet conv channels (relevance summed
over positions). For a unit ``u`` made of the positions ``P_u`` of a layer's relevance
``R`` and ``n`` samples ``i``,

    (X4)  r_u = (1/n) sum_i sum_{p in P_u} R_{i,p}      (and |.| of the inner sum for ``*_abs``).

With ``s_u = r_u / max_u' |r_u'|`` and thresholds ``0 < nu < rho <= 1``, an input unit is

    (X5)  harmful if s_u <= -nu;  neutral if |s_u| < nu;  reliable if s_u >= rho;  else contributing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator
from common.models.sdnet import SDNet
from common.xrefine.lrp import lrp_epsilon

__all__ = ["SUBCARRIER_CLASSES", "RelevanceProfile", "relevance_profile", "classify_units"]

#: subcarrier (input unit) classes, most to least useful
SUBCARRIER_CLASSES: tuple[str, ...] = ("reliable", "contributing", "neutral", "harmful")


@dataclass
class RelevanceProfile:
    """Dataset-aggregated relevance of a model's structural units (X4).

    Attributes
    ----------
    inputs : float64 [n_input_units]
        Mean signed relevance per sample of every input unit the model reads
        (``ChannelEstimator``: kept subcarriers, re + im; ``SDNet``: kept input rows).
    inputs_abs : float64 [n_input_units]
        Mean absolute relevance per sample.
    hidden : list of float64 [width_l]
        Mean signed relevance of every prunable hidden unit (FC neurons of the 3 hidden
        layers; SDNet channels of ``convs[0..n_conv]``, summed over positions).
    hidden_abs : list of float64 [width_l]
    output_total : float
        Mean of ``sum(R_out)`` per sample (what conservation distributes).
    n_samples : int
    """

    inputs: torch.Tensor
    inputs_abs: torch.Tensor
    hidden: list[torch.Tensor]
    hidden_abs: list[torch.Tensor]
    output_total: float
    n_samples: int


def _unit_relevance(model: nn.Module, rel: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-sample unit relevance, the inner sum of (X4).

    Parameters
    ----------
    model : ChannelEstimator, SDNet or nn.Sequential
    rel : list of float32 tensors
        ``lrp_epsilon``'s ``[R_0, ..., R_L]`` for a batch of ``n`` samples.

    Returns
    -------
    (inputs, hidden)
        ``[n, n_input_units]`` and one ``[n, width_l]`` per hidden layer.
    """
    if isinstance(model, ChannelEstimator):
        K = model.n_subcarriers
        kept = torch.tensor(model.kept_subcarriers)
        r_in = rel[0][:, kept] + rel[0][:, kept + K]  # (X4): re + im of a subcarrier
        return r_in, [rel[1], rel[2], rel[3]]
    if isinstance(model, SDNet):
        rows = torch.tensor(model.input_rows)
        r_in = rel[0].sum(dim=(1, 3))[:, rows]
        hidden = [rel[i].sum(dim=(2, 3)) for i in range(1, model.n_conv + 2)]  # (X4): channel summed over positions
        return r_in, hidden
    r_in = rel[0].flatten(1)
    hidden = [r.flatten(2).sum(-1) if r.dim() > 2 else r for r in rel[1:-1]]
    return r_in, hidden


def relevance_profile(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float = 1e-3,
    output_relevance: str = "abs",
    batch_size: int = 1024,
) -> RelevanceProfile:
    """Aggregate LRP-epsilon relevance of inputs and hidden units over a dataset (X4).

    Parameters
    ----------
    model : ChannelEstimator, SDNet or nn.Sequential
        Run in eval mode (restored afterwards).
    x : float32 [n, ...]
        Dataset inputs (``OfdmBatch.features()``, ``DetectionBatch.sdnet_input``).
    epsilon : float, default 1e-3
    output_relevance : {"abs", "signed"}, default "abs"
    batch_size : int, default 1024

    Returns
    -------
    RelevanceProfile

    Raises
    ------
    ValueError
        If ``x`` holds no sample.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("relevance_profile needs at least one sample")
    was = model.training
    model.eval()
    s_in = s_in_abs = None
    s_h: list[torch.Tensor] = []
    s_h_abs: list[torch.Tensor] = []
    total = 0.0
    try:
        for i in range(0, n, batch_size):
            rel = lrp_epsilon(model, x[i : i + batch_size], epsilon, output_relevance)
            r_in, hidden = _unit_relevance(model, rel)
            total += float(rel[-1].flatten(1).sum(1).double().sum())
            if s_in is None:
                s_in = r_in.double().sum(0)
                s_in_abs = r_in.double().abs().sum(0)
                s_h = [h.double().sum(0) for h in hidden]
                s_h_abs = [h.double().abs().sum(0) for h in hidden]
            else:
                s_in += r_in.double().sum(0)
                s_in_abs += r_in.double().abs().sum(0)
                for j, h in enumerate(hidden):
                    s_h[j] += h.double().sum(0)
                    s_h_abs[j] += h.double().abs().sum(0)
    finally:
        model.train(was)
    assert s_in is not None and s_in_abs is not None
    return RelevanceProfile(s_in / n, s_in_abs / n, [h / n for h in s_h], [h / n for h in s_h_abs], total / n, n)  # (X4): mean over samples


def classify_units(scores: torch.Tensor, neutral: float = 0.05, reliable: float = 0.5) -> list[str]:
    """Class of every input unit from its mean signed relevance (X5).

    With ``s = scores / max|scores|``: ``harmful`` if ``s <= -neutral``, ``neutral`` if
    ``|s| < neutral``, ``reliable`` if ``s >= reliable``, else ``contributing``.

    Parameters
    ----------
    scores : float tensor [n_units]
        ``RelevanceProfile.inputs``.
    neutral, reliable : float, defaults 0.05 and 0.5
        Thresholds on the normalised relevance, ``0 < neutral < reliable <= 1``.

    Returns
    -------
    list of str
        One of ``SUBCARRIER_CLASSES`` per unit.
    """
    if not 0 < neutral < reliable <= 1:
        raise ValueError(f"need 0 < neutral < reliable <= 1, got neutral={neutral}, reliable={reliable}")
    peak = float(scores.abs().max()) if scores.numel() else 0.0
    s = scores.double() / peak if peak > 0 else torch.zeros_like(scores, dtype=torch.float64)
    out = []
    for v in s.tolist():  # (X5)
        if v <= -neutral:
            out.append("harmful")
        elif abs(v) < neutral:
            out.append("neutral")
        elif v >= reliable:
            out.append("reliable")
        else:
            out.append("contributing")
    return out
