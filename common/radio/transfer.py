"""Transfers of a round over a shared cell, slot by slot, with Sionna SYS.

Each slot, for the devices that have bits left and have become ready:

1. **Scheduling**: the proportional-fair rule of Sionna's ``PFSchedulerSUMIMO`` (Jalali
   et al. 2000; one OFDM-symbol group per slot, PRBs as frequency resources): the past
   rate is discounted ``T <- beta T + (1 - beta) r_last`` (starting at one) and each PRB
   goes to the device with the highest achievable rate log2(1 + SINR_PRB) over ``T``. A
   device is then trimmed to the PRBs its remaining bits need at its MCS (its best PRBs
   first), and the freed PRBs go to the next device by the same PF metric, pass after
   pass until the band is full or nobody is left waiting (``REFILL_PASSES`` at most):
   buffer-aware PF.
2. **Link adaptation**: outer-loop (OLLA, Pedersen et al. 2005; Sionna's
   ``OuterLoopLinkAdaptation`` update rule: the SINR offset falls by
   ``delta_up * BLER_t / (1 - BLER_t)`` on ACK, rises by ``delta_up`` on NACK) over
   Sionna's ``InnerLoopLinkAdaptation``: the highest MCS whose TBLER, at the last
   effective SINR minus the offset, is at most the BLER target. The offset is kept here,
   per device, so that ILLA runs on the scheduled devices only.
3. **PHY abstraction**: Sionna's ``EESM`` effective SINR over the allocated PRBs, then
   ``PHYAbstraction`` (38.214 MCS tables, 38.212 TB size and code-block segmentation,
   the PUSCH / PDSCH BLER tables): delivered TB bits, HARQ ACK/NACK, TBLER.
4. **HARQ**: a NACKed transport block is sent again (its bits stay in the buffer; no
   soft combining is credited). A device with ``MAX_CONSECUTIVE_NACK`` NACKs in a row
   is out of coverage: it gives up (``gave_up_s``; ``finish_s`` stays ``inf``).

Sionna's blocks are evaluated once on their own grids (``link_tables``, ``eesm_beta``)
and the slot loop reads them in NumPy: a Sionna block call costs ~0.1 ms of Python per
slot, the lookups a few microseconds. ``tests/test_radio_link.py`` checks the PF metric
against ``PFSchedulerSUMIMO`` and the effective SINR against ``EESM`` call for call.
Vectorised over devices; the slots are sequential (PF and OLLA carry state). Idle
stretches until the next device becomes ready are skipped, not simulated. While every
ready device is scheduled (nobody waits for PRBs) and no MCS, trim or readiness changes,
an allocation is held for up to ``[radio] hold_slots`` slots in one step (:func:`_hold`:
exact but for the PRB assignment among the scheduled devices; 1 = decide every slot).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from common.radio.config import CellConfig

__all__ = ["TransferResult", "simulate_transfers", "phy_abstraction", "eesm_db", "PUSCH", "PDSCH"]

PUSCH, PDSCH = 0, 1  # Sionna's MCS categories
MCS_TABLE = 1  # TS 38.214 Table 5.1.3.1-1 / 6.1.4.1-1 (64QAM)
REFILL_PASSES = 64
MAX_CONSECUTIVE_NACK = 32
OLLA_DELTA_UP_DB = 1.0
OLLA_OFFSET_DB = (-20.0, 20.0)


@lru_cache(maxsize=1)
def phy_abstraction() -> Any:
    """Sionna's ``PHYAbstraction`` with its default PUSCH/PDSCH BLER tables (built once,
    a few seconds), and the ``InnerLoopLinkAdaptation`` and ``EESM`` blocks on it."""
    from sionna.sys import EESM, InnerLoopLinkAdaptation, PHYAbstraction

    phy = PHYAbstraction()
    return phy, EESM(), InnerLoopLinkAdaptation


@dataclass(frozen=True)
class LinkTables:
    """Sionna SYS evaluated once on its own grid, looked up per slot.

    ``PHYAbstraction`` quantises the effective SINR to its interpolation grid (0.1 dB from
    -5 to 30 dB) before reading a BLER, and a transport block depends only on (MCS,
    allocated REs); so for ``k = 1..n_prb`` allocated PRBs and every grid SINR these are
    exactly what the blocks return per call:

    - ``mcs``: ``int64 [n_prb + 1, n_snr]``, Sionna's ``InnerLoopLinkAdaptation``;
    - ``tb_bits``: ``int64 [n_mcs, n_prb + 1]``, TS 38.214 Sec. 5.1.3.2 TB size (Sionna's
      ``TransportBlockNR``);
    - ``tbler``: ``float32 [n_mcs, n_prb + 1, n_snr]``, 1 - (1 - BLER)^C from
      ``PHYAbstraction.get_bler`` at the code-block size, as ``PHYAbstraction`` computes it.
    """

    mcs: torch.Tensor
    tb_bits: torch.Tensor
    tbler: torch.Tensor
    snr_lo_db: float
    snr_step_db: float

    def snr_index(self, sinr_db: torch.Tensor) -> torch.Tensor:
        """Grid index of SINRs in dB (clamped to the grid), ``int64``."""
        idx = torch.round((sinr_db - self.snr_lo_db) / self.snr_step_db).to(torch.int64)
        return idx.clamp(0, self.tbler.shape[-1] - 1)


@lru_cache(maxsize=8)
def link_tables(n_prb: int, re_per_prb: int, category: int, bler_target: float) -> LinkTables:
    """The :class:`LinkTables` of a numerology and link direction (built once per process)."""
    phy, _, illa_cls = phy_abstraction()
    lo, _, step = phy.snr_db_interp_min_max_delta
    n_snr = len(phy._snr_dbs_interp)
    snr_db = torch.arange(n_snr, dtype=torch.float32) * step + lo
    n_alloc = torch.arange(0, n_prb + 1)
    illa = illa_cls(phy, bler_target=bler_target)
    sinr = torch.pow(10.0, snr_db / 10.0)[None, :].expand(n_prb, n_snr).reshape(-1)
    re = (n_alloc[1:] * re_per_prb)[:, None].expand(n_prb, n_snr).reshape(-1).to(torch.int32)
    mcs = illa(sinr_eff=sinr, num_allocated_re=re, mcs_table_index=MCS_TABLE, mcs_category=category).to(torch.int64)
    mcs = torch.cat([torch.zeros(1, n_snr, dtype=torch.int64), mcs.clamp(min=0).reshape(n_prb, n_snr)])
    n_mcs = phy.bler_table_interp.shape[2]
    m = torch.arange(n_mcs)[:, None].expand(n_mcs, n_prb + 1).to(torch.int32)
    mod, rate = phy._mcs_decoder_fun(m, MCS_TABLE, category, check_index_validity=False)
    tb, cbs, ncb = phy._transport_block_info(mod, rate, mod * (n_alloc * re_per_prb)[None, :].to(torch.int32))
    shape = [n_mcs, n_prb + 1, n_snr]
    bler = phy.get_bler(
        m[:, :, None].expand(shape), MCS_TABLE, category, cbs.to(torch.int32)[:, :, None].expand(shape), torch.pow(10.0, snr_db / 10.0).expand(shape)
    )
    tbler = 1.0 - torch.pow(1.0 - bler, ncb.to(bler.dtype)[:, :, None])
    tbler = torch.where(torch.isinf(bler), bler, tbler)
    tbler[:, 0] = 1.0
    tb = tb.to(torch.int64)
    tb[:, 0] = 0
    return LinkTables(mcs, tb, tbler.float(), float(lo), float(step))


@lru_cache(maxsize=1)
def eesm_beta() -> np.ndarray:
    """Sionna's EESM calibration ``beta`` per MCS index of ``MCS_TABLE``, ``float64 [n_mcs]``."""
    _, eesm, _ = phy_abstraction()
    return eesm.beta_tensor[MCS_TABLE - 1].double().numpy()


