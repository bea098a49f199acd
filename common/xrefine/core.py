"""X-REFINE: LRP-epsilon relevance, input filtering and structured pruning (Gizzini & Medjahdi).

Relevance
---------
A network is read as a chain of *stages* ``a_l = act_l(z_l)``, ``z_l = f_l(a_{l-1})`` with
``f_l`` affine (Linear, or Conv + BatchNorm in eval mode, folded) and ``act_l`` an
element-wise activation (ReLU, tanh) through which relevance passes unchanged. The
LRP-epsilon rule with sign stabilization redistributes the relevance ``R_l`` of the
stage outputs onto its inputs (Bach et al. 2015; Montavon et al. 2019):

    R_{l-1,j} = a_{l-1,j} * sum_k w_jk R_{l,k} / (z_{l,k} + eps * sign(z_{l,k})),  sign(0) = +1

implemented for any affine ``f_l`` as ``a * grad_a( f_l(a) . s )`` with
``s = R_l / (z_l + eps sign z_l)`` held constant (the gradient of ``f_l`` is its weight
matrix). Per layer, ``sum_j R_{l-1,j} = sum_k R_{l,k} (z_k - b_k) / (z_k + eps sign z_k)``:
relevance is conserved up to what the bias and the stabilizer absorb.

*Decomposition over all outputs of a regression network*: each output ``o`` starts its
own decomposition with ``R = y_o`` on that output; these are sign-aligned
(multiplied by ``sign(y_o)``, so that every output contributes what it *explains* with
a positive orientation) and summed. Because the rule is linear in the upper relevance
for a fixed forward pass, this equals one backward pass started from ``R_out = |y|``
(``output_relevance="abs"``, the default); ``"signed"`` starts from ``R_out = y`` (what
captum's LRP gives summed over targets). Scores are aggregated over a dataset as means
per sample.

X-REFINE
--------
Input units are subcarriers (re + im features) of the FC estimator, or input rows of
SDNet's image; hidden units are FC neurons, or SDNet conv channels (relevance summed
over positions). Units are classed ``reliable / contributing / neutral / harmful`` by
their normalised mean relevance; the least relevant inputs are filtered and the least
relevant hidden units pruned (a structural copy of the model, still the same class),
then the model is retrained. A grid over both thresholds finds the cheapest model that
meets a target BER; magnitude (L1 weight norm) and random scores are the baselines at
equal budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from common.stage import DeviceContext, StageResult
from common.models.channel_estimator import ChannelEstimator
from common.models.complexity import count_flops, count_parameters
from common.models.sdnet import SDNet
from common.schema import Field, validate_section
from common.seeding import derive_seed, torch_generator

__all__ = [
    "METHODS",
    "SUBCARRIER_CLASSES",
    "STAGE_SCHEMA",
    "LrpStage",
    "RelevanceProfile",
    "UnitScores",
    "budget_keep",
    "cheapest_meeting",
    "classify_units",
    "keep_lowest_dropped",
    "lrp_epsilon",
    "lrp_stages",
    "model_flops",
    "prune_by_fraction",
    "prune_estimator",
    "prune_model",
    "prune_sdnet",
    "prune_sdnet_to_budget",
    "relevance_profile",
    "run_stage",
    "threshold_grid",
    "unit_scores",
]

#: pruning criteria: LRP relevance (X-REFINE), L1 weight magnitude, uniform random
METHODS: tuple[str, ...] = ("relevance", "magnitude", "random")
#: subcarrier (input unit) classes, most to least useful
SUBCARRIER_CLASSES: tuple[str, ...] = ("reliable", "contributing", "neutral", "harmful")


# ============================================================================ LRP-epsilon


@dataclass(frozen=True)
class LrpStage:
    """One affine map followed by an element-wise activation.

    Attributes
    ----------
    affine : callable
        ``a_{l-1} -> z_l``; must be affine in its input (Linear, Conv, eval-mode BN, slicing).
    activation : callable or None
        ``z_l -> a_l``, element-wise (relevance passes through it unchanged); None = identity.
    """

    affine: Callable[[torch.Tensor], torch.Tensor]
    activation: Callable[[torch.Tensor], torch.Tensor] | None


def _sequential_stages(model: nn.Sequential) -> list[LrpStage]:
    stages: list[LrpStage] = []
    mods = list(model)
    i = 0
    while i < len(mods):
        m = mods[i]
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten)):
            raise ValueError(f"LRP over nn.Sequential supports Linear/Conv/Flatten followed by ReLU/Tanh, got {m!r}")
        act = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], (nn.ReLU, nn.Tanh, nn.Identity)) else None
        stages.append(LrpStage(m, act))
        i += 2 if act is not None else 1
    return stages


def lrp_stages(model: nn.Module) -> list[LrpStage]:
    """The LRP stages of a supported model (eval mode is the caller's business).

    Supported: ``ChannelEstimator`` (4 stages: 3 ReLU layers, linear output), ``SDNet``
    (``n_conv + 2`` conv+BN+tanh stages, then fc+tanh; the first stage includes the
    input row selection and column upsampling), and ``nn.Sequential`` of Linear/Conv
    layers each optionally followed by ReLU / Tanh.

    Returns
    -------
    list of LrpStage
    """
    if isinstance(model, ChannelEstimator):
        L = model.layers
        return [
            LrpStage(lambda a: L[0](model.select_inputs(a)), torch.relu),
            LrpStage(L[1], torch.relu),
            LrpStage(L[2], torch.relu),
            LrpStage(L[3], None),
        ]
    if isinstance(model, SDNet):

        def first(a: torch.Tensor) -> torch.Tensor:
            if not model._all_rows:
                a = a.index_select(2, model._rows)
            if model.col_upsample > 1:
                a = a.repeat_interleave(model.col_upsample, dim=3)
            return model.bns[0](model.convs[0](a))

        stages = [LrpStage(first, torch.tanh)]
        for conv, bn in zip(list(model.convs)[1:], list(model.bns)[1:]):
            stages.append(LrpStage(lambda a, c=conv, b=bn: b(c(a)), torch.tanh))
        stages.append(LrpStage(lambda a: model.fc(a.flatten(1)), torch.tanh))
        return stages
    if isinstance(model, nn.Sequential):
        return _sequential_stages(model)
    raise ValueError(f"no LRP stages known for {type(model).__name__}; expected ChannelEstimator, SDNet or nn.Sequential")


def _stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))  # sign(0) = +1
    return z + epsilon * sign


def lrp_epsilon(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float = 1e-3,
    output_relevance: str | torch.Tensor = "abs",
) -> list[torch.Tensor]:
    """LRP-epsilon with sign stabilization, for all outputs at once.

    Parameters
    ----------
    model : nn.Module
        A model ``lrp_stages`` knows; evaluated as it is (put SDNet in eval mode).
    x : float32 tensor [n, ...]
        Model input.
    epsilon : float, default 1e-3
        Stabilizer ``eps`` of the denominator ``z + eps sign(z)`` (> 0).
    output_relevance : {"abs", "signed"} or tensor, default "abs"
        Relevance placed on the outputs: ``|y|`` (sign-aligned decomposition of every
        output), ``y``, or an explicit tensor shaped like the output (e.g. a one-hot
        times ``y`` for a single output).

    Returns
    -------
    list of torch.Tensor
        ``[R_0, R_1, ..., R_L]``: relevance of the input (shape of ``x``), of every
        stage's activations, and of the output (``R_L``); float32.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    stages = lrp_stages(model)
    acts = [x.detach().float()]
    with torch.no_grad():
        for st in stages:
            z = st.affine(acts[-1])
            acts.append(st.activation(z) if st.activation is not None else z)
    y = acts[-1]
    if isinstance(output_relevance, torch.Tensor):
        if output_relevance.shape != y.shape:
            raise ValueError(f"output_relevance shape {tuple(output_relevance.shape)} != output shape {tuple(y.shape)}")
        R = output_relevance.detach().float()
    elif output_relevance == "abs":
        R = y.abs()
    elif output_relevance == "signed":
        R = y.clone()
    else:
        raise ValueError(f"output_relevance must be 'abs', 'signed' or a tensor, got {output_relevance!r}")
    rel = [R]
    for l in range(len(stages) - 1, -1, -1):
        a = acts[l].detach().requires_grad_(True)
        with torch.enable_grad():
            z = stages[l].affine(a)
            s = (R / _stabilize(z.detach(), epsilon)).detach()
            (c,) = torch.autograd.grad((z * s).sum(), a)
        R = (a.detach() * c).detach()  # eq. LRP-eps: R_j = a_j sum_k w_jk R_k / (z_k + eps sign z_k)
        rel.insert(0, R)
    return rel


# ============================================================================ aggregation


@dataclass
class RelevanceProfile:
    """Dataset-aggregated relevance of a model's structural units.

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
    """Per-sample unit relevance: inputs ``[n, n_in_units]`` and hidden ``[n, width_l]`` per layer."""
    if isinstance(model, ChannelEstimator):
        K = model.n_subcarriers
        kept = torch.tensor(model.kept_subcarriers)
        r_in = rel[0][:, kept] + rel[0][:, kept + K]
        return r_in, [rel[1], rel[2], rel[3]]
    if isinstance(model, SDNet):
        rows = torch.tensor(model.input_rows)
        r_in = rel[0].sum(dim=(1, 3))[:, rows]
        hidden = [rel[i].sum(dim=(2, 3)) for i in range(1, model.n_conv + 2)]
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
    """Aggregate LRP-epsilon relevance of inputs and hidden units over a dataset.

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
    return RelevanceProfile(s_in / n, s_in_abs / n, [h / n for h in s_h], [h / n for h in s_h_abs], total / n, n)


def classify_units(scores: torch.Tensor, neutral: float = 0.05, reliable: float = 0.5) -> list[str]:
    """Class of every input unit from its mean signed relevance.

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
    for v in s.tolist():
        if v <= -neutral:
            out.append("harmful")
        elif abs(v) < neutral:
            out.append("neutral")
        elif v >= reliable:
            out.append("reliable")
        else:
            out.append("contributing")
    return out


# ============================================================================ scores


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


def _widths(model: nn.Module) -> tuple[int, list[int]]:
    if isinstance(model, ChannelEstimator):
        return len(model.kept_subcarriers), list(model.hidden)
    if isinstance(model, SDNet):
        return len(model.input_rows), list(model.widths)
    raise ValueError(f"pruning supports ChannelEstimator and SDNet, got {type(model).__name__}")


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
        ``relevance``: LRP-epsilon aggregated over ``x`` (signed mean for inputs, so
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
        n_in, widths = _widths(model)
        g = torch.Generator().manual_seed(derive_seed(seed, "random-pruning"))
        return UnitScores(torch.rand(n_in, generator=g).double(), [torch.rand(w, generator=g).double() for w in widths], "random")
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


# ============================================================================ structural pruning


def prune_estimator(model: ChannelEstimator, keep_inputs: Sequence[int], keep_hidden: Sequence[Sequence[int]]) -> ChannelEstimator:
    """A smaller ``ChannelEstimator`` holding the kept units' weights.

    Parameters
    ----------
    model : ChannelEstimator
    keep_inputs : sequence of int
        Positions (into ``model.kept_subcarriers``) of the input subcarriers to keep.
    keep_hidden : 3 sequences of int
        Positions of the neurons to keep in each hidden layer.

    Returns
    -------
    ChannelEstimator
        Same ``n_subcarriers``; ``kept_subcarriers`` and ``hidden`` reduced.
    """
    if len(keep_hidden) != 3:
        raise ValueError(f"keep_hidden must give 3 layers, got {len(keep_hidden)}")
    k_in = _check_keep(keep_inputs, len(model.kept_subcarriers), "keep_inputs")
    keeps = [_check_keep(h, w, f"keep_hidden[{i}]") for i, (h, w) in enumerate(zip(keep_hidden, model.hidden))]
    kept_sc = [model.kept_subcarriers[i] for i in k_in.tolist()]
    new = ChannelEstimator(model.n_subcarriers, [len(k) for k in keeps], kept_sc)
    n_old = len(model.kept_subcarriers)
    cols = torch.cat([k_in, k_in + n_old])
    prev = cols
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            rows = keeps[i] if i < 3 else torch.arange(layer.out_features)
            new.layers[i].weight.copy_(layer.weight[rows][:, prev])
            new.layers[i].bias.copy_(layer.bias[rows])
            prev = rows
    return new.train(model.training)


def prune_sdnet(model: SDNet, keep_rows: Sequence[int], keep_channels: Sequence[Sequence[int]]) -> SDNet:
    """A smaller ``SDNet`` holding the kept input rows and conv channels.

    Parameters
    ----------
    model : SDNet
    keep_rows : sequence of int
        Positions (into ``model.input_rows``) of the input rows to keep.
    keep_channels : ``n_conv + 1`` sequences of int
        Output channels to keep in ``convs[0..n_conv]`` (the last conv has one channel).

    Returns
    -------
    SDNet
        Same ``n_r, n_t, n_conv, col_upsample``; weights and BN statistics sliced. The
        convs now see the kept rows as neighbours, so retraining is expected.
    """
    if len(keep_channels) != model.n_conv + 1:
        raise ValueError(f"keep_channels must give {model.n_conv + 1} layers, got {len(keep_channels)}")
    r = _check_keep(keep_rows, len(model.input_rows), "keep_rows")
    chans = [_check_keep(c, w, f"keep_channels[{i}]") for i, (c, w) in enumerate(zip(keep_channels, model.widths))]
    rows = [model.input_rows[i] for i in r.tolist()]
    new = SDNet(model.n_r, model.n_t, model.n_conv, [len(c) for c in chans], rows, model.col_upsample)
    outs = [*chans, torch.tensor([0])]
    prev = torch.tensor([0])
    cols = 2 * model.n_t * model.col_upsample
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(model.convs, model.bns)):
            o = outs[i]
            new.convs[i].weight.copy_(conv.weight[o][:, prev])
            new.convs[i].bias.copy_(conv.bias[o])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new.bns[i], name).copy_(getattr(bn, name)[o])
            new.bns[i].num_batches_tracked.copy_(bn.num_batches_tracked)
            prev = o
        fc_cols = (r[:, None] * cols + torch.arange(cols)[None, :]).reshape(-1)  # flatten of [1, rows, cols]
        new.fc.weight.copy_(model.fc.weight[:, fc_cols])
        new.fc.bias.copy_(model.fc.bias)
    return new.train(model.training)


def _check_keep(keep: Sequence[int] | torch.Tensor, n: int, what: str) -> torch.Tensor:
    k = torch.as_tensor(list(keep) if not isinstance(keep, torch.Tensor) else keep, dtype=torch.long).reshape(-1)
    if k.numel() == 0 or k.unique().numel() != k.numel() or int(k.min()) < 0 or int(k.max()) >= n:
        raise ValueError(f"{what} must be non-empty unique positions in [0, {n - 1}], got {k.tolist()}")
    return k.sort().values


def prune_model(model: nn.Module, keep_inputs: Sequence[int], keep_hidden: Sequence[Sequence[int]]) -> nn.Module:
    """``prune_estimator`` or ``prune_sdnet`` by the model's class."""
    if isinstance(model, ChannelEstimator):
        return prune_estimator(model, keep_inputs, keep_hidden)
    if isinstance(model, SDNet):
        return prune_sdnet(model, keep_inputs, keep_hidden)
    raise ValueError(f"pruning supports ChannelEstimator and SDNet, got {type(model).__name__}")


def keep_lowest_dropped(scores: torch.Tensor, drop_fraction: float, min_keep: int = 1) -> torch.Tensor:
    """Positions kept after dropping the ``round(drop_fraction * n)`` lowest scores.

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
    return order[n_drop:].sort().values


def prune_by_fraction(model: nn.Module, scores: UnitScores, input_drop: float, hidden_drop: float) -> nn.Module:
    """Filter ``input_drop`` of the input units and prune ``hidden_drop`` of every hidden
    layer's units, lowest scores first (the X-REFINE thresholds as relevance quantiles).

    Returns
    -------
    nn.Module
        A pruned copy of the same class (the input model is untouched).
    """
    keep_in = keep_lowest_dropped(scores.inputs, input_drop)
    keep_h = [keep_lowest_dropped(h, hidden_drop) for h in scores.hidden]
    return prune_model(model, keep_in, keep_h)


def model_flops(model: nn.Module) -> int:
    """Forward FLOPs per sample (``common.models.complexity.count_flops``) of an estimator or SDNet."""
    if isinstance(model, (SDNet, ChannelEstimator)):
        return count_flops(model, (1, *model.input_shape))
    raise ValueError(f"model_flops supports ChannelEstimator and SDNet, got {type(model).__name__}")


# ============================================================================ threshold grid


def threshold_grid(
    model: nn.Module,
    scores: Mapping[str, UnitScores],
    input_drops: Sequence[float],
    hidden_drops: Sequence[float],
    retrain: Callable[[nn.Module], None],
    evaluate: Callable[[nn.Module], dict[str, float]],
    progress: Callable[[str, int, int], None] | None = None,
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

    Returns
    -------
    list of dict
        One row per (method, input_drop, hidden_drop): those keys, ``flops``,
        ``params``, ``n_inputs``, the evaluated metrics after retraining, and the same
        metrics before retraining with the suffix ``_pre``. The unpruned point (0, 0)
        is evaluated once per method after the same retraining as the others.
    """
    rows: list[dict[str, Any]] = []
    total = len(scores) * len(input_drops) * len(hidden_drops)
    done = 0
    for method, sc in scores.items():
        for q_in in input_drops:
            for q_h in hidden_drops:
                pruned = prune_by_fraction(model, sc, float(q_in), float(q_h))
                before = {f"{k}_pre": v for k, v in evaluate(pruned).items()}
                retrain(pruned)
                n_in, widths = _widths(pruned)
                row: dict[str, Any] = {
                    "method": method,
                    "input_drop": float(q_in),
                    "hidden_drop": float(q_h),
                    "n_inputs": n_in,
                    "widths": ",".join(map(str, widths)),
                    "flops": model_flops(pruned),
                    "params": count_parameters(pruned),
                }
                row.update(evaluate(pruned))
                row.update(before)
                rows.append(row)
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


# ============================================================================ SDNet to a FLOP budget


def _sdnet_config_flops(model: SDNet, rows: Sequence[int], widths: Sequence[int]) -> int:
    probe = SDNet(model.n_r, model.n_t, model.n_conv, list(widths), list(rows), model.col_upsample)
    return count_flops(probe, (1, *probe.input_shape))


def budget_keep(
    model: SDNet, scores: UnitScores, budget_flops: int, min_width: int = 1, min_rows: int = 1
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Which input rows and conv channels to keep so that the SDNet fits ``budget_flops``.

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
        Positions for ``prune_sdnet``.

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
        return v.double() / scale if scale > 0 else v.double()

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
    for score, l, j in units:
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


# ============================================================================ fleet stage

STAGE_SCHEMA: dict[str, Field] = {
    "budget_flops": Field(int, min=1, doc="FLOPs of one forward pass the device's detector may cost"),
    "method": Field(str, "relevance", choices=METHODS, doc="pruning criterion"),
    "retrain_epochs": Field(int, 2, min=0, doc="retraining epochs on the device's data after pruning"),
    "retrain_lr": Field(float, 1e-3, min=0.0, max=1.0, doc="retraining learning rate"),
    "batch_size": Field(int, 250, min=1, doc="retraining batch size"),
    "relevance_samples": Field(int, 512, min=1, doc="training samples the relevance is aggregated over"),
    "epsilon": Field(float, 1e-3, min=1e-12, doc="LRP-epsilon stabilizer"),
}


def run_stage(ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
    """Fleet stage ``prune``: fit the device's SDNet to ``budget_flops``, retrain, report.

    Computes the criterion (LRP relevance by default) of ``ctx.model`` on ``ctx.train``,
    prunes conv channels and input rows to the budget (``prune_sdnet_to_budget``),
    retrains briefly on ``ctx.train`` (``common.learngene.training.finetune``) and evaluates SER on
    ``ctx.val`` before and after. A model that already fits is left as it is.

    Returns
    -------
    StageResult
        ``model``: the pruned SDNet (None when unchanged); metrics ``flops_before``,
        ``flops_after``, ``params_before``, ``params_after``, ``ser_before``,
        ``ser_after``, ``input_rows``, ``channels``; ``flops``: relevance backward
        passes (counted as 2 forward passes each) plus the retraining FLOPs;
        ``state``: ``widths`` and ``input_rows`` of the pruned architecture (int64).
    """
    from common.learngene.training import evaluate_ser, finetune  # imported here: finetune pulls the training stack

    cfg = validate_section(cfg, STAGE_SCHEMA, "prune")
    model = ctx.model
    if not isinstance(model, SDNet):
        raise ValueError(f"the prune stage needs ctx.model to be an SDNet, got {type(model).__name__}")
    if ctx.train is None or ctx.val is None:
        raise ValueError("the prune stage needs ctx.train and ctx.val")
    flops_before, params_before = model_flops(model), count_parameters(model)
    ser_before = float(evaluate_ser(model, ctx.val))
    metrics = {"flops_before": float(flops_before), "params_before": float(params_before), "ser_before": ser_before}
    if flops_before <= cfg["budget_flops"]:
        metrics.update(flops_after=float(flops_before), params_after=float(params_before), ser_after=ser_before,
                       input_rows=float(len(model.input_rows)), channels=float(sum(model.widths)))
        return StageResult(metrics=metrics, flops=0, model=None)
    n_rel = min(int(cfg["relevance_samples"]), len(ctx.train))
    pruned = prune_sdnet_to_budget(
        model, ctx.train, cfg["budget_flops"], cfg["method"], seed=derive_seed(ctx.seed, "prune-random"),
        epsilon=cfg["epsilon"], n_samples=n_rel,
    )
    assert isinstance(pruned, SDNet)
    train_flops = 0
    if cfg["retrain_epochs"] > 0:
        res = finetune(pruned, ctx.train, epochs=cfg["retrain_epochs"], batch_size=cfg["batch_size"], lr=cfg["retrain_lr"],
                       generator=torch_generator(ctx.seed, "prune-retrain"))
        train_flops = int(res.flops)
    pruned.eval()
    relevance_flops = 3 * flops_before * n_rel if cfg["method"] == "relevance" else 0  # forward + LRP backward (~2x)
    metrics.update(
        flops_after=float(model_flops(pruned)), params_after=float(count_parameters(pruned)),
        ser_after=float(evaluate_ser(pruned, ctx.val)), input_rows=float(len(pruned.input_rows)),
        channels=float(sum(pruned.widths)),
    )
    state = {"widths": np.asarray(pruned.widths, dtype=np.int64), "input_rows": np.asarray(pruned.input_rows, dtype=np.int64)}
    return StageResult(metrics=metrics, flops=int(relevance_flops + train_flops), model=pruned, state=state)
