"""Clusters and rays of one NLoS link, TR 38.901 Sec. 7.5 steps 5-8, 10-11 (UMi NLoS).

Given the link's large-scale parameters (step 4: DS, ASD, ASA, ZSA, ZSD) and its LoS
directions, ``draw_clusters`` draws 19 clusters x 20 rays:

- step 5, eq. (7.5-1)-(7.5-2): ``tau'_n = -r_tau DS ln(X_n)``, ``X_n ~ U(0, 1)``,
  ``tau_n = sort(tau'_n - min tau')``;
- step 6, eq. (7.5-5)-(7.5-6): ``P'_n = exp(-tau_n (r_tau - 1) / (r_tau DS)) 10^(-Z_n/10)``,
  ``Z_n ~ N(0, zeta^2)``, ``P_n = P'_n / sum P'``; clusters more than 25 dB below the
  strongest are removed (their power set to 0, the rest renormalised to sum 1);
- step 7, eq. (7.5-9), (7.5-11), (7.5-13): azimuths
  ``phi'_n = 2 (AS / 1.4) sqrt(-ln(P_n / max P)) / C_phi``,
  ``phi_n = X_n phi'_n + Y_n + phi_LOS`` with ``X_n`` uniform on {-1, 1},
  ``Y_n ~ N(0, (AS / 7)^2)``, rays ``phi_n,m = phi_n + c_AS alpha_m`` (Table 7.5-3);
  eq. (7.5-14), (7.5-16), (7.5-18)-(7.5-20): zeniths
  ``theta'_n = -ZS ln(P_n / max P) / C_theta``, ``theta_n = X_n theta'_n + Y_n + theta_LOS``
  (plus ``mu_offset,ZOD`` for departure), rays ``theta_n + c_ZSA alpha_m`` (arrival) and
  ``theta_n + (3/8) 10^(mu_lgZSD) alpha_m`` (departure), folded into [0, 180] deg;
- step 8: AoD, ZoA and ZoD offsets randomly coupled to the AoA offsets within a cluster;
- step 10: random initial phases, uniform in (-pi, pi) (one polarisation: step 9's
  cross-polarisation is not modelled, the arrays are single-polarised);
- step 11, Table 7.5-5: the two strongest clusters are split into three sub-clusters
  of 10, 6 and 4 rays delayed by 0, 1.28 and 2.56 ``c_DS``.

Angles are in degrees, delays in seconds; ray powers sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.channels.tr38901_umi import (
    LSP_NAMES,
    RAY_OFFSETS,
    SUBCLUSTER_DELAY_FACTORS,
    SUBCLUSTER_RAYS,
    UMI_NLOS,
    UmiNlosParameters,
    cross_correlation_matrix,
    lsp_log_mean_std,
    zod_offset_deg,
)

__all__ = ["LargeScaleParameters", "LosDirections", "ClusterSet", "large_scale_parameters", "draw_clusters"]


@dataclass(frozen=True)
class LargeScaleParameters:
    """Step 4 of one link: ``ds_s`` in s, the angle spreads in degrees (already capped)."""

    ds_s: float
    asd_deg: float
    asa_deg: float
    zsa_deg: float
    zsd_deg: float
    zsd_log_mean: float  # mu_lgZSD, sets the ZoD ray spread (eq. 7.5-20)
    zod_offset_deg: float  # mu_offset,ZOD (Table 7.5-8)


def large_scale_parameters(
    normals: np.ndarray, carrier_hz: float, distance_2d_m: float, h_ut_m: float, h_bs_m: float, params: UmiNlosParameters = UMI_NLOS
) -> LargeScaleParameters:
    """Step 4: the LSPs of a link from independent standard normals.

    ``lgX = mu_lgX + sigma_lgX (C^(1/2) g)_X`` with ``C`` the cross-correlation matrix of
    Table 7.5-6 Part-1 (Cholesky factor) and ``mu``, ``sigma`` of Tables 7.5-6 / 7.5-8
    at ``carrier_hz`` and ``distance_2d_m``; ASD and ASA are capped at 104 deg, ZSA and
    ZSD at 52 deg.

    Parameters
    ----------
    normals : np.ndarray
        ``float [5]`` independent N(0, 1) values in ``LSP_NAMES`` order (e.g. the spatially
        correlated fields of ``common.channels.spatial_consistency`` at the link's position).
    carrier_hz, distance_2d_m, h_ut_m, h_bs_m : float
        Carrier (Hz), BS-UE horizontal distance and heights (m).
    """
    g = np.asarray(normals, float)
    if g.shape != (len(LSP_NAMES),):
        raise ValueError(f"expected {len(LSP_NAMES)} normals in {LSP_NAMES} order, got shape {g.shape}")
    mu, sigma = lsp_log_mean_std(carrier_hz, distance_2d_m, h_ut_m, h_bs_m)
    lg = mu + sigma * (np.linalg.cholesky(cross_correlation_matrix()) @ g)
    ds, asd, asa, zsa, zsd = 10.0**lg
    return LargeScaleParameters(
        ds_s=float(ds),
        asd_deg=float(min(asd, params.max_asd_deg)),
        asa_deg=float(min(asa, params.max_asd_deg)),
        zsa_deg=float(min(zsa, params.max_zs_deg)),
        zsd_deg=float(min(zsd, params.max_zs_deg)),
        zsd_log_mean=float(mu[4]),
        zod_offset_deg=zod_offset_deg(distance_2d_m),
    )


@dataclass(frozen=True)
class LosDirections:
    """LoS directions of the link, degrees: arrival at the UE, departure at the BS."""

    aoa_deg: float
    zoa_deg: float
    aod_deg: float
    zod_deg: float


@dataclass(frozen=True)
class ClusterSet:
    """19 clusters x 20 rays of one link.

    Attributes
    ----------
    cluster_delays_s, cluster_powers : np.ndarray
        ``float64 [N]``: eq. (7.5-2) delays and eq. (7.5-6) powers (removed clusters: 0).
    ray_delays_s : np.ndarray
        ``float64 [N, M]``: cluster delays plus the sub-cluster offsets of step 11.
    ray_powers : np.ndarray
        ``float64 [N, M]``: ``P_n / M`` (sums to 1).
    aoa_deg, zoa_deg, aod_deg, zod_deg : np.ndarray
        ``float64 [N, M]`` ray angles after the random coupling of step 8.
    phases_rad : np.ndarray
        ``float64 [N, M]`` initial phases of step 10.
    """

    cluster_delays_s: np.ndarray
    cluster_powers: np.ndarray
    ray_delays_s: np.ndarray
    ray_powers: np.ndarray
    aoa_deg: np.ndarray
    zoa_deg: np.ndarray
    aod_deg: np.ndarray
    zod_deg: np.ndarray
    phases_rad: np.ndarray


def _fold_zenith(theta_deg: np.ndarray) -> np.ndarray:
    """Zenith angles into [0, 180] deg (step 7: theta in [180, 360] -> 360 - theta)."""
    t = np.mod(theta_deg, 360.0)
    return np.where(t > 180.0, 360.0 - t, t)


def draw_clusters(
    rng: np.random.Generator,
    lsp: LargeScaleParameters,
    los: LosDirections,
    params: UmiNlosParameters = UMI_NLOS,
) -> ClusterSet:
    """Draw the clusters and rays of one NLoS link (module docstring for the equations).

    Parameters
    ----------
    rng : np.random.Generator
        The link's random source (derive it with ``common.seeding.numpy_rng``).
    lsp : LargeScaleParameters
        Step 4 of the link.
    los : LosDirections
        The link's LoS directions (the clusters' angles are drawn around them).
    params : UmiNlosParameters, default UMI_NLOS
        Table 7.5-6 Part-1 scalars.

    Returns
    -------
    ClusterSet
    """
    n, m = params.n_clusters, params.rays_per_cluster
    if m != RAY_OFFSETS.size:
        raise ValueError(f"Table 7.5-3 defines {RAY_OFFSETS.size} rays per cluster, got {m}")
    # step 5, eq. (7.5-1)-(7.5-2)
    tau = -params.r_tau * lsp.ds_s * np.log(rng.random(n))
    tau = np.sort(tau - tau.min())
    # step 6, eq. (7.5-5)-(7.5-6)
    z = rng.normal(0.0, params.zeta_db, n)
    p = np.exp(-tau * (params.r_tau - 1.0) / (params.r_tau * lsp.ds_s)) * 10.0 ** (-z / 10.0)
    p = p / p.sum()
    rel = p / p.max()
    kept = 10.0 * np.log10(rel) >= params.min_cluster_power_db
    powers = np.where(kept, p, 0.0)
    powers = powers / powers.sum()

    def signs() -> np.ndarray:
        return rng.choice(np.array([-1.0, 1.0]), n)

    # step 7, eq. (7.5-9), (7.5-11), (7.5-13): azimuths of arrival and departure
    def azimuths(spread: float, c_ray: float, los_deg: float, coupled: np.ndarray | None) -> np.ndarray:
        prime = 2.0 * (spread / 1.4) * np.sqrt(-np.log(rel)) / params.c_phi
        centre = signs() * prime + rng.normal(0.0, spread / 7.0, n) + los_deg
        return centre[:, None] + c_ray * (RAY_OFFSETS[None] if coupled is None else coupled)

    # step 8: per cluster, a random permutation couples the AoD / ZoA / ZoD offsets to the AoA ones
    def coupling() -> np.ndarray:
        return np.stack([RAY_OFFSETS[rng.permutation(m)] for _ in range(n)])

    aoa = azimuths(lsp.asa_deg, params.c_asa_deg, los.aoa_deg, None)
    aod = azimuths(lsp.asd_deg, params.c_asd_deg, los.aod_deg, coupling())
    # eq. (7.5-14), (7.5-16), (7.5-18): zenith of arrival
    zoa_prime = -lsp.zsa_deg * np.log(rel) / params.c_theta
    zoa_c = signs() * zoa_prime + rng.normal(0.0, lsp.zsa_deg / 7.0, n) + los.zoa_deg
    zoa = _fold_zenith(zoa_c[:, None] + params.c_zsa_deg * coupling())
    # eq. (7.5-19)-(7.5-20): zenith of departure
    zod_prime = -lsp.zsd_deg * np.log(rel) / params.c_theta
    zod_c = signs() * zod_prime + rng.normal(0.0, lsp.zsd_deg / 7.0, n) + los.zod_deg + lsp.zod_offset_deg
    zod = _fold_zenith(zod_c[:, None] + 0.375 * 10.0**lsp.zsd_log_mean * coupling())
    # step 10
    phases = rng.uniform(-np.pi, np.pi, (n, m))
    # step 11, Table 7.5-5: sub-clusters of the two strongest clusters
    ray_delays = np.repeat(tau[:, None], m, axis=1)
    for c in np.argsort(-powers)[:2]:
        for rays, factor in zip(SUBCLUSTER_RAYS, SUBCLUSTER_DELAY_FACTORS, strict=True):
            ray_delays[c, list(rays)] = tau[c] + factor * params.c_ds_s
    return ClusterSet(
        cluster_delays_s=tau,
        cluster_powers=powers,
        ray_delays_s=ray_delays,
        ray_powers=np.repeat(powers[:, None] / m, m, axis=1),
        aoa_deg=aoa,
        zoa_deg=zoa,
        aod_deg=aod,
        zod_deg=zod,
        phases_rad=phases,
    )