def eesm_db(sinr: np.ndarray, used: np.ndarray, mcs: np.ndarray) -> np.ndarray:
    """Effective SINR (dB) of allocations, as Sionna's ``EESM`` computes it.

    ``-beta ln(mean over used PRBs of exp(-sinr / beta))``, clamped to Sionna's
    [-30, 30] dB, with ``beta`` of each allocation's MCS (``EESM(per_stream=False)``, one
    stream, one symbol group). ``tests/test_radio_link.py`` checks it against the block.

    Parameters
    ----------
    sinr : np.ndarray
        ``float64 [n_prb, k]`` linear SINR of each allocation's PRBs.
    used : np.ndarray
        ``bool [n_prb, k]``: the PRBs each allocation holds (at least one each).
    mcs : np.ndarray
        ``int64 [k]``.

    Returns
    -------
    np.ndarray
        ``float64 [k]`` effective SINR in dB.
    """
    beta = eesm_beta()[np.maximum(mcs, 0)]
    mean = np.where(used, np.exp(-sinr / beta[None, :]), 0.0).sum(axis=0) / used.sum(axis=0)
    eff = -beta * np.log(np.maximum(mean, 1e-300))  # exp underflow: above the clamp anyway
    return 10.0 * np.log10(np.minimum(np.maximum(eff, 1e-3), 1e3))


