"""Built-in geometry-based stochastic channel model (no Sionna): source ``"gbsm"``.

A task is one *environment*: scatterers at fixed positions in the global frame around
the task's UE circle (``common.channels.layout``), shared by all UEs of the task; a UE
at ``x`` sees each through a fixed path whose UE side follows the geometry
(``common.channels.paths``), so channels of one task are correlated and change smoothly
as a UE moves (spatial consistency), and the delays make the response frequency
selective. Two geometries, chosen by the task option ``model``:

- ``"38.901"``: calibrated to TR 38.901 UMi street canyon NLoS: 19 clusters x
  20 rays with the standard's delay / angle spreads, cluster powers and cluster spreads,
  and cluster birth and death over the 15 m correlation distance along a track
  (``common.channels.gbsm_umi``; calibration in ``docs/channel_model.md``); the
  default (``DEFAULT_MODEL``);
- ``"legacy"``: the first built-in geometry, single-bounce scatterer clusters (below),
  kept by name where its options are needed: the CSI pipeline (``los``), X-REFINE's
  frequency selectivity (``delay_decay_ns``) and the SDNet fidelity experiments, whose
  figures were measured on it.

Normalisation: path gains satisfy ``sum_p |g_p|^2 = 1`` so ``E[|h_ij|^2] = 1`` over UE
positions (ensemble, not per sample); with ``los=True`` (legacy) the direct path
carries ``K / (1 + K)`` of it. Path loss is applied elsewhere (``common.radio``).

Legacy task options (defaults)
------------------------------
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
ue_array "ula", spacings 0.5 wavelength, rows, orientations). The 38.901 model's
options are in ``common.channels.gbsm_umi``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from common.channels import paths
from common.channels.arrays import SPEED_OF_LIGHT, task_array_positions
from common.channels.base import ChannelTask, register_source
from common.channels.gbsm_umi import UmiEnvironment
from common.channels.layout import bs_position_m, task_centre_m, ue_positions_m
from common.channels.paths import PathEnvironment, subcarrier_offsets_hz
from common.seeding import numpy_rng

__all__ = [
    "MODELS",
    "DEFAULT_MODEL",
    "model_of",
    "GbsmEnvironment",
    "PathEnvironment",
    "UmiEnvironment",
    "gbsm_environment",
    "gbsm",
    "channels_at",
    "channels_along_track",
    "linear_track",
    "subcarrier_offsets_hz",
]

MODELS = ("38.901", "legacy")
DEFAULT_MODEL = "38.901"

#: a task's environment: fixed paths (legacy) or a lattice of 38.901 drops
GbsmEnvironment = PathEnvironment | UmiEnvironment


def model_of(task: ChannelTask) -> str:
    """The task's ``model`` option (default ``DEFAULT_MODEL``); ``ValueError`` naming it otherwise."""
    model = str(task.option("model", DEFAULT_MODEL))
    if model not in MODELS:
        raise ValueError(f"channels option 'model' must be one of {MODELS}, got {model!r}")
    return model


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
    if model_of(task) == "38.901":
        return UmiEnvironment(task)
    return _legacy_environment(task)


def _legacy_environment(task: ChannelTask) -> PathEnvironment:
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
    to_scat = scat - bs
    bs_distance = np.linalg.norm(to_scat, axis=-1)
    return PathEnvironment(
        carrier_hz=carrier,
        wavelength_m=wavelength,
        bs_position_m=bs,
        bs_antennas_m=bs_ant,
        ue_antennas_m=ue_ant,
        scatterers_m=scat,
        gains=gains,
        cluster=cluster,
        los_power=k_lin / (1 + k_lin),
        bs_directions=to_scat / np.linalg.norm(to_scat, axis=-1, keepdims=True),
        path_offset_m=bs_distance,  # single bounce: tau = (|s - x| + |s - bs|) / c
    )


def channels_at(
    env: GbsmEnvironment,
    positions_m: np.ndarray,
    n_subcarriers: int | None = None,
    subcarrier_spacing_hz: float = 30e3,
    ue_azimuth_rad: np.ndarray | None = None,
) -> torch.Tensor:
    """Channels of UEs at ``positions_m: float [n, 3]`` (m) in a task's environment.

    Arguments and output as ``common.channels.paths.channels_at``: ``complex64
    [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    if isinstance(env, UmiEnvironment):
        return env.channels(positions_m, n_subcarriers, subcarrier_spacing_hz, ue_azimuth_rad)
    return paths.channels_at(env, positions_m, n_subcarriers, subcarrier_spacing_hz, ue_azimuth_rad)


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
