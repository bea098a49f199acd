"""Capacity-like binary cross-entropy on bits, and reading receiver outputs as bit logits.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025): influence is taken on the "capacity-like binary cross-entropy
loss" on bits (abstract; Fig. 3 and 4 use it). The text at hand keeps no equation numbers
for it, so the formulas are cited here by what they compute.

:func:`bce_bits` returns the per-sample mean BCE in **bits** (``log2``), so ``1 - BCE`` is
a lower bound on the bit-metric mutual information and every hard-decision error costs at
least one bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["LossFn", "bce_bits", "bits_from_logits", "tanh_to_bit_logits"]

#: per-sample loss: ``loss_fn(model_output [n, ...], target [n, ...]) -> float [n]``
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_LN2 = math.log(2.0)


def bce_bits(logits: torch.Tensor, bits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample binary cross-entropy on bits, in bits (log base 2).

    Parameters
    ----------
    logits : torch.Tensor
        ``float [n, ...]`` bit logits ``log P(b=1)/P(b=0)`` (= minus the LLR in the
        ``log P(b=0)/P(b=1)`` convention).
    bits : torch.Tensor
        ``0/1 [n, ...]`` transmitted bits, same shape as ``logits``.
    mask : torch.Tensor, optional
        ``bool/float`` broadcastable to ``logits``: which positions count (e.g. the data
        resource elements of an OFDM slot). Default: all.

    Returns
    -------
    torch.Tensor
        ``float [n]``: mean over each sample's counted bits of
        ``-log2 P(b | logit)``. A hard-decision error (``sign(logit)`` disagreeing with
        the bit) costs at least 1 bit, so ``BER <= BCE`` for every sample.
    """
    if logits.shape != bits.shape:
        raise ValueError(f"logits and bits must have the same shape, got {tuple(logits.shape)} and {tuple(bits.shape)}")
    if logits.dim() < 1:
        raise ValueError("expected a batch dimension [n, ...]")
    # capacity-like BCE: -log2 P(b | logit) per bit
    per_bit = nn.functional.binary_cross_entropy_with_logits(logits, bits.to(logits.dtype), reduction="none") / _LN2
    if mask is None:
        return per_bit.reshape(per_bit.shape[0], -1).mean(1)
    m = torch.broadcast_to(mask.to(logits.dtype), per_bit.shape)
    num = (per_bit * m).reshape(per_bit.shape[0], -1).sum(1)
    den = m.reshape(m.shape[0], -1).sum(1)
    if bool((den <= 0).any()):
        raise ValueError("mask leaves a sample with no bits to count")
    return num / den


def bits_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Hard decisions ``uint8``: 1 where ``logit > 0`` (``P(b=1) > 1/2``)."""
    return (logits > 0).to(torch.uint8)


def tanh_to_bit_logits(out: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Read a tanh output as a soft QPSK sign and return bit logits.

    SDNet's outputs ``o in (-1, 1)`` estimate ``x_j`` (sign ``1 - 2 b_j``); reading
    ``o = E[1 - 2b] = tanh(LLR / 2)`` gives the bit logit ``log P(b=1)/P(b=0) =
    -2 atanh(o)``. Hard decision: ``b = (o < 0)``, the detector's own rule.

    Parameters
    ----------
    out : torch.Tensor
        ``float [n, 2 n_t]`` tanh outputs.
    eps : float, default 1e-6
        Clamp distance from ±1 (keeps the logit finite).

    Returns
    -------
    torch.Tensor
        ``float [n, 2 n_t]`` bit logits in the real-vector bit layout of
        :mod:`common.phy.modulation`.
    """
    return -2.0 * torch.atanh(out.clamp(-1.0 + eps, 1.0 - eps))
