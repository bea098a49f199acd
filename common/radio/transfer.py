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
and the slot loop reads them: a Sionna block call costs ~0.1 ms of Python per slot, a
lookup nanoseconds. The slot loop itself is compiled with Numba (``_slot_loop``; ~10 us
a slot at 1,000 devices and 25 PRBs, against ~0.3 ms for the same loop in NumPy, with
bit-identical output). ``tests/test_radio_link.py`` checks the PF metric and state
against ``PFSchedulerSUMIMO`` and the effective SINR against ``EESM`` call for call. The
slots are sequential (PF and OLLA carry state); idle stretches until the next device
becomes ready are skipped, not simulated. While every ready device is scheduled (nobody
waits for PRBs) and no MCS, trim or readiness changes, an allocation is held for up to
``[radio] hold_slots`` slots in one step (:func:`_hold`: exact but for the PRB assignment
among the scheduled devices; 1 = decide every slot).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit

from common.fingerprint import code_fingerprint
from common.radio.config import CellConfig
from common.runtime import cache_root

__all__ = ["TransferResult", "simulate_transfers", "phy_abstraction", "eesm_db", "PUSCH", "PDSCH"]

PUSCH, PDSCH = 0, 1  # Sionna's MCS categories
MCS_TABLE = 1  # TS 38.214 Table 5.1.3.1-1 / 6.1.4.1-1 (64QAM)
REFILL_PASSES = 64
MAX_CONSECUTIVE_NACK = 32
OLLA_DELTA_UP_DB = 1.0
OLLA_OFFSET_DB = (-20.0, 20.0)
TRACE_ROWS = 50_000  # most slots a trace keeps


@lru_cache(maxsize=1)
def phy_abstraction() -> Any:
    """Sionna's ``PHYAbstraction`` with its default PUSCH/PDSCH BLER tables (built once,
    7-40 s on 2 cores) and the ``InnerLoopLinkAdaptation`` class that runs on it."""
    from sionna.sys import InnerLoopLinkAdaptation, PHYAbstraction

    return PHYAbstraction(), InnerLoopLinkAdaptation


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


def _link_tables_path(n_prb: int, re_per_prb: int, category: int, bler_target: float) -> Path:
    """Where :func:`link_tables` keeps a table set: keyed by its arguments, the MCS table,
    the Sionna release and this module's source (``common.fingerprint``)."""
    key = f"{n_prb}/{re_per_prb}/{category}/{float(bler_target)!r}/{MCS_TABLE}/{importlib.metadata.version('sionna-no-rt')}/{code_fingerprint('common.radio.transfer')}"
    return cache_root() / "radio" / f"link_tables_{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.npz"


