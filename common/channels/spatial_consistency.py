"""Spatial consistency helpers: correlated random fields and cluster-set visibility.

Two pieces that make a channel a smooth function of the UE position
(TR 38.901 Sec. 7.6.3, "spatial consistency"):

- ``ExponentialField``: a zero-mean, unit-variance random field on the horizontal plane
  whose correlation between two points ``d`` apart is ``exp(-d / d_corr)``, the
  autocorrelation 38.901 prescribes for the large-scale parameters (Sec. 7.6.3.1;
  correlation distances of Table 7.5-6). It is a sum of ``M`` sinusoids with random
  wave vectors drawn from the 2-D spectrum of ``exp(-d / d_corr)``, so it can be
  evaluated at any point without a grid (the spectral method of Shinozuka & Deodatis,
  "Simulation of stochastic processes by spectral representation", Appl. Mech. Rev.
  1991). The radial wavenumber density of that spectrum is
  ``p(k) = k d^2 / (1 + k^2 d^2)^(3/2)`` (its Hankel transform is ``exp(-r / d)``),
  sampled by inverting its CDF ``F(k) = 1 - (1 + k^2 d^2)^(-1/2)``.
- ``lattice_weights``: the plane is tiled by a square lattice of *drops* with spacing
  ``D`` (the correlation distance of cluster-specific random variables, Table
  7.6.3.1-2); each drop owns one cluster set. A position sees the drop it is in with
  weight 1 on a plateau, and two (or four) neighbouring drops with ``cos^2`` / ``sin^2``
  power ramps over a transition band: the weights are a partition of unity, so the
  total power stays 1 while clusters of one drop die out and those of the next are
  born. This is QuaDRiGa's segment transition (Jaeckel et al., "QuaDRiGa: A 3-D
  multi-cell channel model with time evolution for enabling virtual field trials",
  IEEE TAP 2014, Sec. III-D) laid out on a 2-D lattice so that the channel depends on
  the position alone, not on the track that reached it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ExponentialField", "axis_weights", "lattice_weights"]


class ExponentialField:
    """Gaussian-like random field on the plane with correlation ``exp(-d / d_corr)``.

    Parameters
    ----------
    rng : np.random.Generator
        Draws the wave vectors and phases (the field is fixed once built).
    correlation_distance_m : float
        ``d_corr`` in metres (> 0).
    n_sinusoids : int, default 256
        ``M``; the marginal is a sum of ``M`` cosines (Gaussian as ``M`` grows).
    """

    def __init__(self, rng: np.random.Generator, correlation_distance_m: float, n_sinusoids: int = 256) -> None:
        if not correlation_distance_m > 0:
            raise ValueError(f"correlation distance must be positive, got {correlation_distance_m} m")
        u = rng.random(n_sinusoids)
        k = np.sqrt(1.0 / (1.0 - u) ** 2 - 1.0) / correlation_distance_m  # inverse CDF of p(k), rad/m
        direction = rng.uniform(0.0, 2.0 * np.pi, n_sinusoids)
        self.wave_vectors = np.stack([k * np.cos(direction), k * np.sin(direction)], axis=-1)  # [M, 2]
        self.phases = rng.uniform(0.0, 2.0 * np.pi, n_sinusoids)

    def __call__(self, xy_m: np.ndarray) -> np.ndarray:
        """Field values at ``xy_m: float [..., 2]`` (m) -> ``float64 [...]``, unit variance."""
        arg = np.asarray(xy_m, float) @ self.wave_vectors.T + self.phases
        return np.sqrt(2.0 / self.phases.size) * np.cos(arg).sum(axis=-1)


def axis_weights(s: np.ndarray, transition: float) -> np.ndarray:
    """Power weight of a drop at signed offset ``s`` (in lattice spacings) along one axis.

    1 for ``|s| <= (1 - transition) / 2``, 0 for ``|s| >= (1 + transition) / 2``, and
    ``cos^2`` in between, so that the weights of two neighbours sum to 1.

    Parameters
    ----------
    s : np.ndarray
        ``float [...]`` offsets from the drop, in units of the lattice spacing.
    transition : float
        Width of the transition band in lattice spacings, in (0, 1].
    """
    a = (1.0 - transition) / 2.0
    x = np.clip((np.abs(s) - a) / transition, 0.0, 1.0)
    return np.where(x >= 1.0, 0.0, np.cos(0.5 * np.pi * x) ** 2)  # exactly 0 out of view


def lattice_weights(xy_m: np.ndarray, spacing_m: float, transition_m: float) -> tuple[np.ndarray, np.ndarray]:
    """The drops a position sees and their power weights.

    Parameters
    ----------
    xy_m : np.ndarray
        ``float [n, 2]`` positions relative to drop ``(0, 0)``, m.
    spacing_m : float
        Lattice spacing ``D``, m (> 0).
    transition_m : float
        Width of the transition band, m, in ``(0, D]``.

    Returns
    -------
    drops : np.ndarray
        ``int64 [n, 4, 2]`` lattice indices ``(i, j)`` of the four surrounding drops.
    weights : np.ndarray
        ``float64 [n, 4]`` power weights, each row summing to 1 (zeros for drops out of view).
    """
    if not spacing_m > 0 or not 0 < transition_m <= spacing_m:
        raise ValueError(f"expected spacing > 0 and 0 < transition <= spacing, got {spacing_m}, {transition_m} m")
    t = np.asarray(xy_m, float) / spacing_m
    base = np.floor(t).astype(np.int64)  # [n, 2]
    frac = t - base
    beta = transition_m / spacing_m
    w_lo, w_hi = axis_weights(frac, beta), axis_weights(frac - 1.0, beta)  # [n, 2] each
    drops = np.empty((t.shape[0], 4, 2), dtype=np.int64)
    weights = np.empty((t.shape[0], 4))
    for c, (di, dj) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
        drops[:, c] = base + np.array([di, dj])
        weights[:, c] = (w_hi if di else w_lo)[:, 0] * (w_hi if dj else w_lo)[:, 1]
    return drops, weights
