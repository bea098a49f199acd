"""3GPP TR 38.901 parameters of the UMi street-canyon NLoS scenario (data, no logic).

Values of TR 38.901 V19.2.0 (the version Sionna 2.x loads by default:
``sionna/phy/channel/tr38901/models/v19_2/UMi_NLoS.json``):

- Table 7.5-6 Part-1, "UMi - Street Canyon, NLOS": large-scale parameters (LSPs)
  ``lgX = log10(X)`` with ``mu_lgX = a log10(1 + fc) + b`` and
  ``sigma_lgX = c log10(1 + fc) + d`` (``fc`` in GHz, at least 2 GHz: note 6 of the
  table), their cross-correlations and correlation distances, the delay scaling
  ``r_tau``, the per-cluster shadowing ``zeta``, 19 clusters x 20 rays, the cluster
  spreads ``c_DS``, ``c_ASD``, ``c_ASA``, ``c_ZSA``;
- Table 7.5-8: ZSD and the ZOD offset of UMi NLoS (distance dependent);
- Table 7.5-2 / 7.5-4: the scaling factors ``C_phi^NLOS`` / ``C_theta^NLOS`` for 19 clusters;
- Table 7.5-3: the ray offset angles ``alpha_m`` of a cluster with unit rms spread;
- Table 7.5-5: the sub-cluster split of the two strongest clusters;
- Table 7.6.3.1-2: the correlation distance of cluster-specific random variables.

Angles are in degrees, delays in seconds, distances in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SPEC_VERSION",
    "LSP_NAMES",
    "LogLinear",
    "UMI_NLOS_LSP",
    "UMI_NLOS_CROSS_CORRELATION",
    "UMI_NLOS_CORRELATION_DISTANCE_M",
    "UMI_NLOS",
    "RAY_OFFSETS",
    "SUBCLUSTER_RAYS",
    "SUBCLUSTER_DELAY_FACTORS",
    "UmiNlosParameters",
    "lsp_log_mean_std",
    "zsd_log_mean",
    "zod_offset_deg",
    "cross_correlation_matrix",
]

SPEC_VERSION = "TR 38.901 V19.2.0"

#: order of the large-scale parameters in every array of this module
LSP_NAMES = ("DS", "ASD", "ASA", "ZSA", "ZSD")


@dataclass(frozen=True)
class LogLinear:
    """``mu = a log10(1 + fc_GHz) + b``, ``sigma = c log10(1 + fc_GHz) + d`` of one ``lgX``."""

    a: float
    b: float
    c: float
    d: float


#: Table 7.5-6 Part-1 (UMi street canyon NLoS): DS in s, ASD/ASA/ZSA in degrees
UMI_NLOS_LSP: dict[str, LogLinear] = {
    "DS": LogLinear(-0.22, -6.87, 0.19, 0.22),
    "ASD": LogLinear(-0.24, 1.54, 0.10, 0.33),
    "ASA": LogLinear(-0.07, 1.76, 0.05, 0.27),
    "ZSA": LogLinear(-0.03, 0.92, -0.05, 0.35),
}

#: Table 7.5-6 Part-1: cross-correlations of the lgX (the SF and K rows are unused here)
UMI_NLOS_CROSS_CORRELATION: dict[tuple[str, str], float] = {
    ("ASD", "DS"): 0.0,
    ("ASA", "DS"): 0.4,
    ("ASD", "ASA"): 0.0,
    ("ZSD", "DS"): -0.5,
    ("ZSA", "DS"): 0.0,
    ("ZSD", "ASD"): 0.5,
    ("ZSA", "ASD"): 0.5,
    ("ZSD", "ASA"): 0.0,
    ("ZSA", "ASA"): 0.2,
    ("ZSD", "ZSA"): 0.0,
}

#: Table 7.5-6 Part-1: correlation distances of the LSPs in the horizontal plane, m
UMI_NLOS_CORRELATION_DISTANCE_M: dict[str, float] = {"DS": 10.0, "ASD": 10.0, "ASA": 9.0, "ZSA": 10.0, "ZSD": 10.0}

#: Table 7.5-3: ray offset angles for a cluster with 1 degree rms angular spread, m = 1..20
RAY_OFFSETS = np.array(
    [0.0447, -0.0447, 0.1413, -0.1413, 0.2492, -0.2492, 0.3715, -0.3715, 0.5129, -0.5129,
     0.6797, -0.6797, 0.8844, -0.8844, 1.1481, -1.1481, 1.5195, -1.5195, 2.1551, -2.1551]
)

#: Table 7.5-5: rays (0-based) of the three sub-clusters of the two strongest clusters
SUBCLUSTER_RAYS = (
    (0, 1, 2, 3, 4, 5, 6, 7, 18, 19),
    (8, 9, 10, 11, 16, 17),
    (12, 13, 14, 15),
)
#: Table 7.5-5: sub-cluster delay offsets in units of c_DS
SUBCLUSTER_DELAY_FACTORS = (0.0, 1.28, 2.56)


@dataclass(frozen=True)
class UmiNlosParameters:
    """The scalar parameters of Table 7.5-6 Part-1 (and 7.5-2, 7.5-4, 7.6.3.1-2) used here."""

    n_clusters: int = 19
    rays_per_cluster: int = 20
    r_tau: float = 2.1  # delay scaling parameter
    zeta_db: float = 3.0  # per-cluster shadowing std
    c_ds_s: float = 11e-9  # cluster delay spread
    c_asd_deg: float = 10.0
    c_asa_deg: float = 22.0
    c_zsa_deg: float = 7.0
    c_phi: float = 1.273  # Table 7.5-2, NLoS, 19 clusters
    c_theta: float = 1.184  # Table 7.5-4, NLoS, 19 clusters
    zsd_sigma: float = 0.35  # Table 7.5-8
    cluster_correlation_distance_m: float = 15.0  # Table 7.6.3.1-2, UMi NLoS
    min_cluster_power_db: float = -25.0  # step 6: clusters this far below the strongest are removed
    max_asd_deg: float = 104.0  # step 4: ASD = min(ASD, 104 deg), likewise ASA
    max_zs_deg: float = 52.0  # step 4: ZSA, ZSD = min(., 52 deg)


UMI_NLOS = UmiNlosParameters()


def _fc_ghz(carrier_hz: float) -> float:
    if not carrier_hz > 0:
        raise ValueError(f"carrier_hz must be positive, got {carrier_hz}")
    return max(carrier_hz / 1e9, 2.0)  # Table 7.5-6 note 6: fc < 2 GHz uses 2 GHz for UMi


def zsd_log_mean(distance_2d_m: float, h_ut_m: float, h_bs_m: float) -> float:
    """``mu_lgZSD`` of Table 7.5-8 (UMi NLoS): ``max(-0.5, -3.1 d2D/km + 0.01 max(h_UT - h_BS, 0) + 0.2)``."""
    return max(-0.5, -3.1 * distance_2d_m / 1000.0 + 0.01 * max(h_ut_m - h_bs_m, 0.0) + 0.2)


def zod_offset_deg(distance_2d_m: float) -> float:
    """``mu_offset,ZOD`` of Table 7.5-8 (UMi NLoS): ``-10^(-1.5 log10(max(10, d2D)) + 3.3)`` degrees."""
    return -(10.0 ** (-1.5 * math.log10(max(10.0, distance_2d_m)) + 3.3))


def lsp_log_mean_std(carrier_hz: float, distance_2d_m: float, h_ut_m: float, h_bs_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-mean and log-std of the LSPs in ``LSP_NAMES`` order (Tables 7.5-6 Part-1, 7.5-8).

    Returns
    -------
    mu, sigma : np.ndarray
        ``float64 [5]``: of ``log10(DS / 1 s)`` and ``log10(angle spread / 1 deg)``.
    """
    lf = math.log10(1.0 + _fc_ghz(carrier_hz))
    mu, sigma = [], []
    for name in LSP_NAMES[:4]:
        p = UMI_NLOS_LSP[name]
        mu.append(p.a * lf + p.b)
        sigma.append(p.c * lf + p.d)
    mu.append(zsd_log_mean(distance_2d_m, h_ut_m, h_bs_m))
    sigma.append(UMI_NLOS.zsd_sigma)
    return np.array(mu), np.array(sigma)


def cross_correlation_matrix() -> np.ndarray:
    """The ``float64 [5, 5]`` correlation matrix of the ``lgX`` in ``LSP_NAMES`` order."""
    n = len(LSP_NAMES)
    c = np.eye(n)
    for (a, b), r in UMI_NLOS_CROSS_CORRELATION.items():
        i, j = LSP_NAMES.index(a), LSP_NAMES.index(b)
        c[i, j] = c[j, i] = r
    return c