@lru_cache(maxsize=8)
def link_tables(n_prb: int, re_per_prb: int, category: int, bler_target: float) -> LinkTables:
    """The :class:`LinkTables` of a numerology and link direction: from the artifact cache
    (``<cache_root>/radio/``) when there, else built from Sionna (building
    ``PHYAbstraction`` takes 7-40 s on 2 cores) and cached; once per process either way."""
    path = _link_tables_path(n_prb, re_per_prb, category, bler_target)
    try:
        with np.load(path) as z:
            return LinkTables(torch.from_numpy(z["mcs"]), torch.from_numpy(z["tb_bits"]), torch.from_numpy(z["tbler"]), float(z["snr_lo_db"]), float(z["snr_step_db"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # not cached yet, or a torn / foreign file: rebuild
        pass
    tab = _build_link_tables(n_prb, re_per_prb, category, bler_target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, mcs=tab.mcs.numpy(), tb_bits=tab.tb_bits.numpy(), tbler=tab.tbler.numpy(), snr_lo_db=tab.snr_lo_db, snr_step_db=tab.snr_step_db)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
    except OSError:  # a read-only cache: keep the tables in memory only
        pass
    return tab


def _build_link_tables(n_prb: int, re_per_prb: int, category: int, bler_target: float) -> LinkTables:
    """:class:`LinkTables` from Sionna's blocks (see there)."""
    phy, illa_cls = phy_abstraction()
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
    from sionna.sys import EESM

    return EESM().beta_tensor[MCS_TABLE - 1].double().numpy()


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
    prbs_used: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # PRBs allocated, per simulated slot
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


@njit(cache=True)
def _snr_idx(db: float, lo: float, step: float, n_snr: int) -> int:
    """Grid index of an SINR in dB on the BLER tables' grid (clamped)."""
    return min(max(int(np.rint((db - lo) / step)), 0), n_snr - 1)


@njit(cache=True)
def _eesm_one_db(sinr_col: np.ndarray, used: np.ndarray, scale: float, beta: float) -> float:
    """Sionna's EESM of one allocation: ``sinr_col [n_prb]`` linear, ``used [n_prb]`` bool,
    each used PRB's SINR times ``scale`` (power concentration), ``beta`` of its MCS; dB."""
    acc = 0.0
    cnt = 0
    for p in range(sinr_col.size):
        if used[p]:
            acc += math.exp(-(sinr_col[p] * scale) / beta)
            cnt += 1
    eff = -beta * math.log(max(acc / cnt, 1e-300))  # exp underflow: above the clamp anyway
    return 10.0 * math.log10(min(max(eff, 1e-3), 1e3))


def eesm_db(sinr: np.ndarray, used: np.ndarray, mcs: np.ndarray) -> np.ndarray:
    """Effective SINR (dB) of allocations, as Sionna's ``EESM`` computes it (the slot
    loop's own function, :func:`_eesm_one_db`).

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
    beta = eesm_beta()
    sinr, used = np.asarray(sinr, np.float64), np.asarray(used, np.bool_)
    return np.array([_eesm_one_db(np.ascontiguousarray(sinr[:, j]), np.ascontiguousarray(used[:, j]), 1.0, beta[max(int(mcs[j]), 0)]) for j in range(sinr.shape[1])])


@njit(cache=True)
def _pf_choices(rate: np.ndarray, rate_max: np.ndarray, w: np.ndarray, free: np.ndarray, best: np.ndarray, choice: np.ndarray) -> None:
    """Each free PRB's device with the largest PF metric ``rate[u, p] * w[u]`` (the first of
    equals, as ``argmax``; -1 when no metric is positive), in one sweep over the devices.

    A device whose best metric on any PRB, ``rate_max[u] * w[u]``, does not exceed the
    lowest best-so-far of the free PRBs cannot win one (rounding is monotone), so it is
    skipped without reading its row.

    ``rate``: ``float64 [n, n_prb]``; ``rate_max``: ``float64 [n]``, its row maxima;
    ``w``: ``float64 [n]`` (<= 0: not a candidate); ``free``: ``bool [n_prb]``; writes
    ``best: float64 [n_prb]`` and ``choice: int64 [n_prb]`` (-1 on PRBs not free).
    """
    n, n_prb = rate.shape
    best[:] = 0.0
    choice[:] = -1
    floor = 0.0  # the lowest best-so-far over the free PRBs
    for u in range(n):
        wu = w[u]
        if wu <= 0.0 or rate_max[u] * wu <= floor:
            continue
        moved = False
        for p in range(n_prb):
            if free[p]:
                v = rate[u, p] * wu
                if v > best[p]:
                    best[p] = v
                    choice[p] = u
                    moved = True
        if moved:
            floor = np.inf
            for p in range(n_prb):
                if free[p] and best[p] < floor:
                    floor = best[p]


@njit(cache=True)
def _slot_loop(
    sinr, rate, conc_db, conc_lin, tx, remaining, start_slot, order, sinr_eff_db,
    t_mcs, t_tb, t_tbler, beta_eesm, lo, step, bler_target, beta_pf, hold_max, max_slots, slot_s, rng,
    finish_s, gave_up_s, n_slots, prb_slots, mcs_sum, mcs_counts, retx, tx_energy, prbs_used,
    tr_bits, tr_nprb, tr_eff, tr_tbler, tr_mcs, tr_past, tr_held,
):  # fmt: skip
    """The slot loop of :func:`simulate_transfers`, compiled (Numba): PF with buffer trim
    and refill, OLLA over ILLA, EESM, TBLER and HARQ draws, holds. ``order``: the devices
    with bits, by ``start_slot`` (stable). Writes the per-device outputs and
    ``prbs_used[:k]``; the ``tr_*`` arrays (``[rows, n]``, ``rows`` 0 without a trace) get
    one row per simulated slot. Returns ``(t, k, traced rows)``.

    PF state: the past rate is ``g * kpf[u]``. Each simulated slot multiplies every
    device's past rate by ``beta``, which leaves the order of the metrics ``rate / past``
    unchanged for the devices not served in the last slot; so ``g`` takes the common
    factor, only the served devices' ``kpf`` move (O(served) per slot, not O(n)), and the
    PRBs' choices are one sweep over ``rate * w`` with ``w[u] = 1 / kpf[u]`` (-1 while the
    device is not ready, is done, or is out of a refill pass).
    """
    n, n_prb = rate.shape
    n_snr = t_tbler.shape[2]
    delta_down = OLLA_DELTA_UP_DB * bler_target / (1.0 - bler_target)
    off_lo, off_hi = OLLA_OFFSET_DB
    offset = np.zeros(n)
    nacks = np.zeros(n, np.int64)
    alive = remaining > 0
    kpf = np.ones(n)  # Sionna PFSchedulerSUMIMO's past rate, initialised to one, over g
    g = 1.0
    w = np.full(n, -1.0)
    rate_last = np.zeros(n)
    served = np.empty(n_prb, np.int64)
    n_served = 0
    ptr = 0
    n_ready = 0
    owner = np.empty(n_prb, np.int64)
    cand = np.empty(n_prb, np.int64)
    alloc = np.zeros(n, np.int64)  # PRBs per device in the pass / slot
    users = np.empty(n_prb, np.int64)
    mcs_u = np.empty(n_prb, np.int64)
    keep = np.empty(n_prb, np.int64)
    eff = np.empty(n_prb)
    tbl = np.empty(n_prb)
    dec = np.empty(n_prb, np.int64)
    col = np.empty(n_prb, np.bool_)
    best = np.empty(n_prb)
    free = np.empty(n_prb, np.bool_)
    rate_max = np.empty(n)
    for u in range(n):
        rate_max[u] = rate[u].max()
    rank = np.empty(n_prb, np.int64)
    t_rows = tr_bits.shape[0]
    rows = 0
    k_used = 0
    t = 0
    while t < max_slots:
        while ptr < order.size and start_slot[order[ptr]] <= t:  # devices whose data is ready
            u = order[ptr]
            ptr += 1
            w[u] = 1.0 / kpf[u]
            n_ready += 1
        if n_ready == 0:
            if ptr >= order.size:
                break
            t = start_slot[order[ptr]]  # skip idle slots
            for j in range(n_served):
                rate_last[served[j]] = 0.0
            n_served = 0
            continue
        # PF state exactly as Sionna's PFSchedulerSUMIMO: past <- beta past + (1 - beta) last
        g *= beta_pf
        for j in range(n_served):
            u = served[j]
            kpf[u] += (1.0 - beta_pf) * rate_last[u] / g
            rate_last[u] = 0.0
            if alive[u]:
                w[u] = 1.0 / kpf[u]
        n_served = 0
        if g < 1e-200:  # fold the common factor back in before it underflows
            for u in range(n):
                kpf[u] *= g
                if w[u] >= 0.0:
                    w[u] = 1.0 / kpf[u]
            g = 1.0
        owner[:] = -1
        for _ in range(REFILL_PASSES):
            for p in range(n_prb):
                free[p] = owner[p] < 0
            if not free.any():
                break
            _pf_choices(rate, rate_max, w, free, best, cand)
            if (cand < 0).all():
                break
            k = 0
            for p in range(n_prb):
                if cand[p] >= 0:
                    if alloc[cand[p]] == 0:
                        users[k] = cand[p]
                        k += 1
                    alloc[cand[p]] += 1
            users[:k].sort()
            trimmed = False
            for j in range(k):
                u = users[j]
                m = t_mcs[alloc[u], _snr_idx(sinr_eff_db[u] - offset[u] + conc_db[u, alloc[u]], lo, step, n_snr)]
                need = 1
                for a in range(1, n_prb + 1):
                    if t_tb[m, a] < remaining[u]:
                        need += 1
                keep[j] = min(need, alloc[u])  # PRBs the device keeps
                if need < alloc[u]:
                    trimmed = True
            if not trimmed:  # every candidate keeps its PRBs
                for p in range(n_prb):
                    if cand[p] >= 0:
                        owner[p] = cand[p]
                for j in range(k):
                    alloc[users[j]] = 0
                break
            for j in range(k):  # keep each device's best PRBs (stable in PRB order), drop it from later passes
                u = users[j]
                c = 0
                for p in range(n_prb):
                    if cand[p] == u:
                        rank[c] = p
                        c += 1
                for a in range(1, c):  # insertion sort by SINR, descending, stable
                    p = rank[a]
                    b = a - 1
                    while b >= 0 and sinr[u, rank[b]] < sinr[u, p]:
                        rank[b + 1] = rank[b]
                        b -= 1
                    rank[b + 1] = p
                for a in range(keep[j]):
                    owner[rank[a]] = u
                w[u] = -1.0
                alloc[u] = 0
        # the slot's allocation
        k = 0
        for p in range(n_prb):
            u = owner[p]
            if u >= 0:
                if alloc[u] == 0:
                    users[k] = u
                    k += 1
                alloc[u] += 1
        users[:k].sort()
        used_prbs = 0
        for j in range(k):
            u = users[j]
            a = alloc[u]
            used_prbs += a
            m = t_mcs[a, _snr_idx(sinr_eff_db[u] - offset[u] + conc_db[u, a], lo, step, n_snr)]
            mcs_u[j] = m
            for p in range(n_prb):
                col[p] = owner[p] == u
            e = _eesm_one_db(sinr[u], col, conc_lin[u, a], beta_eesm[max(m, 0)])
            eff[j] = e
            tbl[j] = t_tbler[m, a, _snr_idx(e, lo, step, n_snr)]
        done_or_lost = False
        for j in range(k):  # PHYAbstraction's HARQ draw, OLLA, the new effective-SINR report
            u = users[j]
            a = alloc[u]
            m = mcs_u[j]
            ack = rng.random() >= tbl[j]
            dec[j] = t_tb[m, a] if ack else 0
            offset[u] = min(max(offset[u] - delta_down if ack else offset[u] + OLLA_DELTA_UP_DB, off_lo), off_hi)
            sinr_eff_db[u] = eff[j] - conc_db[u, a]  # the report, normalised to a full-band allocation
            nacks[u] = 0 if ack else nacks[u] + 1
            remaining[u] -= min(dec[j], remaining[u])
            n_slots[u] += 1
            prb_slots[u] += a
            mcs_sum[u] += m
            mcs_counts[u, m] += 1
            retx[u] += 0 if ack else 1
            tx_energy[u] += tx[u, a] * a * slot_s
            if remaining[u] <= 0:
                finish_s[u] = (t + 1) * slot_s
                alive[u] = False
                done_or_lost = True
            if nacks[u] >= MAX_CONSECUTIVE_NACK:  # out of coverage: gives up
                gave_up_s[u] = (t + 1) * slot_s
                alive[u] = False
                done_or_lost = True
        for j in range(k):
            u = users[j]
            served[j] = u
            rate_last[u] = dec[j]
        n_served = k
        prbs_used[k_used] = used_prbs
        k_used += 1
        if rows < t_rows:
            for j in range(k):
                u = users[j]
                tr_bits[rows, u] = dec[j]
                tr_nprb[rows, u] = alloc[u]
                tr_eff[rows, u] = 10.0 ** (eff[j] / 10.0)
                tr_tbler[rows, u] = tbl[j]
                tr_mcs[rows, u] = mcs_u[j]
            for u in range(n):
                tr_past[rows, u] = g * kpf[u]
            rows += 1
        t += 1
        if hold_max > 1 and k == n_ready and not done_or_lost:
            next_start = start_slot[order[ptr]] if ptr < order.size else -1
            t, k_used, rows, g = _hold(
                t, k, users, alloc, mcs_u, tbl, eff, kpf, g, rate_last, remaining, offset, nacks, alive, next_start, tx, rng, t_mcs, t_tb,
                lo, step, n_snr, hold_max, max_slots, slot_s, delta_down, beta_pf,
                finish_s, gave_up_s, n_slots, prb_slots, mcs_sum, mcs_counts, retx, tx_energy, prbs_used, k_used,
                tr_bits, tr_nprb, tr_eff, tr_tbler, tr_mcs, tr_held, rows,
            )  # fmt: skip
        for j in range(k):
            u = users[j]
            alloc[u] = 0
            if not alive[u]:  # done or out of coverage
                n_ready -= 1
                w[u] = -1.0
    return t, k_used, rows


@njit(cache=True)
def _hold(
    t, k, users, alloc, mcs_u, tbl, eff, kpf, g, rate_last, remaining, offset, nacks, alive, next_start, tx, rng, t_mcs, t_tb,
    lo, step, n_snr, hold_max, max_slots, slot_s, delta_down, beta_pf,
    finish_s, gave_up_s, n_slots, prb_slots, mcs_sum, mcs_counts, retx, tx_energy, prbs_used, k_used,
    tr_bits, tr_nprb, tr_eff, tr_tbler, tr_mcs, tr_held, rows,
):  # fmt: skip
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
    scheduling. ``next_start``: the first slot of the next device to become ready (-1:
    none). The PF state is ``_slot_loop``'s (``g``, ``kpf``). Returns ``(next slot,
    prbs_used entries, trace rows, g)``.
    """
    horizon = min(hold_max - 1, max_slots - t)
    if next_start >= 0:
        horizon = min(horizon, next_start - t)
    if horizon <= 0:
        return t, k_used, rows, g
    ack = np.empty((k, horizon), np.bool_)
    for j in range(k):  # the draws of the whole horizon, device by device (as rng.random((k, horizon)))
        for i in range(horizon):
            ack[j, i] = rng.random() >= tbl[j]
    h = horizon
    for j in range(k):  # the first slot at which this device's allocation would change
        u = users[j]
        a = alloc[u]
        tb = t_tb[mcs_u[j], a]
        tb_less = t_tb[mcs_u[j], a - 1]  # one PRB fewer (0 for a one-PRB allocation)
        cum = 0
        off = offset[u]
        streak = nacks[u]
        for i in range(min(h, horizon)):
            d = tb if ack[j, i] else 0
            if remaining[u] - cum <= tb_less:  # trimmed: remaining bits before this slot
                h = i
                break
            if t_mcs[a, _snr_idx(eff[j] - off, lo, step, n_snr)] != mcs_u[j] or off < OLLA_OFFSET_DB[0] or off > OLLA_OFFSET_DB[1]:
                h = i
                break
            cum += d
            streak = 0 if ack[j, i] else streak + 1
            if cum >= remaining[u] or streak >= MAX_CONSECUTIVE_NACK:
                h = i + 1
                break
            off += -delta_down if ack[j, i] else OLLA_DELTA_UP_DB
    if h <= 0:
        return t, k_used, rows, g
    g *= beta_pf ** float(h)  # PF: the past rate at the start of each held slot, with the previous slot's bits
    used = 0
    for j in range(k):
        u = users[j]
        a = alloc[u]
        m = mcs_u[j]
        tb = t_tb[m, a]
        used += a
        got = 0
        n_ack = 0
        acc = 0.0
        off = offset[u]
        streak = nacks[u]
        for i in range(h):
            d = tb if ack[j, i] else 0
            got += d
            n_ack += 1 if ack[j, i] else 0
            streak = 0 if ack[j, i] else streak + 1
            off = off - delta_down if ack[j, i] else off + OLLA_DELTA_UP_DB
            if i < h - 1:
                acc += d * beta_pf ** float(h - 2 - i)
            if rows + i < tr_bits.shape[0]:
                tr_bits[rows + i, u] = d
                tr_nprb[rows + i, u] = a
                tr_eff[rows + i, u] = 10.0 ** (eff[j] / 10.0)
                tr_tbler[rows + i, u] = tbl[j]
                tr_mcs[rows + i, u] = m
                tr_held[rows + i] = True
        kpf[u] += ((1.0 - beta_pf) * beta_pf ** float(h - 1) * rate_last[u] + (1.0 - beta_pf) * acc) / g
        rate_last[u] = tb if ack[j, h - 1] else 0
        offset[u] = min(max(off, OLLA_OFFSET_DB[0]), OLLA_OFFSET_DB[1])
        nacks[u] = streak
        remaining[u] -= min(got, remaining[u])
        n_slots[u] += h
        prb_slots[u] += h * a
        mcs_sum[u] += h * m
        mcs_counts[u, m] += h
        retx[u] += h - n_ack
        tx_energy[u] += h * tx[u, a] * a * slot_s
        if remaining[u] <= 0:
            finish_s[u] = (t + h) * slot_s
            alive[u] = False
        if nacks[u] >= MAX_CONSECUTIVE_NACK:
            gave_up_s[u] = (t + h) * slot_s
            alive[u] = False
    for i in range(h):
        prbs_used[k_used + i] = used
    return t + h, k_used + h, min(rows + h, tr_bits.shape[0]), g


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
        Keep, per simulated slot (up to ``TRACE_ROWS``), the scheduled devices' delivered
        bits, PRBs, effective SINR, TBLER and MCS, and the PF past rate of every device
        (for tests).
    """
    sinr = _np(sinr).astype(np.float64)
    n, n_prb = sinr.shape
    slot_s = cell.slot_s
    bler_target = float(cell["bler_target"])
    remaining = _np(bits).astype(np.int64).copy()
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
    tab = link_tables(n_prb, cell.re_per_prb, category, bler_target)
    start_slot = np.ceil(_np(start_s).astype(np.float64) / slot_s - 1e-9).astype(np.int64)
    tx = _np(tx_w).astype(np.float64) if tx_w is not None else np.ones((n, n_prb + 1))
    conc_db = 10.0 * np.log10(tx / tx[:, -1:])  # [n, n_prb + 1]: dB gain of an M-PRB allocation
    conc_lin = tx / tx[:, -1:]
    rate = np.log2(1.0 + sinr)  # [n, n_prb] achievable bit/RE: the PF input
    sinr_eff_db = 10.0 * np.log10(np.maximum(sinr.mean(axis=1), 1e-6))  # CQI before the first TB: the band's mean SINR
    max_slots = int(cell["max_slots"])
    rows = min(max_slots, TRACE_ROWS) if trace else 0
    tr = [np.zeros((rows, n), np.int64), np.zeros((rows, n), np.int64), np.zeros((rows, n)), np.zeros((rows, n)), np.zeros((rows, n), np.int64), np.zeros((rows, n))]
    tr_held = np.zeros(rows, np.bool_)
    prbs_used = np.empty(max_slots, np.int64)
    bits0 = remaining.copy()
    rng = np.random.Generator(np.random.PCG64(int(seed) % (2**63)))
    t, k_used, n_rows = _slot_loop(
        sinr, rate, conc_db, conc_lin, tx, remaining, start_slot, np.flatnonzero(remaining > 0)[np.argsort(start_slot[remaining > 0], kind="stable")], sinr_eff_db,
        tab.mcs.numpy(), tab.tb_bits.numpy(), tab.tbler.numpy().astype(np.float64), eesm_beta(), tab.snr_lo_db, tab.snr_step_db,
        bler_target, float(cell["pf_beta"]), int(cell["hold_slots"]), max_slots, slot_s, rng,
        res.finish_s, res.gave_up_s, res.slots, res.prb_slots, res.mcs_sum, res.mcs_counts, res.retx, res.tx_energy_j, prbs_used,
        *tr, tr_held,
    )  # fmt: skip
    res.prbs_used = prbs_used[:k_used].copy()
    if trace:
        for r in range(n_rows):
            us = np.flatnonzero(tr[1][r])
            row = {"users": us, "bits": tr[0][r, us], "n_prb": tr[1][r, us], "sinr_eff": tr[2][r, us], "tbler": tr[3][r, us], "mcs": tr[4][r, us]}
            res.trace.append(row | ({"held": True} if tr_held[r] else {"pf_past": tr[5][r].copy()}))
    res.delivered_bits[:] = bits0 - remaining
    stuck = (remaining > 0) & ~np.isfinite(res.gave_up_s)  # max_slots reached
    res.gave_up_s[stuck] = max(t, int(start_slot[stuck].max(initial=0))) * slot_s
    return res