@dataclass
class TransferResult:
    """Per device of one transfer phase (arrays ``[n]``), and per slot of the phase.

    ``finish_s`` is measured from the phase start: the end of the slot that delivered the
    device's last bit (0 for an empty transfer, ``inf`` if it never finished). A device
    that never finished gave up at ``gave_up_s`` (after ``MAX_CONSECUTIVE_NACK`` NACKs in
    a row, or when the phase hit ``max_slots``): it is out of coverage.
    """

    slots: np.ndarray  # int64: slots in which the device had PRBs
    prb_slots: np.ndarray  # int64
    finish_s: np.ndarray  # float64
    gave_up_s: np.ndarray  # float64: inf unless it gave up
    mcs_sum: np.ndarray  # int64: sum of the MCS of its transport blocks
    retx: np.ndarray  # int64: NACKed transport blocks (sent again)
    delivered_bits: np.ndarray  # int64: of its own bits (padding not counted)
    mcs_counts: np.ndarray  # int64 [n, 32]: transport blocks per MCS index
    tx_energy_j: np.ndarray  # float64: radiated energy (with ``tx_w``), J
    prbs_used: list[int] = field(default_factory=list)  # PRBs allocated, per simulated slot
    trace: list[dict[str, np.ndarray]] = field(default_factory=list)  # per slot, when asked

    @property
    def mcs_mean(self) -> np.ndarray:
        """Mean MCS over the device's transport blocks (NaN without any)."""
        tbs = self.slots.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tbs > 0, self.mcs_sum / np.maximum(tbs, 1.0), math.nan)

    @property
    def out_of_coverage(self) -> np.ndarray:
        """``bool [n]``: gave up before its bits were delivered."""
        return np.isfinite(self.gave_up_s)


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class _Tally:
    """Per-device counts of a phase, logged per step and summed once at its end (one
    list append per step instead of seven scattered array updates)."""

    def __init__(self) -> None:
        self.log: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []

    def add(self, users: np.ndarray, n_alloc: np.ndarray, mcs: np.ndarray, nacks: np.ndarray, energy_j: np.ndarray, slots: int = 1) -> None:
        """``slots`` slots of ``users`` on ``n_alloc`` PRBs at ``mcs``, with ``nacks`` NACKed
        blocks and ``energy_j`` radiated energy in all."""
        self.log.append((users, n_alloc, mcs, np.stack([nacks.astype(np.float64), energy_j]), slots))

    def into(self, res: TransferResult, n: int) -> None:
        if not self.log:
            return
        users = np.concatenate([e[0] for e in self.log])
        w = np.concatenate([np.full(e[0].size, e[4], np.int64) for e in self.log])
        alloc = np.concatenate([e[1] for e in self.log])
        mcs = np.concatenate([e[2] for e in self.log])
        extra = np.concatenate([e[3] for e in self.log], axis=1)
        res.slots[:] = np.bincount(users, weights=w, minlength=n).astype(np.int64)
        res.prb_slots[:] = np.bincount(users, weights=w * alloc, minlength=n).astype(np.int64)
        res.mcs_sum[:] = np.bincount(users, weights=w * mcs, minlength=n).astype(np.int64)
        res.mcs_counts[:] = np.bincount(users * 32 + mcs, weights=w, minlength=n * 32).astype(np.int64).reshape(n, 32)
        res.retx[:] = np.rint(np.bincount(users, weights=extra[0], minlength=n)).astype(np.int64)
        res.tx_energy_j[:] = np.bincount(users, weights=extra[1], minlength=n)


