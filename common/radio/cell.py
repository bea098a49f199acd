"""One cell: where each device sits, its path loss, and the SINR of its link per PRB.

- Position: where the device's channel realisation of the round puts it
  (``common.radio.channel``: its UE position in its task's circle for the geometric
  sources), else the centre of its task region (``common.channels.layout``); with the
  class's ``distance_m``, the point at that distance on the same bearing (path loss only:
  the channel's small-scale shape stays the task's). A moving class (``speed_mps > 0``,
  ``common.radio.mobility``) is at its track position of the round, with either fading.
- Path loss: TR 38.901 Table 7.4.1-1 basic path loss of the scenario (UMi / UMa street
  canyon / macro, NLoS, Sec. 7.4.1), computed by Sionna's ``UMiScenario`` /
  ``UMaScenario`` for the device-BS geometry; plus log-normal shadow fading (std of
  Table 7.4.1-1 unless ``shadowing_db`` says otherwise), drawn once per device from
  ``derive_seed(seed, "radio-shadowing", device_id)``; plus the class's ``body_loss_db``.
- Small-scale fading: per PRB and round, the device's own channel realisation
  (``common.radio.channel``; ``[radio] fading = "task"``), or with ``fading =
  "rayleigh"`` one i.i.d. Rayleigh ``n_rx x n_tx`` draw per PRB (:func:`prb_gains`, from
  ``derive_seed(seed, "radio-fading", round, device_id)``). One layer, transmitted on the
  dominant eigenmode and combined at the receiver (SVD precoding + MRC): the
  post-equalisation SINR gain of a PRB is the largest eigenvalue of ``H^H H``.
- Uplink power: Sionna's ``open_loop_uplink_power_control`` (TS 38.213 Sec. 7.1.1,
  P = min(P0 + alpha PL + 10 log10 #PRB, P_max)) for the allocation of each slot, spread
  evenly over its PRBs. Downlink: the BS power spread evenly over all PRBs.
- Noise: kT = -174 dBm/Hz over a PRB, times the receiver noise figure; plus the
  neighbour cells' interference per PRB (``common.radio.neighbours``), or, without the
  topology (``neighbour_rings = 0``), times the ``interference_db`` rise over thermal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from common.channels import layout
from common.radio.config import SHADOWING_STD_DB, CellConfig
from common.seeding import derive_seed

__all__ = ["DeviceLink", "device_links", "pathloss_db", "shadowing_std_db", "prb_gains", "link_sinr", "THERMAL_W_PER_HZ"]

#: thermal noise power spectral density at 290 K, W/Hz (-174 dBm/Hz)
THERMAL_W_PER_HZ = 1.380649e-23 * 290.0


@dataclass(frozen=True)
class DeviceLink:
    """The large-scale link of one device in a cell.

    Attributes
    ----------
    device_id : int
    distance_m : float
        2-D distance to the BS.
    pathloss_db : float
        Basic path loss + shadowing + body loss (dB).
    n_rx, n_tx : int
        BS and UE antennas.
    ue_power_dbm, pa_efficiency, energy_per_flop_j : float
        From the device's class.
    xy_m : tuple of float
        Position (m, BS at the origin) the path loss was computed for.
    rx_power_w : float
        Power drawn while receiving (W), from the device's class.
    """

    device_id: int
    distance_m: float
    pathloss_db: float
    n_rx: int
    n_tx: int
    ue_power_dbm: float
    pa_efficiency: float
    energy_per_flop_j: float
    xy_m: tuple[float, float] = (0.0, 0.0)
    rx_power_w: float = 0.0


@lru_cache(maxsize=4)
def _scenario(kind: str, carrier_hz: float) -> Any:
    from sionna.phy.channel.tr38901 import PanelArray, UMaScenario, UMiScenario

    omni = PanelArray(
        num_rows_per_panel=1, num_cols_per_panel=1, polarization="single", polarization_type="V", antenna_pattern="omni", carrier_frequency=carrier_hz
    )
    cls = {"umi": UMiScenario, "uma": UMaScenario}[kind]
    return cls(carrier_hz, "low", omni, omni, "uplink", enable_pathloss=True, enable_shadow_fading=False)


#: 2-D distances (m) of the path-loss table: 10 m (the 38.901 minimum) to 20 km, log-spaced
_PL_GRID_M = np.geomspace(10.0, 20_000.0, 2048)
_PL_CHUNK = 256  # UTs per Sionna topology (its set-up grows faster than linearly in UTs)


@lru_cache(maxsize=8)
def _pathloss_table(kind: str, carrier_hz: float, bs_height_m: float, ue_height_m: float) -> np.ndarray:
    """Sionna's NLoS basic path loss (dB) at ``_PL_GRID_M``, ``float64 [2048]``."""
    sc = _scenario(kind, carrier_hz)
    out = []
    for s in range(0, _PL_GRID_M.size, _PL_CHUNK):
        d = torch.as_tensor(_PL_GRID_M[s : s + _PL_CHUNK], dtype=torch.float32)
        n = d.numel()
        ut = torch.zeros(1, n, 3)
        ut[0, :, 0] = d
        ut[0, :, 2] = ue_height_m
        bs = torch.tensor([[[0.0, 0.0, bs_height_m]]])
        sc.reset_topology()
        sc.set_topology(ut, bs, torch.zeros(1, n, 3), torch.zeros(1, 1, 3), torch.zeros(1, n, 3), torch.zeros(1, n, dtype=torch.bool), los=False)
        out.append(sc.basic_pathloss[0, 0].double().numpy())
    return np.concatenate(out)


