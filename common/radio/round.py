"""One round of a fleet over the cell: downlink, compute, uplink; airtime and energy.

The round's timeline, per device (emulated seconds from the round start):

1. **Downlink** (PDSCH): every participating device receives its serialized round
   message (``8 * bytes_down`` bits). With ``unit_downlink = "broadcast"`` the learngene
   unit (``bytes_unit``) is first sent once to all its receivers at the MCS the weakest
   of them decodes (the broadcast link's per-PRB SINR is the receivers' minimum), each
   receiver is charged an equal share of its PRB·slots, and the rest of each message
   follows by unicast. The downlink ends when the device's last bit is delivered.
2. **Compute**: ``flops / flops_per_s`` seconds; ``flops * energy_per_flop_j`` joules.
3. **Uplink** (PUSCH): the reply (``8 * bytes_up`` bits) from the moment the device is
   ready; devices share the PRBs with whoever is uploading at the same time.

Transmit energy (uplink, the device's battery): sum over its slots of power per PRB
(open-loop power control for that slot's allocation) x PRBs x slot length, / PA
efficiency. Receive energy (downlink): the class's ``rx_power_w`` x downlink airtime.
``emulated_s`` is the moment the reply is delivered.

**Out of coverage**: a device whose downlink or uplink gives up
(``common.radio.transfer.MAX_CONSECUTIVE_NACK`` NACKs in a row) is out of coverage:
its ``emulated_s`` is the moment it gave up (after a failed downlink it neither computes
nor sends), its slots, bits and energy up to then are counted, and its row says
``OUT_OF_COVERAGE`` (the server records status ``out_of_coverage``). A broadcast that
gives up (its weakest receiver is out of coverage) is followed by unicasts of the unit.

:func:`price_round` is the whole pricing of a fleet round: each device's channel
realisation (``common.radio.channel``, or i.i.d. Rayleigh with ``fading =
"rayleigh"``), its large-scale link at its position (``common.radio.cell``), the
neighbour cells' interference (``common.radio.neighbours``, with ``neighbour_rings``),
then :func:`radio_round`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.radio.cell import DeviceLink, device_links, link_sinr, prb_gains
from common.radio.config import CellConfig
from common.radio.mobility import moving_positions_m
from common.radio.transfer import PDSCH, PUSCH, TransferResult, simulate_transfers
from common.runtime import torch_threads
from common.seeding import derive_seed

__all__ = ["DeviceRound", "RADIO_COLUMNS", "OUT_OF_COVERAGE", "radio_round", "price_round"]

#: the per-device columns a radio round fills (``common.records.ROUND_CORE``)
RADIO_COLUMNS = (
    "radio_slots_down", "radio_slots_up", "radio_prb_slots_down", "radio_prb_slots_up",
    "airtime_down_s", "airtime_up_s", "mcs_mean_down", "mcs_mean_up", "harq_retx",
    "bits_delivered_down", "bits_delivered_up", "energy_tx_j", "energy_rx_j", "energy_compute_j",
    "prb_util_down", "prb_util_up", "emulated_compute_s", "emulated_transfer_s", "emulated_s",
)
#: key of a device's result dict: True when its transfer gave up (not a column)
OUT_OF_COVERAGE = "out_of_coverage"


@dataclass(frozen=True)
class DeviceRound:
    """What one participating device moved and ran in a round.

    Attributes
    ----------
    link : DeviceLink
    bytes_down, bytes_unit, bytes_up : int
        Serialized message down, of it the learngene unit, reply up (0: no reply).
    flops : int
    flops_per_s : float
    """

    link: DeviceLink
    bytes_down: int
    bytes_unit: int
    bytes_up: int
    flops: int
    flops_per_s: float


def _util(res: TransferResult, n_prb: int) -> float:
    return float(res.prbs_used.sum()) / (res.prbs_used.size * n_prb) if res.prbs_used.size else math.nan


def price_round(cell: CellConfig, profiles: list[Any], rows: list[dict[str, Any]], seed: int, round_: int) -> list[dict[str, Any]]:
    """Airtime, energy and emulated time of a fleet round's devices over the cell.

    Parameters
    ----------
    cell : CellConfig
    profiles : list of common.profiles.DeviceProfile
        The devices that took part.
    rows : list of dict
        Their rows: ``bytes_down``, ``bytes_unit``, ``bytes_up`` (0 without a reply),
        ``flops``, ``status`` (a ``timeout`` sent nothing up).
    seed : int
        The scenario seed.
    round_ : int

    Returns
    -------
    list of dict
        ``RADIO_COLUMNS`` and ``OUT_OF_COVERAGE`` per device, in the order given.
    """
    with torch_threads(1):
        if str(cell["fading"]) == "task" and profiles:
            from common.radio.channel import round_channels

            ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, seed, round_)
            links = device_links(cell, profiles, seed, ch.position_m)
            gains: np.ndarray | None = ch.gains
        else:
            links, gains = device_links(cell, profiles, seed, moving_positions_m(profiles, seed, round_)), None
        devices = [
            DeviceRound(
                link,
                int(r.get("bytes_down") or 0),
                int(r.get("bytes_unit") or 0),
                int(r.get("bytes_up") or 0) if r["status"] != "timeout" else 0,
                int(r.get("flops") or 0),
                float(p.cfg["flops_per_s"]),
            )
            for link, p, r in zip(links, profiles, rows)
        ]
        return _radio_round(cell, devices, seed, round_, gains)


def radio_round(cell: CellConfig, devices: list[DeviceRound], seed: int, round_: int, gains: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Price one round's transfers over the cell (on one torch thread: many small ops,
    which extra threads only slow down); see :func:`_radio_round`."""
    with torch_threads(1):
        return _radio_round(cell, devices, seed, round_, gains)


