"""Channel matrices of a fixed set of propagation paths (shared by the ``gbsm`` models).

A UE at position ``x`` sees every path ``p`` through its last scatterer ``s_p``:

    H(f) = sum_p g_p exp(-j 2 pi (f_c + f) tau_p(x)) a_bs(r_bs,p) a_ue(r_ue,p(x))^T

with ``r_ue,p(x) = (s_p - x) / |s_p - x|``, ``tau_p(x) = (|s_p - x| + offset_p) / c`` and
plane-wave steering vectors ``a`` (TR 38.901 eq. 7.5-22 convention, carrier wavelength
for all subcarriers: no beam squint), optionally plus a direct (LoS) path. Because the
scatterers stay put, channels at nearby positions are correlated and change smoothly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.channels.arrays import SPEED_OF_LIGHT, steering_vectors, steering_vectors_torch

__all__ = ["PathEnvironment", "channels_at", "checked_positions", "rotate_z", "subcarrier_offsets_hz"]

_CHUNK_ELEMENTS = 1 << 22  # complex entries per matmul operand chunk (bounds memory)


@dataclass(frozen=True)
class PathEnvironment:
    """A fixed set of propagation paths, each ending at a scatterer the UE sees.

    Path ``p`` leaves the BS along ``bs_directions[p]`` and reaches a UE at ``x`` from its
    last scatterer ``scatterers_m[p]``; its delay is
    ``tau_p(x) = (|s_p - x| + path_offset_m[p]) / c``: the BS side of the path is fixed,
    the UE side follows the geometry (single-bounce model: ``path_offset_m = |s_p - bs|``;
    multi-bounce: the rest of the path's length).

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
        ``float64 [P, 3]`` (last-bounce) scatterer positions, m.
    gains : np.ndarray
        ``complex128 [P]`` path gains (``sum |g|^2 = 1 - los_power``).
    cluster : np.ndarray
        ``int64 [P]`` cluster index of each scatterer.
    los_power : float
        Power of the direct path (0 for NLoS).
    bs_directions : np.ndarray
        ``float64 [P, 3]`` unit vectors from the BS along each path's departure.
    path_offset_m : np.ndarray
        ``float64 [P]`` path length besides the UE-to-scatterer leg, m.
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
    bs_directions: np.ndarray
    path_offset_m: np.ndarray

    def path_delays_s(self, positions_m: np.ndarray) -> np.ndarray:
        """Path delays ``(|s - x| + path_offset) / c``, ``float64 [n, P]`` in s."""
        d_ue = np.linalg.norm(self.scatterers_m[None] - positions_m[:, None], axis=-1)
        return (d_ue + self.path_offset_m[None]) / SPEED_OF_LIGHT



def subcarrier_offsets_hz(n_subcarriers: int, spacing_hz: float) -> np.ndarray:
    """Baseband subcarrier frequencies ``(k - n_subcarriers // 2) * spacing``, ``float64 [n_sc]`` Hz.

    Same convention as Sionna's ``subcarrier_frequencies`` (DC at index ``n_sc // 2``).
    """
    if n_subcarriers < 1:
        raise ValueError(f"n_subcarriers must be >= 1, got {n_subcarriers}")
    if spacing_hz <= 0:
        raise ValueError(f"subcarrier spacing must be positive, got {spacing_hz} Hz")
    return (np.arange(n_subcarriers) - n_subcarriers // 2) * float(spacing_hz)


def rotate_z(points: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """Rotate ``points [m, 3]`` about z by each angle in ``azimuth_rad [n]`` -> ``[n, m, 3]``."""
    c, s = np.cos(azimuth_rad)[:, None], np.sin(azimuth_rad)[:, None]
    x, y, z = points[:, 0][None], points[:, 1][None], points[:, 2][None]
    return np.stack([c * x - s * y, s * x + c * y, np.broadcast_to(z, c.shape[:1] + z.shape[1:])], axis=-1)


def checked_positions(positions_m: np.ndarray) -> np.ndarray:
    """``positions_m`` as ``float64 [n, 3]`` metres; ``ValueError`` on another shape or non-finite values."""
    pos = np.asarray(positions_m, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions_m must be [n, 3] in metres, got shape {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions_m contains non-finite values")
    return pos


_BS_STEERING: dict[int, tuple[PathEnvironment, torch.Tensor]] = {}


def _bs_steering(env: PathEnvironment) -> torch.Tensor:
    """``complex64 [n_rx, P]``: the BS array's response to every path's departure direction
    (fixed per environment), kept per environment object (environments are memoised, and
    called once per round and task by the radio)."""
    hit = _BS_STEERING.get(id(env))
    if hit is not None and hit[0] is env:
        return hit[1]
    a_bs = steering_vectors(env.bs_directions, env.bs_antennas_m, env.wavelength_m)
    out = torch.from_numpy(np.ascontiguousarray(a_bs.T)).to(torch.complex64)
    if len(_BS_STEERING) >= 256:
        _BS_STEERING.clear()
    _BS_STEERING[id(env)] = (env, out)
    return out


def _phase_ramp(coef: np.ndarray, freqs: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``coef[:, None, :] * exp(-2j pi freqs[None, :, None] tau[:, None, :])``: ``complex128
    [m, K, P]`` from ``coef: complex [m, P]``, ``freqs: float [K]`` (Hz) and ``tau: float
    [m, P]`` (s).

    On a uniform grid (subcarriers) by the recurrence ``c_(k+1) = c_k exp(-2j pi df tau)``:
    one complex exponential per path instead of one per path and subcarrier, with a
    relative error of order ``K`` ulps.
    """
    K = freqs.size
    if K > 2 and np.allclose(np.diff(freqs), freqs[1] - freqs[0], rtol=1e-12, atol=0.0):
        out = np.empty((coef.shape[0], K, coef.shape[1]), dtype=np.complex128)
        out[:, 0] = coef * np.exp(-2j * np.pi * freqs[0] * tau)
        rot = np.exp(-2j * np.pi * (freqs[1] - freqs[0]) * tau)
        for k in range(1, K):
            np.multiply(out[:, k - 1], rot, out=out[:, k])
        return out
    return coef[:, None, :] * np.exp(-2j * np.pi * freqs[None, :, None] * tau[:, None, :])


def channels_at(
    env: PathEnvironment,
    positions_m: np.ndarray,
    n_subcarriers: int | None = None,
    subcarrier_spacing_hz: float = 30e3,
    ue_azimuth_rad: np.ndarray | None = None,
) -> torch.Tensor:
    """Channel matrices of UEs at given positions in an environment.

    Parameters
    ----------
    env : PathEnvironment
        The paths, gains and arrays.
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
    pos = checked_positions(positions_m)
    n = pos.shape[0]
    freqs = None if n_subcarriers is None else subcarrier_offsets_hz(n_subcarriers, subcarrier_spacing_hz)
    n_rx, n_tx, n_paths = env.bs_antennas_m.shape[0], env.ue_antennas_m.shape[0], env.gains.shape[0]
    a_bs_t = _bs_steering(env)  # [n_rx, P]
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
        tau = (d_ue + env.path_offset_m[None]) / SPEED_OF_LIGHT  # [m, P]
        if ue_azimuth_rad is None:
            a_ue = steering_vectors_torch(torch.from_numpy(u_ue).float(), env.ue_antennas_m, env.wavelength_m)  # [m, P, n_tx]
        else:
            ant = rotate_z(env.ue_antennas_m, np.asarray(ue_azimuth_rad[s : s + chunk], float))  # [m, n_tx, 3]
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
            c_k = _phase_ramp(coef, freqs, tau)  # [m, K, P]
            c_t = torch.from_numpy(c_k).to(torch.complex64)
            # one GEMM over all (UE, subcarrier) pairs: a broadcast batched matmul is up to
            # 15x slower for a single-antenna UE
            H = torch.einsum("rp,mkpt->mkrt", a_bs_t, c_t[..., None] * a_ue_t[:, None])  # [m, K, n_rx, n_tx]
            if los_w:
                g_los = los_w * np.exp(-2j * np.pi * (env.carrier_hz + freqs[None, :]) * tau_los[:, None])  # [m, K]
                rank1 = a_bs_los[:, :, None] * a_ue_los[:, None, :]
                H = H + torch.from_numpy(g_los[:, :, None, None] * rank1[:, None]).to(torch.complex64)
        out.append(H)
    return torch.cat(out, dim=0).to(torch.complex64)