def pathloss_db(cell: CellConfig, ue_xy_m: np.ndarray) -> np.ndarray:
    """TR 38.901 NLoS basic path loss (dB), ``float64 [n]``, of UEs at ``ue_xy_m``
    (``[n, 2]`` metres, BS at the origin).

    Sionna's scenario classes evaluated once per cell on a log-spaced grid of 2-D
    distances (10 m to 20 km, 2,048 points) and interpolated in log-distance (the model
    depends on the distance and the two heights only; within 0.01 dB of a direct call,
    ``tests/test_radio_cell.py``); closer than 10 m counts as 10 m.
    """
    if ue_xy_m.shape[0] == 0:
        return np.zeros(0)
    table = _pathloss_table(str(cell["scenario"]), float(cell["carrier_hz"]), float(cell["bs_height_m"]), float(cell["ue_height_m"]))
    d = np.clip(np.linalg.norm(ue_xy_m, axis=1), _PL_GRID_M[0], _PL_GRID_M[-1])
    return np.interp(np.log(d), np.log(_PL_GRID_M), table)


@lru_cache(maxsize=65536)
def _unit_shadow(seed: int, device_id: int) -> float:
    """A device's standard-normal shadowing draw (fixed across rounds: drawn once)."""
    return float(np.random.default_rng(derive_seed(seed, "radio-shadowing", device_id)).standard_normal())


def shadowing_std_db(cell: CellConfig) -> float:
    """Shadow-fading std (dB): ``shadowing_db``, or the scenario's 38.901 NLoS value."""
    return SHADOWING_STD_DB[str(cell["scenario"])] if cell["shadowing_db"] < 0 else float(cell["shadowing_db"])


def device_links(cell: CellConfig, profiles: list[Any], seed: int, position_m: np.ndarray | None = None) -> list[DeviceLink]:
    """The large-scale link of each device (``profiles``: ``common.profiles.DeviceProfile``).

    ``position_m``: ``float64 [n, 3]`` UE positions of the round (NaN rows or None: the
    centre of the device's task region).
    """
    xy = np.zeros((len(profiles), 2))
    for i, p in enumerate(profiles):
        c = position_m[i, :2] if position_m is not None and np.all(np.isfinite(position_m[i, :2])) else layout.task_centre_m(p.task)[:2]
        d = float(p.cfg.get("distance_m", 0.0))
        xy[i] = c if d <= 0 else c / max(np.linalg.norm(c), 1e-9) * d
    # at least 10 m from the BS: the 38.901 models' minimum 2-D distance
    norm = np.linalg.norm(xy, axis=1, keepdims=True)
    xy = np.where(norm < 10.0, xy / np.maximum(norm, 1e-9) * 10.0 + (norm < 1e-9) * np.array([10.0, 0.0]), xy)
    pl = pathloss_db(cell, xy)
    std = shadowing_std_db(cell)
    out = []
    for i, p in enumerate(profiles):
        shadow = std * _unit_shadow(seed, p.device_id)
        out.append(
            DeviceLink(
                p.device_id,
                float(np.linalg.norm(xy[i])),
                float(pl[i] + shadow + float(p.cfg.get("body_loss_db", 0.0))),
                p.n_rx,
                p.n_tx,
                float(p.cfg.get("ue_power_dbm", 23.0)),
                float(p.cfg.get("pa_efficiency", 0.3)),
                float(p.cfg.get("energy_per_flop_j", 0.0)),
                (float(xy[i, 0]), float(xy[i, 1])),
                float(p.cfg.get("rx_power_w", 0.0)),
            )
        )
    return out


