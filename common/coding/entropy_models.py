"""Learned fully factorized density for integer latents ("DeepFactorized", Ballé et al. 2018).

Per latent channel ``c`` a small monotone network ``f_c: R -> R`` (widths 1-3-3-3-3-1,
softplus-positive matrices, biases, tanh gating factors; Ballé et al. 2018, appendix 6.1)
whose logistic ``sigmoid(f_c(y))`` is a CDF. The likelihood of the integer (or noisy) value
``y`` is the CDF difference over ``[y - 1/2, y + 1/2]`` (the paper's eq. (5)), floored at
``likelihood_bound``. Three quantiles per channel (``tail_mass/2``, median, ``1 - tail_mass/2``)
are tracked by an auxiliary loss; they bound the symbol range of the coding table, and
integers outside it are sent through an escape symbol whose probability is the tail mass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepFactorized", "PmfTable"]


class PmfTable:
    """The coding table of one latent channel: integers ``offset .. offset + n - 1`` plus escape.

    Attributes
    ----------
    offset : int
        The smallest integer with its own symbol.
    pmf : np.ndarray
        ``float64 [n + 1]``, sums to 1; entry ``n`` is the escape symbol's probability.
    """

    def __init__(self, offset: int, pmf: np.ndarray) -> None:
        pmf = np.asarray(pmf, dtype=np.float64)
        if pmf.ndim != 1 or pmf.size < 2 or not np.all(np.isfinite(pmf)) or np.any(pmf < 0):
            raise ValueError("pmf must be a finite non-negative float vector with at least 2 entries")
        self.offset = int(offset)
        self.pmf = pmf / pmf.sum()

    @property
    def n_symbols(self) -> int:
        """Integers with their own symbol (escape excluded)."""
        return self.pmf.size - 1


class DeepFactorized(nn.Module):
    """Fully factorized learned density over ``channels`` latent channels.

    Parameters
    ----------
    channels : int
        Number of latent channels C.
    filters : tuple of int, default (3, 3, 3, 3)
        Hidden widths of the per-channel cumulative network (total widths 1-3-3-3-3-1).
    init_scale : float, default 10.0
        Initial width of the density.
    tail_mass : float, default 1e-9
        Probability outside the tracked quantiles (both tails together).
    likelihood_bound : float, default 1e-9
        Floor of every likelihood in the training path.
    max_support : int, default 4096
        Most integers one channel's coding table may hold (bounds table size).
    seed : int, default 0
        Seed for the bias initialisation.
    """

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
        max_support: int = 4096,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if not 0 < tail_mass < 1:
            raise ValueError(f"tail_mass must lie in (0, 1), got {tail_mass}")
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)
        self.max_support = int(max_support)
        widths = (1,) + self.filters + (1,)
        scale = init_scale ** (1.0 / (len(self.filters) + 1))
        g = torch.Generator().manual_seed(int(seed))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.rand((channels, widths[i + 1], 1), generator=g) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros((channels, widths[i + 1], 1))))
        q = torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1)
        self.quantiles = nn.Parameter(q)  # [C, 1, 3], trained by aux_loss only
        t = math.log(2.0 / self.tail_mass - 1.0)
        self.register_buffer("_target", torch.tensor([-t, 0.0, t]))

    def density_parameters(self) -> list[nn.Parameter]:
        """Matrices, biases and factors (trained with the main loss; part of the decoder)."""
        return list(self.matrices) + list(self.biases) + list(self.factors)

    def _logits_cumulative(self, x: torch.Tensor, stop_gradient: bool = False) -> torch.Tensor:
        """``f_c(x)`` for ``x: float32 [C, 1, N]`` -> ``[C, 1, N]``."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            m = F.softplus(m)
            if stop_gradient:
                m, b = m.detach(), b.detach()
            x = torch.matmul(m, x) + b
            if i < len(self.factors):
                f = self.factors[i]
                if stop_gradient:
                    f = f.detach()
                x = x + torch.tanh(f) * torch.tanh(x)
        return x

    def _to_cn(self, y: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        if y.dim() < 2 or y.shape[1] != self.channels:
            raise ValueError(f"expected latents [batch, {self.channels}, ...], got shape {tuple(y.shape)}")
        perm = (1, 0) + tuple(range(2, y.dim()))
        yt = y.permute(perm).contiguous()
        return yt.reshape(self.channels, 1, -1), tuple(yt.shape)

    def _from_cn(self, v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        v = v.reshape(shape)
        perm = (1, 0) + tuple(range(2, len(shape)))
        return v.permute(perm).contiguous()

    def _cdf_diff(self, v: torch.Tensor) -> torch.Tensor:
        """Probability of ``[v - 1/2, v + 1/2]`` for ``v: [C, 1, N]`` (eq. (5) of the paper)."""
        lower = self._logits_cumulative(v - 0.5)
        upper = self._logits_cumulative(v + 0.5)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail with better precision
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Likelihood of each (integer or noisy) latent value.

        Parameters
        ----------
        y : torch.Tensor
            ``float32 [batch, C, ...]``.

        Returns
        -------
        torch.Tensor
            Same shape, values in ``[likelihood_bound, 1]``.
        """
        v, shape = self._to_cn(y)
        lik = self._cdf_diff(v).clamp_min(self.likelihood_bound)
        return self._from_cn(lik, shape)

    def forward(self, y: torch.Tensor, training: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path: quantize (``U(-1/2, 1/2)`` noise in training, rounding otherwise).

        Parameters
        ----------
        y : torch.Tensor
            ``float32 [batch, C, ...]`` continuous latents.
        training : bool, optional
            Defaults to ``self.training``.

        Returns
        -------
        y_hat : torch.Tensor
            Quantized (or noisy) latents, same shape.
        likelihoods : torch.Tensor
            Same shape; ``-log2`` of it summed is the model's estimate of the bits.
        """
        training = self.training if training is None else training
        if training:
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_hat = torch.round(y)
        return y_hat, self.likelihood(y_hat)

    def aux_loss(self) -> torch.Tensor:
        """Quantile-tracking loss: drives ``f_c(quantiles)`` to the logits of the tail masses."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self._target).sum()

    @torch.no_grad()
    def fit_quantiles(self, lo: float = -1e4, hi: float = 1e4, iters: int = 60) -> None:
        """Place the quantiles exactly where ``aux_loss`` drives them (bisection on ``f_c``).

        ``f_c`` is monotone, so bisection on ``[lo, hi]`` solves ``f_c(q) = target`` for the
        three targets of every channel at once; a deterministic, fast alternative to many
        aux-loss steps.
        """
        target = self._target.reshape(1, 1, 3).expand(self.channels, 1, 3).to(torch.float64)
        a = torch.full((self.channels, 1, 3), float(lo), dtype=torch.float64)
        b = torch.full((self.channels, 1, 3), float(hi), dtype=torch.float64)
        for _ in range(iters):
            mid = (a + b) / 2
            below = self._logits_cumulative(mid.float()).double() < target
            a = torch.where(below, mid, a)
            b = torch.where(below, b, mid)
        self.quantiles.copy_(((a + b) / 2).float())

    @torch.no_grad()
    def pmf_tables(self) -> list[PmfTable]:
        """Per-channel coding tables from the current parameters (deterministic).

        The symbol range of channel ``c`` is ``floor(q_low) .. ceil(q_high)`` (at most
        ``max_support`` integers around the median); the escape symbol carries the mass the
        range leaves out (at least ``likelihood_bound``).
        """
        q = self.quantiles.detach().double().reshape(self.channels, 3)
        tables = []
        for c in range(self.channels):
            lo = q[c, 0].item()
            hi = q[c, 2].item()
            med = q[c, 1].item()
            if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(med)):
                raise ValueError(f"non-finite quantiles in channel {c}")
            lo_i, hi_i = math.floor(min(lo, med)), math.ceil(max(hi, med))
            half = self.max_support // 2
            mid = int(round(med))
            lo_i, hi_i = max(lo_i, mid - half), min(hi_i, mid + half - 1)
            ints = torch.arange(lo_i, hi_i + 1, dtype=torch.float32)
            v = torch.zeros((self.channels, 1, ints.numel()))
            v[c, 0] = ints
            p = self._cdf_diff(v)[c, 0].double().numpy()
            esc = max(1.0 - float(p.sum()), self.likelihood_bound)
            tables.append(PmfTable(lo_i, np.concatenate([p, [esc]])))
        return tables