def _radio_round(cell: CellConfig, devices: list[DeviceRound], seed: int, round_: int, gains: np.ndarray | None) -> list[dict[str, Any]]:
    """Price one round's transfers over the cell; one dict of ``RADIO_COLUMNS`` (and
    ``OUT_OF_COVERAGE``) per device.

    Parameters
    ----------
    cell : CellConfig
    devices : list of DeviceRound
        The devices that took part (in any order; the output follows it).
    seed : int
        The scenario seed (fading, interference, HARQ draws derive from it and ``round_``).
    round_ : int
    gains : np.ndarray, optional
        ``float64 [n, n_prb]`` per-PRB gains of the devices' channels; None: i.i.d.
        Rayleigh (:func:`common.radio.cell.prb_gains`).
    """
    n = len(devices)
    if n == 0:
        return []
    links = [d.link for d in devices]
    if gains is None:
        gains = prb_gains(links, cell.n_prb, seed, round_)
    i_ul = i_dl = None
    if int(cell["neighbour_rings"]) > 0:
        from common.radio.neighbours import downlink_interference_w, uplink_interference_w

        i_ul = uplink_interference_w(cell, seed, round_)
        i_dl = downlink_interference_w(cell, np.array([ln.xy_m for ln in links]), seed, round_)
    sinr_dl, _ = link_sinr(cell, links, gains, "down", i_dl)
    sinr_ul, tx_ul = link_sinr(cell, links, gains, "up", i_ul)
    bits_down = np.array([8 * d.bytes_down for d in devices], dtype=np.int64)
    unit_bits = np.array([8 * d.bytes_unit for d in devices], dtype=np.int64)
    zeros = np.zeros(n)

    # -- downlink -----------------------------------------------------------------
    share = np.zeros(n)  # broadcast PRB·slots charged to each receiver
    start_dl = zeros.copy()
    bc_slots = np.zeros(n, dtype=np.int64)
    bc_util = np.zeros(0, np.int64)
    bc_ok = False
    if str(cell["unit_downlink"]) == "broadcast" and (unit_bits > 0).any():
        rx = unit_bits > 0
        bc = simulate_transfers(cell, sinr_dl[rx].min(axis=0)[None], unit_bits[rx].max()[None], zeros[:1], PDSCH, derive_seed(seed, "radio-harq-bc", round_))
        share[rx] = float(bc.prb_slots[0]) / int(rx.sum())
        bc_slots[rx] = int(bc.slots[0])
        bc_util = bc.prbs_used
        bc_ok = math.isfinite(float(bc.finish_s[0]))
        start_dl[rx] = float(bc.finish_s[0]) if bc_ok else float(bc.gave_up_s[0])
        if bc_ok:
            bits_down = bits_down - unit_bits
    dl = simulate_transfers(cell, sinr_dl, bits_down, start_dl, PDSCH, derive_seed(seed, "radio-harq-down", round_))
    finish_dl = np.where(bits_down > 0, dl.finish_s, start_dl)
    lost_dl = dl.out_of_coverage
    dl.prbs_used = np.concatenate([bc_util, dl.prbs_used])

    # -- compute, then uplink --------------------------------------------------------
    compute_s = np.array([d.flops / d.flops_per_s for d in devices], dtype=np.float64)
    bits_up = np.array([8 * d.bytes_up for d in devices], dtype=np.int64)
    ready = np.where(lost_dl, dl.gave_up_s, finish_dl + compute_s)
    bits_up = np.where(lost_dl, 0, bits_up)
    ul = simulate_transfers(cell, sinr_ul, bits_up, ready, PUSCH, derive_seed(seed, "radio-harq-up", round_), tx_w=tx_ul)
    lost_ul = ul.out_of_coverage
    done = np.where(bits_up > 0, np.where(lost_ul, ul.gave_up_s, ul.finish_s), ready)  # phase times count from the round start
    lost = lost_dl | lost_ul

    util_dl, util_ul = _util(dl, cell.n_prb), _util(ul, cell.n_prb)
    mcs_dl, mcs_ul = dl.mcs_mean, ul.mcs_mean
    out = []
    for i, d in enumerate(devices):
        out.append(
            {
                "radio_slots_down": int(dl.slots[i] + bc_slots[i]),
                "radio_slots_up": int(ul.slots[i]),
                "radio_prb_slots_down": float(dl.prb_slots[i]) + float(share[i]),
                "radio_prb_slots_up": float(ul.prb_slots[i]),
                "airtime_down_s": float(dl.slots[i] + bc_slots[i]) * cell.slot_s,
                "airtime_up_s": float(ul.slots[i]) * cell.slot_s,
                "mcs_mean_down": _nan_none(float(mcs_dl[i])),
                "mcs_mean_up": _nan_none(float(mcs_ul[i])),
                "harq_retx": int(dl.retx[i] + ul.retx[i]),
                "bits_delivered_down": int(dl.delivered_bits[i]) + (int(unit_bits[i]) if bc_ok and unit_bits[i] > 0 else 0),
                "bits_delivered_up": int(ul.delivered_bits[i]),
                "energy_tx_j": float(ul.tx_energy_j[i]) / d.link.pa_efficiency,
                "energy_rx_j": d.link.rx_power_w * float(dl.slots[i] + bc_slots[i]) * cell.slot_s,
                "energy_compute_j": (d.flops if not lost_dl[i] else 0) * d.link.energy_per_flop_j,
                "prb_util_down": _nan_none(util_dl),
                "prb_util_up": _nan_none(util_ul),
                "emulated_compute_s": float(compute_s[i]) if not lost_dl[i] else 0.0,
                "emulated_transfer_s": float(done[i]) - (float(compute_s[i]) if not lost_dl[i] else 0.0),
                "emulated_s": float(done[i]),
                OUT_OF_COVERAGE: bool(lost[i]),
            }
        )
    return out


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x
