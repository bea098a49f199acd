"""Built-in geometry-based stochastic channel model (no Sionna): source ``"gbsm"``.

A task is one *environment*: scatterer clusters at fixed positions in the global frame
around the task's UE circle (``common.channels.layout``), each scatterer with a fixed
complex gain. A UE at position ``x`` sees every scatterer ``s`` through a single-bounce
path BS <- s <- UE of delay ``tau = (|s - x| + |s - bs|) / c``; the channel is

    H(f) = sum_p g_p exp(-j 2 pi (f_c + f) tau_p) a_bs(r_bs,p) a_ue(r_ue,p)^T

with plane-wave steering vectors ``a`` (TR 38.901 eq. 7.5-22 convention, carrier
wavelength for all subcarriers: no beam squint). Because the scatterers stay put,
channels at nearby UE positions are correlated and change smoothly as a UE moves
(spatial consistency), and the delays make the response frequency selective.

Normalisation: the path gains satisfy ``sum_p |g_p|^2 = 1`` so ``E[|h_ij|^2] = 1`` over
UE positions (ensemble, not per sample); with ``los=True`` the direct path carries
``K / (1 + K)`` of it.

Task options (defaults)
-----------------------
carrier_hz (6e9), subcarrier_spacing_hz (30e3): carrier and OFDM spacing in Hz.
n_clusters (8), rays_per_cluster (10): scatterer clusters and scatterers per cluster.
cluster_spread_m (3.0): std of scatterer positions around their cluster centre, m.
cluster_min_distance_m (radius_m + 5), cluster_max_distance_m (60.0): horizontal
    distance of cluster centres from the task centre, m.
cluster_height_m ((2.0, 25.0)): range of cluster-centre heights, m.
delay_decay_ns (100.0): cluster power ~ exp(-excess delay / decay), times
shadowing_db (3.0): a log-normal per-cluster power spread (std in dB).
los (False), k_factor_db (9.0): add a direct path with Rician K-factor.
ue_rotation ("fixed"): "random" rotates each UE's array by a uniform azimuth.
Geometry and arrays: see ``layout`` (bs_height_m, ue_height_m, radius_m,
min_distance_m, max_distance_m) and ``arrays.task_array_positions`` (bs_array "upa",
ue_array "ula", spacings 0.5 wavelength, rows, orientations).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from common.channels.arrays import SPEED_OF_LIGHT, steering_vectors, steering_vectors_torch, task_array_positions
from common.channels.base import ChannelTask, register_source
from common.channels.layout import bs_position_m, task_centre_m, ue_positions_m
from common.seeding import numpy_rng

__all__ = [
    "GbsmEnvironment",
    "gbsm_environment",
    "gbsm",
    "channels_at",
    "channels_along_track",
    "linear_track",
    "subcarrier_offsets_hz",
]

_CHUNK_ELEMENTS = 1 << 22  # complex entries per matmul operand chunk (bounds memory)


@dataclass(frozen=True)
class GbsmEnvironment:
    """A task's fixed propagation environment.

    Attributes
    ----------
    carrier_hz : float
        Carrier frequency, Hz.
    wavelength_m : float
        Carrier wavelength, m.
    bs_position_m : np.ndarray
        ``float64 [3]``, BS array reference point.
    bs_antennas_m, ue_antennas_m : np.ndarray
        ``float64 [n_rx, 3]`` and ``[n_tx, 3]`` element offsets, m.
    scatterers_m : np.ndarray
        ``float64 [P, 3]`` scatterer positions, m.
    gains : np.ndarray
        ``complex128 [P]`` path gains (``sum |g|^2 = 1 - los_power``).
    cluster : np.ndarray
        ``int64 [P]`` cluster index of each scatterer.
    los_power : float
        Power of the direct path (0 for NLoS).
    """

    carrier_hz: float
    wavelength_m: float
    bs_position_m: np.ndarray
    bs_antennas_m: np.ndarray
    ue_antennas_m: np.ndarray
    scatterers_m: np.ndarray
    gains: np.ndarray
    cluster: np.ndarray
    los_power: float

    @property
    def bs_distance_m(self) -> np.ndarray:
        """``float64 [P]``: BS-to-scatterer distances, m."""
        return np.linalg.norm(self.scatterers_m - self.bs_position_m, axis=-1)

    def path_delays_s(self, positions_m: np.ndarray) -> np.ndarray:
        """Single-bounce delays ``(|s - x| + |s - bs|) / c``, ``float64 [n, P]`` in s."""
        d_ue = np.linalg.norm(self.scatterers_m[None] - positions_m[:, None], axis=-1)
        return (d_ue + self.bs_distance_m[None]) / SPEED_OF_LIGHT


def gbsm_environment(task: ChannelTask) -> GbsmEnvironment:
    """The scatterer environment of ``task`` (drawn from ``(task.seed, task.task_id)``).

    Memoised per task (tasks whose options are unhashable, e.g. lists, are rebuilt).

    Raises
    ------
    ValueError
        On invalid options (non-positive counts, negative spreads, bad ranges).
    """
    try:
        hash(task)
    except TypeError:
        return _build_environment(task)
    return _cached_environment(task)


@lru_cache(maxsize=128)
def _cached_environment(task: ChannelTask) -> GbsmEnvironment:
    return _build_environment(task)


def _build_environment(task: ChannelTask) -> GbsmEnvironment:
    carrier = float(task.option("carrier_hz", 6e9))
    if carrier <= 0:
        raise ValueError(f"carrier_hz must be positive, got {carrier}")
    wavelength = SPEED_OF_LIGHT / carrier
    n_clusters = int(task.option("n_clusters", 8))
    n_rays = int(task.option("rays_per_cluster", 10))
    if n_clusters < 1 or n_rays < 1:
        raise ValueError(f"n_clusters and rays_per_cluster must be >= 1, got {n_clusters}, {n_rays}")
    radius = float(task.option("radius_m", 5.0))
    d_min = float(task.option("cluster_min_distance_m", radius + 5.0))
    d_max = float(task.option("cluster_max_distance_m", 60.0))
    if not 0 <= d_min <= d_max:
        raise ValueError(f"expected 0 <= cluster_min_distance_m <= cluster_max_distance_m, got {d_min}, {d_max}")
    h_lo, h_hi = (float(v) for v in task.option("cluster_height_m", (2.0, 25.0)))
    spread = float(task.option("cluster_spread_m", 3.0))
    decay_s = float(task.option("delay_decay_ns", 100.0)) * 1e-9
    shadow_db = float(task.option("shadowing_db", 3.0))
    if spread < 0 or decay_s <= 0 or shadow_db < 0 or h_lo > h_hi:
        raise ValueError("cluster_spread_m, shadowing_db must be >= 0, delay_decay_ns > 0, cluster_height_m (lo, hi)")
    los = bool(task.option("los", False))
    k_lin = 10 ** (float(task.option("k_factor_db", 9.0)) / 10) if los else 0.0

    rng = numpy_rng(task.seed, "gbsm-environment", task.task_id)
    centre = task_centre_m(task)
    bs = bs_position_m(task)
    az = rng.uniform(0, 2 * np.pi, n_clusters)
    dist = rng.uniform(d_min, d_max, n_clusters)
    heights = rng.uniform(h_lo, h_hi, n_clusters)
    cl_centres = np.stack([centre[0] + dist * np.cos(az), centre[1] + dist * np.sin(az), heights], axis=-1)
    scat = np.repeat(cl_centres, n_rays, axis=0) + spread * rng.standard_normal((n_clusters * n_rays, 3))
    scat[:, 2] = np.maximum(scat[:, 2], 0.5)
    cluster = np.repeat(np.arange(n_clusters), n_rays)

    # cluster powers: exponential in excess delay, log-normal shadowing
    path_len = np.linalg.norm(cl_centres - centre, axis=-1) + np.linalg.norm(cl_centres - bs, axis=-1)
    excess_s = (path_len - path_len.min()) / SPEED_OF_LIGHT
    p_cluster = np.exp(-excess_s / decay_s) * 10 ** (shadow_db * rng.standard_normal(n_clusters) / 10)
    p_cluster = p_cluster / p_cluster.sum() / (1 + k_lin)
    phases = rng.uniform(0, 2 * np.pi, n_clusters * n_rays)
    gains = np.sqrt(p_cluster[cluster] / n_rays) * np.exp(1j * phases)

    bs_ant, ue_ant = task_array_positions(task, wavelength)
    return GbsmEnvironment(
        carrier_hz=carrier,
        wavelength_m=wavelength,
        bs_position_m=bs,
        bs_antennas_m=bs_ant,
        ue_antennas_m=ue_ant,
        scatterers_m=scat,
        gains=gains,
        cluster=cluster,
        los_power=k_lin / (1 + k_lin),
    )


def subcarrier_offsets_hz(n_subcarriers: int, spacing_hz: float) -> np.ndarray:
    """Baseband subcarrier frequencies ``(k - n_subcarriers // 2) * spacing``, ``float64 [n_sc]`` Hz.

    Same convention as Sionna's ``subcarrier_frequencies`` (DC at index ``n_sc // 2``).
    """
    if n_subcarriers < 1:
        raise ValueError(f"n_subcarriers must be >= 1, got {n_subcarriers}")
    if spacing_hz <= 0:
        raise ValueError(f"subcarrier spacing must be positive, got {spacing_hz} Hz")
    return (np.arange(n_subcarriers) - n_subcarriers // 2) * float(spacing_hz)


def _rotate_z(points: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """Rotate ``points [m, 3]`` about z by each angle in ``azimuth_rad [n]`` -> ``[n, m, 3]``."""
    c, s = np.cos(azimuth_rad)[:, None], np.sin(azimuth_rad)[:, None]
    x, y, z = points[:, 0][None], points[:, 1][None], points[:, 2][None]
    return np.stack([c * x - s * y, s * x + c * y, np.broadcast_to(z, c.shape[:1] + z.shape[1:])], axis=-1)


def channels_at(
    env: GbsmEnvironment,
    positions_m: np.ndarray,
    n_subcarriers: int | None = None,
    subcarrier_spacing_hz: float = 30e3,
    ue_azimuth_rad: np.ndarray | None = None,
) -> torch.Tensor:
    """Channel matrices of UEs at given positions in an environment.

    Parameters
    ----------
    env : GbsmEnvironment
        The task's scatterers, gains and arrays.
    positions_m : np.ndarray
        ``float [n, 3]`` UE array reference points, m.
    n_subcarriers : int, optional
        None: narrowband at the carrier. Otherwise per-subcarrier responses at the
        offsets ``subcarrier_offsets_hz(n_subcarriers, subcarrier_spacing_hz)``.
    subcarrier_spacing_hz : float, default 30e3
    ue_azimuth_rad : np.ndarray, optional
        ``float [n]`` rotation of each UE array about z (None: unrotated).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    pos = np.asarray(positions_m, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions_m must be [n, 3] in metres, got shape {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions_m contains non-finite values")
    n = pos.shape[0]
    freqs = None if n_subcarriers is None else subcarrier_offsets_hz(n_subcarriers, subcarrier_spacing_hz)
    n_rx, n_tx, n_paths = env.bs_antennas_m.shape[0], env.ue_antennas_m.shape[0], env.gains.shape[0]
    # BS side is fixed: directions BS -> scatterer
    to_scat = env.scatterers_m - env.bs_position_m
    a_bs = steering_vectors(to_scat / np.linalg.norm(to_scat, axis=-1, keepdims=True), env.bs_antennas_m, env.wavelength_m)
    a_bs_t = torch.from_numpy(np.ascontiguousarray(a_bs.T)).to(torch.complex64)  # [n_rx, P]
    los_w = np.sqrt(env.los_power)

    per_sample = n_paths * n_tx * (1 if freqs is None else len(freqs))
    chunk = max(1, _CHUNK_ELEMENTS // max(per_sample, 1))
    out = []
    for s in range(0, n, chunk):
        p = pos[s : s + chunk]
        m = p.shape[0]
        vec = env.scatterers_m[None] - p[:, None]  # [m, P, 3]
        d_ue = np.linalg.norm(vec, axis=-1)
        if np.any(d_ue < 1e-6):
            raise ValueError("a UE position coincides with a scatterer")
        u_ue = vec / d_ue[..., None]
        tau = (d_ue + env.bs_distance_m[None]) / SPEED_OF_LIGHT  # [m, P]
        if ue_azimuth_rad is None:
            a_ue = steering_vectors_torch(torch.from_numpy(u_ue).float(), env.ue_antennas_m, env.wavelength_m)  # [m, P, n_tx]
        else:
            ant = _rotate_z(env.ue_antennas_m, np.asarray(ue_azimuth_rad[s : s + chunk], float))  # [m, n_tx, 3]
            a_ue = np.exp(2j * np.pi / env.wavelength_m * np.einsum("mpk,mtk->mpt", u_ue, ant))
        coef = env.gains[None] * np.exp(-2j * np.pi * env.carrier_hz * tau)  # phase = -2 pi f tau
        if los_w:
            d_los_vec = env.bs_position_m[None] - p  # UE -> BS
            d_los = np.linalg.norm(d_los_vec, axis=-1)
            u_los_ue = d_los_vec / d_los[:, None]
            a_bs_los = steering_vectors(-u_los_ue, env.bs_antennas_m, env.wavelength_m)  # [m, n_rx]
            if ue_azimuth_rad is None:
                a_ue_los = steering_vectors(u_los_ue, env.ue_antennas_m, env.wavelength_m)
            else:
                a_ue_los = np.exp(2j * np.pi / env.wavelength_m * np.einsum("mk,mtk->mt", u_los_ue, ant))
            tau_los = d_los / SPEED_OF_LIGHT
        a_ue_t = torch.as_tensor(a_ue).to(torch.complex64)
        if freqs is None:
            c_t = torch.from_numpy(coef).to(torch.complex64)
            H = a_bs_t @ (c_t[..., None] * a_ue_t)  # [m, n_rx, n_tx]
            if los_w:
                g_los = los_w * np.exp(-2j * np.pi * env.carrier_hz * tau_los)
                H = H + torch.from_numpy(g_los[:, None, None] * a_bs_los[:, :, None] * a_ue_los[:, None, :]).to(torch.complex64)
        else:
            # phase = -2 pi (f_c + f_k) tau, split so the large carrier term stays in float64
            c_k = coef[:, None, :] * np.exp(-2j * np.pi * freqs[None, :, None] * tau[:, None, :])  # [m, K, P]
            c_t = torch.from_numpy(c_k).to(torch.complex64)
            H = a_bs_t @ (c_t[..., None] * a_ue_t[:, None])  # [m, K, n_rx, n_tx]
            if los_w:
                g_los = los_w * np.exp(-2j * np.pi * (env.carrier_hz + freqs[None, :]) * tau_los[:, None])  # [m, K]
                rank1 = a_bs_los[:, :, None] * a_ue_los[:, None, :]
                H = H + torch.from_numpy(g_los[:, :, None, None] * rank1[:, None]).to(torch.complex64)
        out.append(H)
    return torch.cat(out, dim=0).to(torch.complex64)


def _ue_azimuths(task: ChannelTask, n: int, seed: int, per_sample: bool) -> np.ndarray | None:
    mode = str(task.option("ue_rotation", "fixed"))
    if mode == "fixed":
        return None
    if mode != "random":
        raise ValueError(f"ue_rotation must be 'fixed' or 'random', got {mode!r}")
    rng = numpy_rng(seed, "gbsm-ue-rotation", task.seed, task.task_id)
    return rng.uniform(0, 2 * np.pi, n) if per_sample else np.full(n, rng.uniform(0, 2 * np.pi))


@register_source("gbsm")
def gbsm(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """``n`` channels of UEs drawn uniformly in the task's circle (see module docstring).

    Parameters
    ----------
    task : ChannelTask
        ``task_id`` (with ``task.seed``) fixes the circle and the scatterers.
    n : int
        Number of UE draws.
    seed : int
        Picks the UE positions (and rotations, if ``ue_rotation="random"``).
    n_subcarriers : int, optional
        Per-subcarrier responses at ``subcarrier_spacing_hz`` spacing.

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    env = gbsm_environment(task)
    pos = ue_positions_m(task, n, seed)
    return channels_at(
        env, pos, n_subcarriers, float(task.option("subcarrier_spacing_hz", 30e3)), _ue_azimuths(task, n, seed, True)
    )


def channels_along_track(
    task: ChannelTask, positions_m: np.ndarray, n_subcarriers: int | None = None, seed: int = 0
) -> torch.Tensor:
    """Spatially consistent channels of one UE moving through the task's environment.

    Parameters
    ----------
    task : ChannelTask
        A ``"gbsm"`` task (its scatterers stay fixed along the track).
    positions_m : np.ndarray
        ``float [n, 3]`` successive UE positions, m (e.g. from ``linear_track``).
    n_subcarriers : int, optional
        None: narrowband; otherwise per-subcarrier responses.
    seed : int, default 0
        Draws the UE array azimuth (one for the whole track) when the task option
        ``ue_rotation="random"``; unused otherwise.

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    pos = np.asarray(positions_m, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
        raise ValueError(f"positions_m must be [n, 3] metres with n >= 1, got shape {pos.shape}")
    env = gbsm_environment(task)
    az = _ue_azimuths(task, pos.shape[0], seed, False)
    return channels_at(env, pos, n_subcarriers, float(task.option("subcarrier_spacing_hz", 30e3)), az)


def linear_track(start_m: np.ndarray | tuple[float, float, float], end_m: np.ndarray | tuple[float, float, float], step_m: float) -> np.ndarray:
    """Equally spaced positions from ``start_m`` towards ``end_m`` (inclusive when it lands).

    Parameters
    ----------
    start_m, end_m : array-like of 3 floats
        Track end points, m.
    step_m : float
        Distance between successive positions, m (> 0).

    Returns
    -------
    np.ndarray
        ``float64 [n, 3]`` with ``n = floor(|end - start| / step) + 1``.
    """
    a, b = np.asarray(start_m, float), np.asarray(end_m, float)
    if a.shape != (3,) or b.shape != (3,):
        raise ValueError(f"start_m and end_m must be 3-vectors, got shapes {a.shape}, {b.shape}")
    if step_m <= 0:
        raise ValueError(f"step_m must be positive, got {step_m}")
    length = float(np.linalg.norm(b - a))
    n = int(np.floor(length / step_m + 1e-9)) + 1
    if length == 0:
        return a[None].copy()
    return a[None] + (np.arange(n) * step_m / length)[:, None] * (b - a)[None]
