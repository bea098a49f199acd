"""One cell: where each device sits, its path loss, and the SINR of its link per PRB.

- Position: the centre of the device's channel task region (``common.channels.layout``),
  or, with the class's ``distance_m``, the point at that distance on the same bearing.
- Path loss: TR 38.901 Table 7.4.1-1 basic path loss of the scenario (UMi / UMa street
  canyon / macro, NLoS, Sec. 7.4.1), computed by Sionna's ``UMiScenario`` /
  ``UMaScenario`` for the device-BS geometry; plus log-normal shadow fading (std of
  Table 7.4.1-1 unless ``shadowing_db`` says otherwise), drawn once per device from
  ``derive_seed(seed, "radio-shadowing", device_id)``; plus the class's ``body_loss_db``.
- Small-scale fading: per PRB and round, one i.i.d. Rayleigh ``n_rx x n_tx`` realisation
  of the device's antenna configuration (block fading over a PRB and a round), drawn
  from ``derive_seed(seed, "radio-fading", round, device_id)``. One layer, transmitted on
  the dominant eigenmode and combined at the receiver (SVD precoding + MRC): the
  post-equalisation SINR gain of a PRB is the largest eigenvalue of ``H^H H``.
- Uplink power: Sionna's ``open_loop_uplink_power_control`` (TS 38.213 Sec. 7.1.1,
  P = min(P0 + alpha PL + 10 log10 #PRB, P_max)) for the allocation of each slot, spread
  evenly over its PRBs. Downlink: the BS power spread evenly over all PRBs.
- Noise: kT = -174 dBm/Hz over a PRB, times the receiver noise figure, times the
  ``interference_db`` rise over thermal from neighbour cells.
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

__all__ = ["DeviceLink", "device_links", "pathloss_db", "prb_gains", "link_sinr", "THERMAL_W_PER_HZ"]

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
    """

    device_id: int
    distance_m: float
    pathloss_db: float
    n_rx: int
    n_tx: int
    ue_power_dbm: float
    pa_efficiency: float
    energy_per_flop_j: float


@lru_cache(maxsize=4)
def _scenario(kind: str, carrier_hz: float) -> Any:
    from sionna.phy.channel.tr38901 import PanelArray, UMaScenario, UMiScenario

    omni = PanelArray(
        num_rows_per_panel=1, num_cols_per_panel=1, polarization="single", polarization_type="V", antenna_pattern="omni", carrier_frequency=carrier_hz
    )
    cls = {"umi": UMiScenario, "uma": UMaScenario}[kind]
    return cls(carrier_hz, "low", omni, omni, "uplink", enable_pathloss=True, enable_shadow_fading=False)


def pathloss_db(cell: CellConfig, ue_xy_m: np.ndarray) -> np.ndarray:
    """TR 38.901 NLoS basic path loss (dB), ``float64 [n]``, of UEs at ``ue_xy_m``
    (``[n, 2]`` metres, BS at the origin), by Sionna's scenario classes."""
    n = ue_xy_m.shape[0]
    if n == 0:
        return np.zeros(0)
    sc = _scenario(str(cell["scenario"]), float(cell["carrier_hz"]))
    ut = torch.zeros(1, n, 3)
    ut[0, :, :2] = torch.as_tensor(ue_xy_m, dtype=torch.float32)
    ut[0, :, 2] = float(cell["ue_height_m"])
    bs = torch.tensor([[[0.0, 0.0, float(cell["bs_height_m"])]]])
    sc.reset_topology()
    sc.set_topology(ut, bs, torch.zeros(1, n, 3), torch.zeros(1, 1, 3), torch.zeros(1, n, 3), torch.zeros(1, n, dtype=torch.bool), los=False)
    return sc.basic_pathloss[0, 0].double().numpy()


def device_links(cell: CellConfig, profiles: list[Any], seed: int) -> list[DeviceLink]:
    """The large-scale link of each device (``profiles``: ``common.profiles.DeviceProfile``)."""
    xy = np.zeros((len(profiles), 2))
    for i, p in enumerate(profiles):
        c = layout.task_centre_m(p.task)[:2]
        d = float(p.cfg.get("distance_m", 0.0))
        xy[i] = c if d <= 0 else c / max(np.linalg.norm(c), 1e-9) * d
    # at least 10 m from the BS: the 38.901 models' minimum 2-D distance
    norm = np.linalg.norm(xy, axis=1, keepdims=True)
    xy = np.where(norm < 10.0, xy / np.maximum(norm, 1e-9) * 10.0 + (norm < 1e-9) * np.array([10.0, 0.0]), xy)
    pl = pathloss_db(cell, xy)
    std = SHADOWING_STD_DB[str(cell["scenario"])] if cell["shadowing_db"] < 0 else float(cell["shadowing_db"])
    out = []
    for i, p in enumerate(profiles):
        shadow = std * np.random.default_rng(derive_seed(seed, "radio-shadowing", p.device_id)).standard_normal()
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
            )
        )
    return out


