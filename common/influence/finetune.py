"""Fine-tuning a receiver on the selected training samples: first-order steps and the
influence-aligned second-order update.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025): "first-order updates on beneficial samples" (3 steps for a
single target, 15 for several, Fig. 4) and the proposed "second-order, influence-aligned
update strategy" (abstract; Fig. 3 compares both). The text at hand keeps no equation
numbers; the update rule is written out in :func:`second_order_update`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from common.influence.gradients import flat_params, mean_grad, set_flat_params
from common.influence.ihvp import LowRankInverseHessian
from common.influence.losses import LossFn

__all__ = ["UPDATES", "first_order_finetune", "second_order_update", "finetune_copy"]

#: the updates :func:`finetune_copy` knows
UPDATES: tuple[str, ...] = ("first_order", "second_order")


def first_order_finetune(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    callback: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Full-batch gradient steps on the selected samples' mean loss (in place).

    Parameters
    ----------
    model : nn.Module
        Updated in place and returned.
    loss_fn : LossFn
        Per-sample loss.
    inputs, targets : torch.Tensor
        ``[B, ...]`` the selected samples (``B`` = budget).
    steps : int
        Optimizer steps (paper: 3 single-target, 15 multi-target).
    lr : float
        Learning rate.
    optimizer : {"adam", "sgd"}
    callback : callable, optional
        ``callback(step, model)`` after every step (step from 1), e.g. to log BER.

    Returns
    -------
    nn.Module
        ``model``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'adam' or 'sgd'")
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).mean().backward()
        opt.step()
        if callback is not None:
            callback(s + 1, model)
    return model


def second_order_update(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    inv_hessian: LowRankInverseHessian,
    steps: int,
    lr: float,
    max_step_norm: float = 1.0,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """Influence-aligned second-order update (in place).

    ``θ <- θ - lr · H^{-1} ∇L_S(θ)`` with ``L_S`` the mean loss of the selected samples
    ``inputs, targets [B, ...]`` and ``H^{-1}`` the fixed Arnoldi inverse. Its first-order
    effect on the target loss is ``ΔL_t ≈ -lr g_t^T H^{-1} ∇L_S = lr · mean_{z in S} I(z, t)``
    (classical scores), i.e. the update moves the target loss by exactly the influence
    the selection was ranked by. Each step's norm is capped at ``max_step_norm``;
    ``callback(step, model)`` runs after every step. Returns ``model``.
    """
    for s in range(steps):
        g = mean_grad(model, loss_fn, inputs, targets)
        step = lr * inv_hessian.apply(g).to(g.dtype)  # lr · H^{-1} ∇L_S(θ)
        nrm = float(step.norm())
        if nrm > max_step_norm:
            step = step * (max_step_norm / nrm)
        set_flat_params(model, flat_params(model) - step)
        if callback is not None:
            callback(s + 1, model)
    return model


def finetune_copy(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    update: str,
    steps: int,
    lr: float,
    inv_hessian: LowRankInverseHessian | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """A deep copy of ``model`` (kept in eval mode: batch-norm statistics frozen) after
    ``steps`` ``first_order`` (Adam) or ``second_order`` steps on the given ``[B, ...]``
    samples; ``model`` itself is untouched."""
    m = copy.deepcopy(model).eval()
    if update == "first_order":
        return first_order_finetune(m, loss_fn, inputs, targets, steps, lr, callback=callback)
    if update == "second_order":
        if inv_hessian is None:
            raise ValueError("second_order update needs the Arnoldi inverse Hessian")
        return second_order_update(m, loss_fn, inputs, targets, inv_hessian, steps, lr, callback=callback)
    raise ValueError(f"unknown update {update!r}; expected 'first_order' or 'second_order'")
