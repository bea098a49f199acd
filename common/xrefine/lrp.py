"""The LRP-epsilon rule with sign stabilization, backwards through a chain of stages.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation" -- its "decomposition-based, sign-stabilized LRP
epsilon rule". The text on file is the abstract, without equation numbers; the equations
are numbered (X1)-(X7) in ``common.xrefine``'s docstring. This module implements
(X1) (the rule), whose per-layer sum is (X2) (conservation), started from (X3) (the
output relevance). The rule is that of Bach et al. 2015 and Montavon et al. 2019.

A network is read as a chain of *stages* ``a_l = act_l(z_l)``, ``z_l = f_l(a_{l-1})``
with ``f_l`` affine (Linear, or Conv + BatchNorm in eval mode, folded) and ``act_l`` an
element-wise activation (ReLU, tanh) through which relevance passes unchanged. The rule
redistributes the relevance ``R_l`` of the stage outputs onto its inputs:

    (X1)  R_{l-1,j} = a_{l-1,j} * sum_k w_jk R_{l,k} / (z_{l,k} + eps * sign(z_{l,k})),  sign(0) = +1

implemented for any affine ``f_l`` as ``a * grad_a( f_l(a) . s )`` with
``s = R_l / (z_l + eps sign z_l)`` held constant (the gradient of ``f_l`` is its weight
matrix). Per layer,

    (X2)  sum_j R_{l-1,j} = sum_k R_{l,k} (z_k - b_k) / (z_k + eps sign z_k):

relevance is conserved up to what the bias and the stabilizer absorb.

*Decomposition over all outputs of a regression network*: each output ``o`` starts its
own decomposition with ``R = y_o`` on that output; these are sign-aligned (multiplied by
``sign(y_o)``, so that every output contributes what it *explains* with a positive
orientation) and summed. Because the rule is linear in the upper relevance for a fixed
forward pass, this equals one backward pass started from

    (X3)  R_out = |y|   (``output_relevance="abs"``, the default),

while ``"signed"`` starts from ``R_out = y`` (what captum's LRP gives summed over targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator
from common.models.sdnet import SDNet

__all__ = ["LrpStage", "lrp_stages", "lrp_epsilon"]


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
    """Stages of an ``nn.Sequential`` of Linear/Conv/Flatten layers, each optionally followed by ReLU/Tanh/Identity."""
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

    Parameters
    ----------
    model : ChannelEstimator, SDNet or nn.Sequential

    Returns
    -------
    list of LrpStage
        In forward order.

    Raises
    ------
    ValueError
        For any other model, or a Sequential holding other layers.
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
    """Denominator of (X1): ``z + eps * sign(z)`` with ``sign(0) = +1``; same shape and dtype as ``z``."""
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))  # sign(0) = +1
    return z + epsilon * sign


def lrp_epsilon(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float = 1e-3,
    output_relevance: str | torch.Tensor = "abs",
) -> list[torch.Tensor]:
    """LRP-epsilon with sign stabilization (X1), for all outputs at once (X3).

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

    Raises
    ------
    ValueError
        If ``epsilon <= 0``, or ``output_relevance`` is neither a known name nor a tensor
        of the output's shape.
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
        R = y.abs()  # (X3)
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
        R = (a.detach() * c).detach()  # (X1): R_j = a_j sum_k w_jk R_k / (z_k + eps sign z_k)
        rel.insert(0, R)
    return rel