def _hold(
    res: TransferResult,
    tally: _Tally,
    t: int,
    past: np.ndarray,
    users: np.ndarray,
    n_alloc: np.ndarray,
    mcs_u: np.ndarray,
    tbler: np.ndarray,
    eff_db: np.ndarray,
    rate_last: np.ndarray,
    remaining: np.ndarray,
    offset: np.ndarray,
    nacks: np.ndarray,
    alive: np.ndarray,
    start_slot: np.ndarray,
    tx: np.ndarray,
    rng: np.random.Generator,
    tab: LinkTables,
    snr_idx: Callable[[np.ndarray], np.ndarray],
    hold_max: int,
    max_slots: int,
    slot_s: float,
    delta_down: float,
    beta_pf: float,
    trace: bool,
) -> tuple[int, np.ndarray]:
    """Keep the allocation of the slot just simulated for the next ``h`` slots, at once.

    Called when every ready device got PRBs (PF decided which PRBs, not who is served) and
    none finished or gave up. The stretch ends before the first slot in which, slot by
    slot, the allocation would change: OLLA's offset (moved by each held slot's ACK or
    NACK) would pick another MCS or reach its clamp, a device's remaining bits fit one PRB
    fewer (it would be trimmed), a device becomes ready, ``hold_max`` or ``max_slots``; and
    after the slot in which a device finishes or reaches ``MAX_CONSECUTIVE_NACK``. Within
    it each slot's MCS, HARQ draw, delivered bits, NACK streak, OLLA offset, energy and the
    PF past rate (``T <- beta^h T + (1 - beta) sum_i beta^(h-1-i) r_i``) are what slot by
    slot gives; the one approximation is that each device keeps the PRBs of the stretch's
    first slot (slot by slot, the PF metric could hand a PRB to another of the scheduled
    devices). ``tests/test_radio_link.py`` bounds the difference to slot-by-slot
    scheduling.

    Returns the next slot and the PF past rate.
    """
    horizon = min(hold_max - 1, max_slots - t)
    waiting = alive & (start_slot >= t)
    if waiting.any():
        horizon = min(horizon, int(start_slot[waiting].min()) - t)
    if horizon <= 0:
        return t, past
    t_tb = tab.tb_bits.numpy()
    tb = t_tb[mcs_u, n_alloc]
    tb_less = t_tb[mcs_u, n_alloc - 1]  # one PRB fewer (0 for a one-PRB allocation)
    rem0 = remaining[users]
    ack = rng.random((users.size, horizon)) >= tbler[:, None]
    dec = np.where(ack, tb[:, None], 0)
    cum = np.cumsum(dec, axis=1)
    idx = np.arange(horizon)
    last_ack = np.maximum.accumulate(np.where(ack, idx, -1), axis=1)
    streak = np.where(last_ack >= 0, idx - last_ack, nacks[users][:, None] + idx + 1)
    trim = (rem0[:, None] - (cum - dec)) <= tb_less[:, None]
    # OLLA offset in force at each held slot, and the MCS ILLA would pick with it
    step = np.where(ack, -delta_down, OLLA_DELTA_UP_DB)
    off = offset[users][:, None] + np.cumsum(step, axis=1) - step
    redecide = (tab.mcs.numpy()[n_alloc[:, None], snr_idx(eff_db[:, None] - off)] != mcs_u[:, None]) | (off < OLLA_OFFSET_DB[0]) | (off > OLLA_OFFSET_DB[1])
    end = (cum >= rem0[:, None]) | (streak >= MAX_CONSECUTIVE_NACK)

    def first(mask: np.ndarray) -> np.ndarray:
        return np.where(mask.any(axis=1), mask.argmax(axis=1), horizon)

    h = int(min(first(trim).min(), first(redecide).min(), (first(end) + 1).min(), horizon))
    if h <= 0:
        return t, past
    n_ack = ack[:, :h].sum(axis=1)
    got = np.minimum(cum[:, h - 1], rem0)
    offset[users] = np.clip(off[:, h - 1] + step[:, h - 1], *OLLA_OFFSET_DB)
    nacks[users] = streak[:, h - 1]
    remaining[users] -= got
    tally.add(users, n_alloc, mcs_u, h - n_ack, h * tx[users, n_alloc] * n_alloc * slot_s, h)
    # PF: the past rate is updated at the start of each held slot with the previous slot's bits
    w = beta_pf ** np.arange(h - 1, -1, -1.0)  # weights of r_0 (rate_last) .. r_(h-1)
    past = beta_pf**h * past + (1.0 - beta_pf) * w[0] * rate_last
    if h > 1:
        past[users] += (1.0 - beta_pf) * (dec[:, : h - 1] * w[None, 1:]).sum(axis=1)
    rate_last[:] = 0.0
    rate_last[users] = dec[:, h - 1]
    finished = users[remaining[users] <= 0]
    res.finish_s[finished] = (t + h) * slot_s
    alive[finished] = False
    lost = users[nacks[users] >= MAX_CONSECUTIVE_NACK]
    res.gave_up_s[lost] = (t + h) * slot_s
    alive[lost] = False
    res.prbs_used.extend([int(n_alloc.sum())] * h)
    if trace:
        for j in range(h):
            res.trace.append({"users": users, "bits": dec[:, j], "n_prb": n_alloc, "sinr_eff": 10 ** (eff_db / 10), "tbler": tbler, "mcs": mcs_u, "held": True})
    return t + h, past


