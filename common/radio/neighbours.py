"""Interference from neighbour cells through Sionna's 38.901 hexagonal multicell topology.

With ``[radio] neighbour_rings = 1`` or ``2`` the cell is the centre of Sionna SYS's
hexagonal spiral grid (``sionna.sys.HexGrid``, TR 38.901 Sec. 7.2 / Table 7.2-1 layout:
1 ring = 6 neighbour sites, 2 rings = 18; inter-site distance ``isd_m``, 200 m UMi /
500 m UMa by default). The neighbour sites are omnidirectional, like ours. Per round
(block fading, as the devices' own channels; not per slot) and per PRB:

- **Uplink**: one co-channel UE per neighbour cell is active on the PRB with probability
  ``neighbour_load``, at a position ``HexGrid`` drops uniformly in its cell (one of the
  three sectors of the hexagon, picked uniformly). Its power on the PRB is Sionna's
  ``open_loop_uplink_power_control`` to its own BS for a one-PRB allocation
  (TS 38.213 Sec. 7.1.1: min(P0 + alpha PL_own, P_max)), with P_max
  ``neighbour_ue_power_dbm``. It reaches our BS through the 38.901 path loss of the
  scenario (Sionna's ``UMiScenario`` / ``UMaScenario``, ``cell.pathloss_db``) plus
  log-normal shadowing, independent per link.
- **Downlink**: each neighbour BS transmits on the PRB with probability
  ``neighbour_load``, at the BS power spread over all PRBs; it reaches each of our
  devices through the same path-loss model.

After our receiver's combining (unit-norm, matched to our link) an interferer's i.i.d.
unit-power channel adds its received power times a unit-mean exponential (Rayleigh)
draw: no array gain. Activity uses one uniform draw per (PRB, neighbour) compared with
the load, so more load only switches interferers on: interference is monotone in the
load, and zero load is no interference exactly. Every draw derives from
``derive_seed(seed, "radio-neighbours", round, link)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from common.radio.cell import pathloss_db, shadowing_std_db
from common.radio.config import CellConfig
from common.seeding import derive_seed, sionna_seeded

__all__ = ["neighbour_sites", "uplink_interference_w", "downlink_interference_w", "DEFAULT_ISD_M"]

#: TR 38.901 Table 7.2-1: inter-site distance (m)
DEFAULT_ISD_M = {"umi": 200.0, "uma": 500.0}
#: 38.901 models' minimum 2-D distance between a BS and a UE (m)
_MIN_DIST_M = 10.0


def isd_m(cell: CellConfig) -> float:
    """The cell's inter-site distance (m): ``isd_m``, or the scenario's default."""
    return float(cell["isd_m"]) or DEFAULT_ISD_M[str(cell["scenario"])]


@lru_cache(maxsize=8)
def _grid(rings: int, isd: float, bs_height_m: float):  # noqa: ANN202 - a sionna.sys.HexGrid
    from sionna.sys import HexGrid

    return HexGrid(num_rings=rings, isd=isd, cell_height=bs_height_m, precision="double")


def neighbour_sites(cell: CellConfig) -> np.ndarray:
    """The neighbour BS sites, ``float64 [c, 3]`` (m; ours at the origin, not included)."""
    grid = _grid(int(cell["neighbour_rings"]), isd_m(cell), float(cell["bs_height_m"]))
    return grid.cell_loc[1:].double().numpy()


def _pl_lin(cell: CellConfig, d_xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Linear path loss incl. shadowing of 2-D offsets ``d_xy [..., 2]`` (m) -> ``[...]``."""
    flat = d_xy.reshape(-1, 2)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    flat = np.where(norm < _MIN_DIST_M, flat / np.maximum(norm, 1e-9) * _MIN_DIST_M + (norm < 1e-9) * np.array([_MIN_DIST_M, 0.0]), flat)
    pl = pathloss_db(cell, flat) + shadowing_std_db(cell) * rng.standard_normal(flat.shape[0])
    return np.power(10.0, pl / 10.0).reshape(d_xy.shape[:-1])


def uplink_interference_w(cell: CellConfig, seed: int, round_: int) -> np.ndarray:
    """Interference power at our BS per PRB, after combining: ``float64 [n_prb]`` (W)."""
    from sionna.sys import open_loop_uplink_power_control

    n_prb, load = cell.n_prb, float(cell["neighbour_load"])
    sites = neighbour_sites(cell)
    c = sites.shape[0]
    rng = np.random.default_rng(derive_seed(seed, "radio-neighbours", round_, "up"))
    active = rng.random((n_prb, c)) < load
    grid = _grid(int(cell["neighbour_rings"]), isd_m(cell), float(cell["bs_height_m"]))
    h = float(cell["ue_height_m"])
    with sionna_seeded(derive_seed(seed, "radio-neighbours", round_, "drop")):
        ut, _, _ = grid(n_prb, 1, _MIN_DIST_M, None, h, h)  # [n_prb, cells, 3 sectors, 1, 3]
    sector = rng.integers(0, 3, (n_prb, c))
    xy = ut[:, 1:, :, 0, :2].double().numpy()[np.arange(n_prb)[:, None], np.arange(c)[None, :], sector]  # [n_prb, c, 2]
    pl_own = _pl_lin(cell, xy - sites[None, :, :2], rng)
    pl_ours = _pl_lin(cell, xy, rng)
    p_w = open_loop_uplink_power_control(
        torch.from_numpy(pl_own).float(),
        torch.full((n_prb, c), 12),
        alpha=float(cell["alpha"]),
        p0_dbm=float(cell["p0_dbm"]),
        ut_max_power_dbm=float(cell["neighbour_ue_power_dbm"]),
    ).double().numpy()
    fade = rng.exponential(1.0, (n_prb, c))
    return (active * p_w * fade / pl_ours).sum(axis=1)


def downlink_interference_w(cell: CellConfig, ue_xy_m: np.ndarray, seed: int, round_: int) -> np.ndarray:
    """Interference power at each device per PRB, after combining: ``float64 [n, n_prb]`` (W).

    ``ue_xy_m``: ``float64 [n, 2]`` our devices' positions (m, our BS at the origin).
    """
    n_prb, load = cell.n_prb, float(cell["neighbour_load"])
    sites = neighbour_sites(cell)
    c = sites.shape[0]
    rng = np.random.default_rng(derive_seed(seed, "radio-neighbours", round_, "down"))
    active = rng.random((n_prb, c)) < load
    pl = _pl_lin(cell, ue_xy_m[:, None, :] - sites[None, :, :2], rng)  # [n, c]
    p_prb = 10 ** ((float(cell["bs_power_dbm"]) - 30.0) / 10.0) / n_prb
    fade = rng.exponential(1.0, (ue_xy_m.shape[0], n_prb, c))
    return np.einsum("kc,nkc,nc->nk", active.astype(np.float64), fade, p_prb / pl)