def prb_gains(links: list[DeviceLink], n_prb: int, seed: int, round_: int) -> np.ndarray:
    """i.i.d. Rayleigh post-equalisation gain of each device's PRBs in a round (``[radio]
    fading = "rayleigh"``), ``float64 [n, n_prb]``.

    The largest eigenvalue of ``H^H H`` for one i.i.d. CN(0, 1) ``n_rx x n_tx`` draw per
    PRB (mean about ``(sqrt(n_rx) + sqrt(n_tx))^2``); seeded per device and round.
    """
    out = np.empty((len(links), n_prb))
    for i, ln in enumerate(links):
        g = torch.Generator().manual_seed(derive_seed(seed, "radio-fading", round_, ln.device_id))
        h = torch.randn(n_prb, ln.n_rx, ln.n_tx, 2, generator=g, dtype=torch.float32) * math.sqrt(0.5)
        h = torch.complex(h[..., 0], h[..., 1])
        if ln.n_tx == 1:
            out[i] = (h.abs() ** 2).sum(dim=(1, 2)).double().numpy()
        else:
            out[i] = torch.linalg.eigvalsh(h.mH @ h)[:, -1].double().numpy()
    return out


def link_sinr(
    cell: CellConfig, links: list[DeviceLink], gains: np.ndarray, direction: str, interference_w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-PRB post-equalisation SINR (linear) at a full-band allocation, and the
    transmit power per PRB (W) for every allocation size.

    Uplink power per TS 38.213 Sec. 7.1.1 (Sionna's ``open_loop_uplink_power_control``):
    P(M) = min(P0 + alpha PL + 10 log10 M, P_max) over M allocated PRBs, so a
    power-limited device concentrates its power on a small allocation (P(M) / M grows as M
    falls); the SINR of an M-PRB allocation is ``sinr * tx[:, M] / tx[:, n_prb]``.

    Parameters
    ----------
    gains : np.ndarray
        ``float64 [n, n_prb]``: ``common.radio.channel.round_channels`` or :func:`prb_gains`.
    direction : str
        ``"up"`` (device transmits, open-loop power control) or ``"down"`` (BS transmits).
    interference_w : np.ndarray, optional
        Neighbour-cell interference per PRB after combining (W): ``[n_prb]`` at the BS
        (uplink) or ``[n, n_prb]`` at each device (downlink), ``common.radio.neighbours``.
        None: the ``interference_db`` rise over thermal.

    Returns
    -------
    sinr : np.ndarray
        ``float64 [n, n_prb]``.
    tx_w_per_prb : np.ndarray
        ``float64 [n, n_prb + 1]``: the transmitter's power on one PRB of an allocation of
        M = 0..n_prb PRBs (W; column 0 unused).
    """
    from sionna.sys import open_loop_uplink_power_control

    n, n_prb = gains.shape
    pl_db = np.array([ln.pathloss_db for ln in links], dtype=np.float64)
    if direction == "up":
        m = torch.arange(1, n_prb + 1)
        p_ut = open_loop_uplink_power_control(
            torch.pow(10.0, torch.from_numpy(pl_db) / 10.0).float()[:, None].expand(n, n_prb),
            (12 * m)[None, :].expand(n, n_prb),
            alpha=float(cell["alpha"]),
            p0_dbm=float(cell["p0_dbm"]),
            ut_max_power_dbm=torch.tensor([ln.ue_power_dbm for ln in links], dtype=torch.float32)[:, None].expand(n, n_prb),
        ).double().numpy()
        tx = np.concatenate([p_ut[:, :1], p_ut / m.numpy()[None, :]], axis=1)
        nf = float(cell["bs_noise_figure_db"])
    elif direction == "down":
        tx = np.full((n, n_prb + 1), 10 ** ((float(cell["bs_power_dbm"]) - 30.0) / 10.0) / n_prb)
        nf = float(cell["ue_noise_figure_db"])
    else:
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    thermal_w = THERMAL_W_PER_HZ * cell.prb_bandwidth_hz * 10 ** (nf / 10.0)
    if interference_w is None:
        noise_w: float | np.ndarray = thermal_w * 10 ** (float(cell["interference_db"]) / 10.0)
    else:
        noise_w = thermal_w + np.broadcast_to(interference_w, (n, n_prb))
    sinr = tx[:, -1:] * gains / (np.power(10.0, pl_db / 10.0)[:, None] * noise_w)
    return sinr, tx