def prb_gains(links: list[DeviceLink], n_prb: int, seed: int, round_: int) -> torch.Tensor:
    """Post-equalisation gain of each device's PRBs in a round, ``float64 [n, n_prb]``.

    The largest eigenvalue of ``H^H H`` for one i.i.d. CN(0, 1) ``n_rx x n_tx`` draw per
    PRB (mean about ``(sqrt(n_rx) + sqrt(n_tx))^2``); seeded per device and round.
    """
    out = torch.empty(len(links), n_prb, dtype=torch.float64)
    for i, ln in enumerate(links):
        g = torch.Generator().manual_seed(derive_seed(seed, "radio-fading", round_, ln.device_id))
        h = torch.randn(n_prb, ln.n_rx, ln.n_tx, 2, generator=g, dtype=torch.float32) * math.sqrt(0.5)
        h = torch.complex(h[..., 0], h[..., 1])
        if ln.n_tx == 1:
            out[i] = (h.abs() ** 2).sum(dim=(1, 2)).double()
        else:
            out[i] = torch.linalg.eigvalsh(h.mH @ h)[:, -1].double()
    return out


def link_sinr(cell: CellConfig, links: list[DeviceLink], gains: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-PRB post-equalisation SINR (linear) at a full-band allocation, and the
    transmit power per PRB (W) for every allocation size.

    Uplink power per TS 38.213 Sec. 7.1.1 (Sionna's ``open_loop_uplink_power_control``):
    P(M) = min(P0 + alpha PL + 10 log10 M, P_max) over M allocated PRBs, so a
    power-limited device concentrates its power on a small allocation (P(M) / M grows as M
    falls); the SINR of an M-PRB allocation is ``sinr * tx[:, M] / tx[:, n_prb]``.

    Parameters
    ----------
    gains : torch.Tensor
        ``float64 [n, n_prb]`` from :func:`prb_gains`.
    direction : str
        ``"up"`` (device transmits, open-loop power control) or ``"down"`` (BS transmits).

    Returns
    -------
    sinr : torch.Tensor
        ``float64 [n, n_prb]``.
    tx_w_per_prb : torch.Tensor
        ``float64 [n, n_prb + 1]``: the transmitter's power on one PRB of an allocation of
        M = 0..n_prb PRBs (W; column 0 unused).
    """
    from sionna.sys import open_loop_uplink_power_control

    n, n_prb = gains.shape
    pl_db = torch.tensor([ln.pathloss_db for ln in links], dtype=torch.float64)
    if direction == "up":
        m = torch.arange(1, n_prb + 1)
        p_ut = open_loop_uplink_power_control(
            torch.pow(10.0, pl_db / 10.0).float()[:, None].expand(n, n_prb),
            (12 * m)[None, :].expand(n, n_prb),
            alpha=float(cell["alpha"]),
            p0_dbm=float(cell["p0_dbm"]),
            ut_max_power_dbm=torch.tensor([ln.ue_power_dbm for ln in links], dtype=torch.float32)[:, None].expand(n, n_prb),
        ).double()
        tx = torch.cat([p_ut[:, :1], p_ut / m[None, :]], dim=1)
        nf = float(cell["bs_noise_figure_db"])
    elif direction == "down":
        tx = torch.full((n, n_prb + 1), 10 ** ((float(cell["bs_power_dbm"]) - 30.0) / 10.0) / n_prb, dtype=torch.float64)
        nf = float(cell["ue_noise_figure_db"])
    else:
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    noise_w = THERMAL_W_PER_HZ * cell.prb_bandwidth_hz * 10 ** ((nf + float(cell["interference_db"])) / 10.0)
    sinr = tx[:, -1:] * gains / (torch.pow(10.0, pl_db / 10.0)[:, None] * noise_w)
    return sinr, tx
