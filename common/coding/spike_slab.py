"""Priors for quantized decoder updates: spike-and-slab (eq. 16-18) and uniform (ablation).

A decoder update ``delta = theta_dec' - theta_dec`` is quantized to integers
``k = clip(round(delta / t), k_min, k_max)`` (eq. 12-14, see ``update_codec``). Its prior
is pushed forward through the quantizer (eq. 15): the probability of bin ``k`` is the prior
mass of ``[t (k - 1/2), t (k + 1/2))``, the two edge bins also take the tails beyond them.
The rate of an update is ``-sum log2 p(k_i)`` bits (eq. 19).

Spike and slab (van Rozendaal et al., ICLR 2021)::

    p(delta) = (N(delta; 0, sigma^2) + alpha * N(delta; 0, (t/6)^2)) / (1 + alpha)   # eq. (16)-(18)

the narrow spike puts ~99.7 % of its mass in the zero bin, so an unchanged parameter
costs about ``-log2(alpha / (1 + alpha))`` bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["UpdateQuantizer", "UpdatePrior", "SpikeSlabPrior", "UniformPrior", "make_prior"]


@dataclass(frozen=True)
class UpdateQuantizer:
    """Uniform quantizer of update values (eq. 12-14).

    Parameters
    ----------
    t : float
        Bin width (same unit as the parameters).
    n_bins : int
        Number of bins ``B >= 2``; integers ``k_min = -(B // 2) .. k_max = (B - 1) // 2``.
    """

    t: float
    n_bins: int

    def __post_init__(self) -> None:
        if not (self.t > 0 and math.isfinite(self.t)):
            raise ValueError(f"bin width t must be a positive finite float, got {self.t!r}")
        if not 2 <= int(self.n_bins) <= 65536:
            raise ValueError(f"n_bins must lie in [2, 65536], got {self.n_bins!r}")

    @property
    def k_min(self) -> int:
        return -(int(self.n_bins) // 2)

    @property
    def k_max(self) -> int:
        return (int(self.n_bins) - 1) // 2

    def to_int(self, delta: torch.Tensor) -> torch.Tensor:
        """``k = clip(round(delta / t), k_min, k_max)`` (eq. 13-14): ``int32``, same shape."""
        return torch.clamp(torch.round(delta.detach() / self.t), self.k_min, self.k_max).to(torch.int32)

    def dequantize(self, k: torch.Tensor) -> torch.Tensor:
        """``t * k`` as float32 (the update both ends apply)."""
        return k.to(torch.float32) * torch.tensor(self.t, dtype=torch.float32)

    def ste(self, delta: torch.Tensor) -> torch.Tensor:
        """Quantized value in the forward pass, identity gradient (eq. 12 with the STE)."""
        return delta + (self.dequantize(self.to_int(delta)) - delta).detach()


class UpdatePrior:
    """A prior over quantized update integers; subclasses define the CDF."""

    quantizer: UpdateQuantizer

    def pmf(self) -> np.ndarray:
        """``float64 [n_bins]``: probability of ``k_min .. k_max`` (eq. 15), sums to 1."""
        raise NotImplementedError

    def bits(self, k: np.ndarray) -> float:
        """Ideal information content ``-sum log2 p(k)`` of integer updates (eq. 19), bits."""
        k = np.asarray(k, dtype=np.int64).ravel()
        q = self.quantizer
        if k.size and (k.min() < q.k_min or k.max() > q.k_max):
            raise ValueError(f"update integers must lie in [{q.k_min}, {q.k_max}]")
        p = self.pmf()
        return float(-np.log2(p[k - q.k_min]).sum())

    def soft_bits(self, delta_q: torch.Tensor) -> torch.Tensor:
        """Differentiable rate of STE-quantized updates (eq. 19 at ``delta_q``), scalar bits."""
        raise NotImplementedError


class SpikeSlabPrior(UpdatePrior):
    """Spike-and-slab prior (eq. 16-18).

    Parameters
    ----------
    quantizer : UpdateQuantizer
    sigma : float
        Standard deviation of the slab (eq. 17).
    alpha : float
        Weight of the spike relative to the slab (eq. 16).
    spike_sigma : float, optional
        Standard deviation of the spike (eq. 18); default ``t / 6``.
    """

    def __init__(self, quantizer: UpdateQuantizer, sigma: float, alpha: float, spike_sigma: float | None = None) -> None:
        if not sigma > 0:
            raise ValueError(f"slab sigma must be positive, got {sigma!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be non-negative, got {alpha!r}")
        self.quantizer = quantizer
        self.sigma = float(sigma)
        self.alpha = float(alpha)
        self.spike_sigma = float(spike_sigma) if spike_sigma is not None else quantizer.t / 6.0
        if not self.spike_sigma > 0:
            raise ValueError(f"spike sigma must be positive, got {spike_sigma!r}")

    def _cdf(self, x: torch.Tensor) -> torch.Tensor:
        # eq. (16): mixture CDF of slab (eq. 17) and spike (eq. 18)
        slab = torch.special.ndtr(x / self.sigma)
        spike = torch.special.ndtr(x / self.spike_sigma)
        return (slab + self.alpha * spike) / (1.0 + self.alpha)

    def pmf(self) -> np.ndarray:
        q = self.quantizer
        k = torch.arange(q.k_min, q.k_max + 1, dtype=torch.float64)
        upper = self._cdf(q.t * (k + 0.5))
        lower = self._cdf(q.t * (k - 0.5))
        upper[-1] = 1.0  # edge bins absorb the tails (push-forward through the clip, eq. 15)
        lower[0] = 0.0
        p = (upper - lower).clamp_min(1e-300).numpy()
        return p / p.sum()

    def soft_bits(self, delta_q: torch.Tensor) -> torch.Tensor:
        t = self.quantizer.t
        x = delta_q.double()
        p = self._cdf(x + t / 2) - self._cdf(x - t / 2)
        return -torch.log2(p.clamp_min(1e-30)).sum().float()


class UniformPrior(UpdatePrior):
    """Every bin equally likely: ``log2(n_bins)`` bits per parameter (the FM-UP ablation)."""

    def __init__(self, quantizer: UpdateQuantizer) -> None:
        self.quantizer = quantizer

    def pmf(self) -> np.ndarray:
        n = int(self.quantizer.n_bins)
        return np.full(n, 1.0 / n)

    def soft_bits(self, delta_q: torch.Tensor) -> torch.Tensor:
        # constant in delta: the uniform prior gives no gradient towards sparse updates
        return torch.tensor(delta_q.numel() * math.log2(self.quantizer.n_bins), dtype=torch.float32) + 0.0 * delta_q.sum()


def make_prior(kind: str, quantizer: UpdateQuantizer, sigma: float = 5e-2, alpha: float = 1000.0) -> UpdatePrior:
    """``"spike_slab"`` or ``"uniform"``; ``ValueError`` otherwise."""
    if kind == "spike_slab":
        return SpikeSlabPrior(quantizer, sigma, alpha)
    if kind == "uniform":
        return UniformPrior(quantizer)
    raise ValueError(f"unknown update prior {kind!r}; expected 'spike_slab' or 'uniform'")
