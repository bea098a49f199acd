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

Transmit energy (uplink, the device's battery): sum over its slots of power per PRB (open-loop
power control for that slot's allocation) x PRBs x slot length, / PA efficiency. ``emulated_s`` is the moment the reply is delivered; a device whose
transfer never completes (out of coverage) gets ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from common.radio.cell import DeviceLink, link_sinr, prb_gains
from common.radio.config import CellConfig
from common.radio.transfer import PDSCH, PUSCH, TransferResult, simulate_transfers
from common.runtime import torch_threads
from common.seeding import derive_seed

__all__ = ["DeviceRound", "RADIO_COLUMNS", "radio_round"]

#: the per-device columns a radio round fills (``common.records.ROUND_CORE``)
RADIO_COLUMNS = (
    "radio_slots_down", "radio_slots_up", "radio_prb_slots_down", "radio_prb_slots_up",
    "airtime_down_s", "airtime_up_s", "mcs_mean_down", "mcs_mean_up", "harq_retx",
    "bits_delivered_down", "bits_delivered_up", "energy_tx_j", "energy_compute_j",
    "prb_util_down", "prb_util_up", "emulated_compute_s", "emulated_transfer_s", "emulated_s",
)


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
    return sum(res.prbs_used) / (len(res.prbs_used) * n_prb) if res.prbs_used else math.nan


def radio_round(cell: CellConfig, devices: list[DeviceRound], seed: int, round_: int) -> list[dict[str, Any]]:
    """Price one round's transfers over the cell (on one torch thread: the slot loop is
    many small ops, which extra threads only slow down); see :func:`_radio_round`."""
    with torch_threads(1):
        return _radio_round(cell, devices, seed, round_)


def _radio_round(cell: CellConfig, devices: list[DeviceRound], seed: int, round_: int) -> list[dict[str, Any]]:
    """Price one round's transfers over the cell; one dict of ``RADIO_COLUMNS`` per device.

    Parameters
    ----------
    cell : CellConfig
    devices : list of DeviceRound
        The devices that took part (in any order; the output follows it).
    seed : int
        The scenario seed (fading, HARQ draws derive from it and ``round_``).
    round_ : int
    """
    n = len(devices)
    if n == 0:
        return []
    links = [d.link for d in devices]
    gains = prb_gains(links, cell.n_prb, seed, round_)
    sinr_dl, _ = link_sinr(cell, links, gains, "down")
    sinr_ul, tx_ul = link_sinr(cell, links, gains, "up")
    bits_down = torch.tensor([8 * d.bytes_down for d in devices], dtype=torch.int64)
    unit_bits = torch.tensor([8 * d.bytes_unit for d in devices], dtype=torch.int64)
    zeros = torch.zeros(n, dtype=torch.float64)

    # -- downlink -----------------------------------------------------------------
    share = torch.zeros(n, dtype=torch.float64)  # broadcast PRB·slots charged to each receiver
    start_dl = zeros.clone()
    bc_slots = torch.zeros(n, dtype=torch.int64)
    bc_util: list[int] = []
    if str(cell["unit_downlink"]) == "broadcast" and bool((unit_bits > 0).any()):
        rx = unit_bits > 0
        bc = simulate_transfers(
            cell, sinr_dl[rx].min(dim=0).values[None], unit_bits[rx].max()[None], zeros[:1], PDSCH, derive_seed(seed, "radio-harq-bc", round_)
        )
        n_rx = int(rx.sum())
        share[rx] = float(bc.prb_slots[0]) / n_rx
        start_dl[rx] = float(bc.finish_s[0])
        bc_slots[rx] = int(bc.slots[0])
        bc_util = bc.prbs_used
        bits_down = bits_down - unit_bits
    dl = simulate_transfers(cell, sinr_dl, bits_down, start_dl, PDSCH, derive_seed(seed, "radio-harq-down", round_))
    finish_dl = torch.where(bits_down > 0, dl.finish_s, start_dl)
    dl.prbs_used = bc_util + dl.prbs_used

    # -- compute, then uplink --------------------------------------------------------
    compute_s = torch.tensor([d.flops / d.flops_per_s for d in devices], dtype=torch.float64)
    bits_up = torch.tensor([8 * d.bytes_up for d in devices], dtype=torch.int64)
    ready = finish_dl + compute_s
    reachable = torch.isfinite(ready)
    bits_up = torch.where(reachable, bits_up, torch.zeros_like(bits_up))
    ul = simulate_transfers(cell, sinr_ul, bits_up, torch.where(reachable, ready, zeros), PUSCH, derive_seed(seed, "radio-harq-up", round_), tx_w=tx_ul)
    done = torch.where(reachable, ul.finish_s, torch.full_like(ready, math.inf))  # finish_s counts from the phase start
    done = torch.where(reachable & (bits_up == 0), ready, done)

    util_dl, util_ul = _util(dl, cell.n_prb), _util(ul, cell.n_prb)
    out = []
    for i, d in enumerate(devices):
        up_latency = float(done[i] - ready[i]) if reachable[i] else math.inf
        out.append(
            {
                "radio_slots_down": int(dl.slots[i] + bc_slots[i]),
                "radio_slots_up": int(ul.slots[i]),
                "radio_prb_slots_down": float(dl.prb_slots[i]) + float(share[i]),
                "radio_prb_slots_up": float(ul.prb_slots[i]),
                "airtime_down_s": float(dl.slots[i] + bc_slots[i]) * cell.slot_s,
                "airtime_up_s": float(ul.slots[i]) * cell.slot_s,
                "mcs_mean_down": _nan_none(float(dl.mcs_mean[i])),
                "mcs_mean_up": _nan_none(float(ul.mcs_mean[i])),
                "harq_retx": int(dl.retx[i] + ul.retx[i]),
                "bits_delivered_down": int(dl.delivered_bits[i]) + (int(unit_bits[i]) if bc_slots[i] > 0 and math.isfinite(float(start_dl[i])) else 0),
                "bits_delivered_up": int(ul.delivered_bits[i]),
                "energy_tx_j": float(ul.tx_energy_j[i]) / d.link.pa_efficiency,
                "energy_compute_j": d.flops * d.link.energy_per_flop_j,
                "prb_util_down": _nan_none(util_dl),
                "prb_util_up": _nan_none(util_ul),
                "emulated_compute_s": float(compute_s[i]),
                "emulated_transfer_s": float(finish_dl[i]) + up_latency,
                "emulated_s": float(done[i]),
            }
        )
    return out


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x