def simulate_transfers(
    cell: CellConfig,
    sinr: torch.Tensor | np.ndarray,
    bits: torch.Tensor | np.ndarray,
    start_s: torch.Tensor | np.ndarray,
    category: int,
    seed: int,
    trace: bool = False,
    tx_w: torch.Tensor | np.ndarray | None = None,
) -> TransferResult:
    """Deliver ``bits[u]`` to or from each device over the cell's PRBs.

    Parameters
    ----------
    cell : CellConfig
    sinr : array
        ``float64 [n, n_prb]``: each device's post-equalisation SINR per PRB (linear).
    bits : array
        ``int64 [n]``: bits to deliver (0: nothing; costs nothing).
    start_s : array
        ``float64 [n]``: when each device's data is ready, from the phase start (s).
    category : int
        ``PUSCH`` (uplink) or ``PDSCH`` (downlink): the BLER tables and MCS table.
    seed : int
        Seeds the HARQ draws, so a phase is reproducible.
    tx_w : array, optional
        ``float64 [n, n_prb + 1]``: transmit power per PRB for an allocation of M PRBs
        (``common.radio.cell.link_sinr``); ``sinr`` is then the SINR of a full-band
        allocation, an M-PRB allocation gets ``tx_w[:, M] / tx_w[:, n_prb]`` of it, and
        ``tx_energy_j`` sums power x PRBs x slot. None: the same power per PRB always.
    trace : bool
        Keep, per slot, the scheduled devices' delivered bits, PRBs, effective SINR,
        TBLER and MCS, and the PF past rate of every device (for tests).
    """
    sinr = _np(sinr).astype(np.float64)
    n, n_prb = sinr.shape
    slot_s = cell.slot_s
    bler_target = float(cell["bler_target"])
    tab = link_tables(n_prb, cell.re_per_prb, category, bler_target)
    t_mcs, t_tb, t_tbler = tab.mcs.numpy(), tab.tb_bits.numpy(), tab.tbler.numpy()
    n_snr = t_tbler.shape[-1]
    lo, step = tab.snr_lo_db, tab.snr_step_db

    def snr_idx(db: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(np.rint((db - lo) / step).astype(np.int64), 0), n_snr - 1)

    delta_down = OLLA_DELTA_UP_DB * bler_target / (1.0 - bler_target)
    rng = np.random.Generator(np.random.PCG64(int(seed) % (2**63)))

    remaining = _np(bits).astype(np.int64).copy()
    start_slot = np.ceil(_np(start_s).astype(np.float64) / slot_s - 1e-9).astype(np.int64)
    res = TransferResult(
        slots=np.zeros(n, np.int64),
        prb_slots=np.zeros(n, np.int64),
        finish_s=np.where(remaining > 0, math.inf, 0.0),
        gave_up_s=np.full(n, math.inf),
        mcs_sum=np.zeros(n, np.int64),
        retx=np.zeros(n, np.int64),
        delivered_bits=np.zeros(n, np.int64),
        mcs_counts=np.zeros((n, 32), np.int64),
        tx_energy_j=np.zeros(n),
    )
    if n == 0 or not (remaining > 0).any():
        return res
    tx = _np(tx_w).astype(np.float64) if tx_w is not None else np.ones((n, n_prb + 1))
    conc_db = 10.0 * np.log10(tx / tx[:, -1:])  # [n, n_prb + 1]: dB gain of an M-PRB allocation
    conc_lin = tx / tx[:, -1:]
    rate_t = np.ascontiguousarray(np.log2(1.0 + sinr).T)  # [n_prb, n] achievable bit/RE: the PF input
    sinr_t = np.ascontiguousarray(sinr.T)  # [n_prb, n]
    # CQI before the first transport block: the mean SINR over the band, in dB
    sinr_eff_db = 10.0 * np.log10(np.maximum(sinr.mean(axis=1), 1e-6))
    offset = np.zeros(n)
    nacks = np.zeros(n, np.int64)
    alive = remaining > 0
    # Sionna PFSchedulerSUMIMO state: beta-discounted past rate, initialised to one
    beta_pf = float(cell["pf_beta"])
    hold_max = int(cell["hold_slots"])
    past = np.ones(n)
    rate_last = np.zeros(n)
    off_lo, off_hi = OLLA_OFFSET_DB
    tally = _Tally()
    bits0 = remaining.copy()
    t = 0
    max_slots = int(cell["max_slots"])
    while t < max_slots:
        ready = alive & (start_slot <= t)
        if not ready.any():
            waiting = alive & (start_slot > t)
            if not waiting.any():
                break
            t = int(start_slot[waiting].min())  # skip idle slots
            rate_last[:] = 0.0
            continue
        # PF metric exactly as Sionna's PFSchedulerSUMIMO: past <- beta past + (1 - beta) last
        past = beta_pf * past + (1.0 - beta_pf) * rate_last
        cand_users = np.flatnonzero(ready)
        m_all = rate_t * (ready / past)  # [n_prb, n]: not ready -> 0, as Sionna's rate x ready input
        owner = np.full(n_prb, -1, np.int64)
        for _ in range(REFILL_PASSES):
            free = np.flatnonzero(owner < 0)
            if free.size == 0:
                break
            m = m_all[free]
            best = m.argmax(axis=1)
            ok = m[np.arange(free.size), best] > 0
            if not ok.any():
                break
            cand = np.full(n_prb, -1, np.int64)
            cand[free[ok]] = best[ok]
            users = np.flatnonzero(np.bincount(cand[cand >= 0], minlength=n))
            onehot = cand[:, None] == users[None, :]  # [n_prb, k]
            n_alloc = onehot.sum(axis=0)
            # provisional MCS at this allocation; trim each user to the PRBs its buffer needs
            mcs_u = t_mcs[n_alloc, snr_idx(sinr_eff_db[users] - offset[users] + conc_db[users, n_alloc])]
            need = (t_tb[mcs_u, 1:] < remaining[users][:, None]).sum(axis=1) + 1
            if (need >= n_alloc).all():  # nobody is trimmed: every candidate keeps its PRBs
                owner = np.where(cand >= 0, cand, owner)
                break
            g = np.where(onehot, sinr_t[:, users], -1.0)
            rank = np.argsort(np.argsort(-g, axis=0, kind="stable"), axis=0, kind="stable")  # 0 = the user's best PRB
            keep = onehot & (rank < np.minimum(need, n_alloc)[None, :])
            owner = np.where(keep.any(axis=1), users[keep.argmax(axis=1)], owner)
            m_all[:, users] = -1.0
        users = np.flatnonzero(np.bincount(owner[owner >= 0], minlength=n))
        onehot = owner[:, None] == users[None, :]  # [n_prb, k]
        n_alloc = onehot.sum(axis=0)
        mcs_u = t_mcs[n_alloc, snr_idx(sinr_eff_db[users] - offset[users] + conc_db[users, n_alloc])]
        # Sionna's EESM over the allocated PRBs (at the allocation's power concentration)
        eff_db = eesm_db(sinr_t[:, users] * conc_lin[users, n_alloc][None, :], onehot, mcs_u)
        tbler = t_tbler[mcs_u, n_alloc, snr_idx(eff_db)]
        ack = rng.random(users.size) >= tbler  # PHYAbstraction's HARQ draw
        decoded = np.where(ack, t_tb[mcs_u, n_alloc], 0)
        # OLLA offset update and the new effective-SINR report of the scheduled devices
        offset[users] = np.minimum(np.maximum(np.where(ack, offset[users] - delta_down, offset[users] + OLLA_DELTA_UP_DB), off_lo), off_hi)
        sinr_eff_db[users] = eff_db - conc_db[users, n_alloc]  # the report, normalised to a full-band allocation
        nacks[users] = np.where(ack, 0, nacks[users] + 1)
        got = np.minimum(decoded, remaining[users])
        remaining[users] -= got
        tally.add(users, n_alloc, mcs_u, ~ack, tx[users, n_alloc] * n_alloc * slot_s)
        done = users[remaining[users] <= 0]
        res.finish_s[done] = (t + 1) * slot_s
        alive[done] = False
        lost = users[nacks[users] >= MAX_CONSECUTIVE_NACK]  # out of coverage: gives up
        res.gave_up_s[lost] = (t + 1) * slot_s
        alive[lost] = False
        rate_last[:] = 0.0
        rate_last[users] = decoded
        res.prbs_used.append(int(n_alloc.sum()))
        if trace:
            res.trace.append(
                {"users": users, "bits": decoded, "n_prb": n_alloc, "sinr_eff": 10 ** (eff_db / 10), "tbler": tbler, "mcs": mcs_u, "pf_past": past.copy()}
            )
        t += 1
        if hold_max > 1 and users.size == cand_users.size and not done.size and not lost.size:
            t, past = _hold(
                res, tally, t, past, users, n_alloc, mcs_u, tbler, eff_db, rate_last, remaining, offset, nacks, alive, start_slot, tx, rng, tab, snr_idx, hold_max, max_slots, slot_s, delta_down, beta_pf, trace
            )
    tally.into(res, n)
    res.delivered_bits[:] = bits0 - remaining
    stuck = alive & (remaining > 0)  # max_slots reached
    res.gave_up_s[stuck] = max(t, int(start_slot[stuck].max(initial=0))) * slot_s
    return res
