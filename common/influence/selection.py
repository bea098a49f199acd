"""Choosing what to fine-tune for and on: target instances by relative BER gap, training
samples by influence score, and the gap-reduction measure of the result.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025). Targets are the instances with the largest relative BER gap
``Δ_BER = (BER - BER_genie) / BER_genie`` to a genie-aided LMMSE receiver (the paper's
equation labelled ``eq:relative_ber_gap``; its number did not survive in the text at hand),
restricted to ``BER_genie >= 1e-3`` (Fig. 2: "the top-5 largest-gap instances in the regime
where BER_Genie >= 10^-3"). Fine-tuning uses the most beneficial, most harmful or random
training samples under a fixed budget (Fig. 3); results are reported as the relative
reduction of the BER gap (Fig. 4 tables).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["relative_ber_gap", "select_targets", "instance_ber", "gap_reduction", "select_samples"]


def relative_ber_gap(ber: torch.Tensor | np.ndarray, ber_genie: torch.Tensor | np.ndarray) -> np.ndarray:
    """Relative BER gap ``Δ = (BER - BER_genie) / BER_genie`` per instance (paper Fig. 2).

    Parameters
    ----------
    ber, ber_genie : array-like ``float [n_instances]``
        BER of the receiver and of the genie LMMSE receiver on the same instances.

    Returns
    -------
    numpy.ndarray
        ``float64 [n_instances]``; ``nan`` where ``BER_genie == 0``.
    """
    b = np.asarray(ber, dtype=np.float64)
    g = np.asarray(ber_genie, dtype=np.float64)
    if b.shape != g.shape or b.ndim != 1:
        raise ValueError(f"ber and ber_genie must be 1-D of equal length, got {b.shape} and {g.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        # eq:relative_ber_gap: Δ_BER = (BER - BER_genie) / BER_genie
        return np.where(g > 0, (b - g) / np.where(g > 0, g, 1.0), np.nan)


def select_targets(
    ber: torch.Tensor | np.ndarray,
    ber_genie: torch.Tensor | np.ndarray,
    k: int,
    min_genie_ber: float = 1e-3,
) -> np.ndarray:
    """Indices of the top-``k`` relative-BER-gap instances with ``BER_genie >= min_genie_ber``.

    Parameters
    ----------
    ber, ber_genie : array-like ``float [n_instances]``
        Per-instance BER of the receiver and of the genie LMMSE receiver.
    k : int
        Targets wanted, ``>= 1``.
    min_genie_ber : float, default 1e-3
        Instances whose genie BER is below this are never targets (paper Fig. 2).

    Returns
    -------
    numpy.ndarray
        ``int64 [<= k]`` instance indices, largest gap first (fewer than ``k`` when fewer
        instances qualify; ties broken by the lower index).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gap = relative_ber_gap(ber, ber_genie)
    ok = np.asarray(ber_genie, dtype=np.float64) >= min_genie_ber
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(-gap[idx], kind="stable")]
    return order[:k].astype(np.int64)


def instance_ber(pred_bits: torch.Tensor, true_bits: torch.Tensor, instance_size: int) -> np.ndarray:
    """BER of every instance of ``instance_size`` consecutive samples.

    Parameters
    ----------
    pred_bits, true_bits : torch.Tensor
        ``0/1 [n, ...]`` with ``n`` a multiple of ``instance_size``.
    instance_size : int
        Samples per instance.

    Returns
    -------
    numpy.ndarray
        ``float64 [n // instance_size]``.
    """
    if pred_bits.shape != true_bits.shape:
        raise ValueError(f"shapes differ: {tuple(pred_bits.shape)} vs {tuple(true_bits.shape)}")
    n = pred_bits.shape[0]
    if instance_size < 1 or n % instance_size:
        raise ValueError(f"n={n} is not a multiple of instance_size={instance_size}")
    err = (pred_bits.long() != true_bits.long()).reshape(n // instance_size, -1).double()
    return err.mean(1).numpy()


def gap_reduction(ber_before: float, ber_after: float, ber_genie: float) -> float:
    """Relative reduction of the BER gap to the genie: ``1 - (after - genie) / (before - genie)``.

    Parameters
    ----------
    ber_before, ber_after, ber_genie : float
        BER (fraction of bits in error) of the receiver before and after fine-tuning and
        of the genie LMMSE, on the same instances.

    Returns
    -------
    float
        1 = the gap closed, 0 = unchanged, negative = the gap grew; ``nan`` when there was
        no gap (``before <= genie``).
    """
    gap0 = ber_before - ber_genie
    if not gap0 > 0:
        return float("nan")
    return 1.0 - (ber_after - ber_genie) / gap0


def select_samples(
    scores: torch.Tensor,
    budget: int,
    mode: str = "beneficial",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of ``budget`` training samples.

    Parameters
    ----------
    scores : torch.Tensor
        ``[N]`` influence scores (negative = beneficial).
    budget : int
        How many samples, ``1 <= budget <= N``.
    mode : {"beneficial", "harmful", "random"}
        Lowest scores, highest scores, or a uniform draw without replacement.
    generator : torch.Generator, optional
        For ``random``.

    Returns
    -------
    torch.Tensor
        ``int64 [budget]`` distinct indices (most extreme first for the influence modes).
    """
    n = scores.shape[0]
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], got {budget}")
    if mode == "beneficial":
        return torch.argsort(scores, stable=True)[:budget]
    if mode == "harmful":
        return torch.argsort(-scores, stable=True)[:budget]
    if mode == "random":
        return torch.randperm(n, generator=generator)[:budget]
    raise ValueError(f"unknown selection mode {mode!r}; expected 'beneficial', 'harmful' or 'random'")
