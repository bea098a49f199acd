"""Pilot-based least-squares channel estimation (eq. 4-5) and NMSE.

Pilots are orthogonal across the ``n_t`` transmit antennas: rows of a Sylvester
Hadamard matrix of order ``n_pilots`` (a power of two, ``>= n_t``) scaled by
``(1 + 1j)/sqrt(2)``, so every pilot is a unit-power QPSK symbol and
``X_p X_p^H = n_pilots I``.

Eq. (5) as printed reads ``Y_p (X_p^H X_p)^{-1} X_p^H``; with ``X_p`` of size
``n_t x n_p`` and ``n_p > n_t`` that Gram matrix is singular, so the implemented (and
intended) LS estimate is the right pseudo-inverse ``Y_p X_p^H (X_p X_p^H)^{-1}``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["orthogonal_pilots", "transmit_pilots", "ls_estimate", "ls_channel_estimate"]


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def orthogonal_pilots(n_t: int, n_pilots: int = 16) -> torch.Tensor:
    """The pilot matrix ``X_p``.

    Parameters
    ----------
    n_t : int
        Transmit antennas (rows).
    n_pilots : int, default 16
        Pilot length ``N_p`` (Table III); a power of two, at least ``n_t``.

    Returns
    -------
    torch.Tensor
        ``complex64 [n_t, n_pilots]`` with unit-modulus QPSK entries, ``X X^H = n_pilots I``.
    """
    if n_t < 1:
        raise ValueError(f"n_t must be >= 1, got {n_t}")
    if n_pilots < n_t or n_pilots & (n_pilots - 1):
        raise ValueError(f"n_pilots must be a power of two >= n_t={n_t}, got {n_pilots}")
    h = _hadamard(n_pilots)[:n_t]
    return (h * (1 + 1j) / math.sqrt(2)).to(torch.complex64)


def transmit_pilots(
    H: torch.Tensor, noise_var: float, n_pilots: int = 16, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Received pilot block of eq. (4): ``Y_p = H X_p + N_p``.

    Parameters
    ----------
    H : torch.Tensor
        ``complex64 [n, n_r, n_t]`` true channels.
    noise_var : float
        Complex noise variance ``sigma_n^2`` per receive antenna and symbol.
    n_pilots : int, default 16
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_r, n_pilots]``.
    """
    n, n_r, n_t = H.shape
    Xp = orthogonal_pilots(n_t, n_pilots)
    shape = (n, n_r, n_pilots)
    s = math.sqrt(noise_var / 2)
    N = torch.complex(torch.randn(shape, generator=generator) * s, torch.randn(shape, generator=generator) * s)
    return H.to(torch.complex64) @ Xp + N


def ls_estimate(Yp: torch.Tensor, Xp: torch.Tensor) -> torch.Tensor:
    """LS channel estimate (eq. 5, right pseudo-inverse form).

    Parameters
    ----------
    Yp : torch.Tensor
        ``complex [n, n_r, n_p]`` received pilots.
    Xp : torch.Tensor
        ``complex [n_t, n_p]`` pilot matrix (full row rank).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_r, n_t]``: ``Y_p X_p^H (X_p X_p^H)^{-1}``.
    """
    if Yp.shape[-1] != Xp.shape[-1]:
        raise ValueError(f"pilot lengths differ: Yp {tuple(Yp.shape)}, Xp {tuple(Xp.shape)}")
    XpH = Xp.conj().T
    gram = Xp @ XpH  # [n_t, n_t]
    # eq. (5): H_LS = Y_p X_p^H (X_p X_p^H)^{-1}
    return (Yp @ XpH @ torch.linalg.inv(gram)).to(torch.complex64)


def ls_channel_estimate(
    H: torch.Tensor, noise_var: float, n_pilots: int = 16, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Send orthogonal pilots through ``H`` and return the LS estimate ``complex64 [n, n_r, n_t]``.

    With orthogonal pilots each entry of ``H_LS - H`` is CN(0, noise_var / n_pilots).
    """
    Xp = orthogonal_pilots(H.shape[-1], n_pilots)
    return ls_estimate(transmit_pilots(H, noise_var, n_pilots, generator), Xp)
