"""Transfers of a round over a shared cell, slot by slot, with Sionna SYS.

Each slot, for the devices that have bits left and have become ready:

1. **Scheduling**: Sionna's ``PFSchedulerSUMIMO`` (proportional fair, Jalali et al. 2000;
   one OFDM-symbol group per slot, PRBs as frequency resources) ranks the devices on each
   PRB by achievable rate log2(1 + SINR_PRB) over their discounted past throughput and
   gives each PRB to the best. A device is then trimmed to the PRBs its remaining bits
   need at its MCS (its best PRBs first), and the freed PRBs go to the next device by the
   same PF metric, pass after pass until the band is full or nobody is left waiting
   (``REFILL_PASSES`` at most): buffer-aware PF.
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
   is out of coverage: its transfer fails (``finish_s = inf``).

Vectorised in torch over devices; the slots are sequential (PF and OLLA carry state).
Idle stretches until the next device becomes ready are skipped, not simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from common.radio.config import CellConfig

__all__ = ["TransferResult", "simulate_transfers", "phy_abstraction", "PUSCH", "PDSCH"]

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


@dataclass
class TransferResult:
    """Per device of one transfer phase (tensors ``[n]``), and per slot of the phase.

    ``finish_s`` is measured from the phase start: the end of the slot that delivered the
    device's last bit (0 for an empty transfer, ``inf`` if it never finished).
    """

    slots: torch.Tensor  # int64: slots in which the device had PRBs
    prb_slots: torch.Tensor  # int64
    finish_s: torch.Tensor  # float64
    mcs_sum: torch.Tensor  # int64: sum of the MCS of its transport blocks
    retx: torch.Tensor  # int64: NACKed transport blocks (sent again)
    delivered_bits: torch.Tensor  # int64: of its own bits (padding not counted)
    mcs_counts: torch.Tensor  # int64 [n, 32]: transport blocks per MCS index
    tx_energy_j: torch.Tensor  # float64: radiated energy (with ``tx_w``), J
    prbs_used: list[int] = field(default_factory=list)  # PRBs allocated, per simulated slot
    trace: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per slot, when asked

    @property
    def mcs_mean(self) -> torch.Tensor:
        """Mean MCS over the device's transport blocks (NaN without any)."""
        tbs = self.slots.double()
        return torch.where(tbs > 0, self.mcs_sum.double() / tbs.clamp(min=1), torch.full_like(tbs, math.nan))


def simulate_transfers(
    cell: CellConfig,
    sinr: torch.Tensor,
    bits: torch.Tensor,
    start_s: torch.Tensor,
    category: int,
    seed: int,
    trace: bool = False,
    tx_w: torch.Tensor | None = None,
) -> TransferResult:
    """Deliver ``bits[u]`` to or from each device over the cell's PRBs.

    Parameters
    ----------
    cell : CellConfig
    sinr : torch.Tensor
        ``float64 [n, n_prb]``: each device's post-equalisation SINR per PRB (linear).
    bits : torch.Tensor
        ``int64 [n]``: bits to deliver (0: nothing; costs nothing).
    start_s : torch.Tensor
        ``float64 [n]``: when each device's data is ready, from the phase start (s).
    category : int
        ``PUSCH`` (uplink) or ``PDSCH`` (downlink): the BLER tables and MCS table.
    seed : int
        Seeds the HARQ draws (Sionna's PHY generator), so a phase is reproducible.
    tx_w : torch.Tensor, optional
        ``float64 [n, n_prb + 1]``: transmit power per PRB for an allocation of M PRBs
        (``common.radio.cell.link_sinr``); ``sinr`` is then the SINR of a full-band
        allocation, an M-PRB allocation gets ``tx_w[:, M] / tx_w[:, n_prb]`` of it, and
        ``tx_energy_j`` sums power x PRBs x slot. None: the same power per PRB always.
    trace : bool
        Keep, per slot, the scheduled devices' delivered bits, PRBs, effective SINR,
        TBLER and MCS (for tests).
    """
    from sionna.sys import PFSchedulerSUMIMO

    _, eesm, _ = phy_abstraction()
    n, n_prb = sinr.shape
    slot_s = cell.slot_s
    bler_target = float(cell["bler_target"])
    tab = link_tables(n_prb, cell.re_per_prb, category, bler_target)
    delta_down = OLLA_DELTA_UP_DB * bler_target / (1.0 - bler_target)
    gen = torch.Generator().manual_seed(int(seed) % (2**63))

    remaining = bits.to(torch.int64).clone()
    start_slot = torch.ceil(start_s / slot_s - 1e-9).to(torch.int64)
    res = TransferResult(
        slots=torch.zeros(n, dtype=torch.int64),
        prb_slots=torch.zeros(n, dtype=torch.int64),
        finish_s=torch.where(remaining > 0, torch.full((n,), math.inf, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)),
        mcs_sum=torch.zeros(n, dtype=torch.int64),
        retx=torch.zeros(n, dtype=torch.int64),
        delivered_bits=torch.zeros(n, dtype=torch.int64),
        mcs_counts=torch.zeros(n, 32, dtype=torch.int64),
        tx_energy_j=torch.zeros(n, dtype=torch.float64),
    )
    if n == 0 or not bool((remaining > 0).any()):
        return res
    sinr32 = sinr.float()
    # power concentration: dB gain of an M-PRB allocation over the full band, [n, n_prb + 1]
    tx = tx_w if tx_w is not None else torch.ones(n, n_prb + 1, dtype=torch.float64)
    conc_db = (10.0 * torch.log10(tx / tx[:, -1:])).float()
    rate_prb = torch.log2(1.0 + sinr32)  # [n, n_prb] achievable bit/RE: the PF input
    # CQI before the first transport block: the mean SINR over the band, in dB
    sinr_eff_db = 10.0 * torch.log10(sinr32.mean(dim=1).clamp(min=1e-6))
    offset = torch.zeros(n)
    nacks = torch.zeros(n, dtype=torch.int64)
    alive = remaining > 0
    pf = PFSchedulerSUMIMO(n, n_prb, 1, beta=float(cell["pf_beta"]))
    rate_last = torch.zeros(n)
    t = 0
    max_slots = int(cell["max_slots"])
    while t < max_slots:
        ready = alive & (start_slot <= t)
        if not bool(ready.any()):
            waiting = alive & (start_slot > t)
            if not bool(waiting.any()):
                break
            t = int(start_slot[waiting].min())  # skip idle slots
            rate_last.zero_()
            continue
        pf(rate_last, (rate_prb * ready[:, None]).T[None].contiguous())
        metric = pf.pf_metric[0]  # [n_prb, n]
        cand_users = ready.nonzero()[:, 0]
        m_all = metric[:, cand_users].clone()  # [n_prb, r]
        owner = torch.full((n_prb,), -1, dtype=torch.int64)
        for _ in range(REFILL_PASSES):
            free = owner < 0
            if not bool(free.any()) or m_all.shape[1] == 0:
                break
            m = m_all[free]
            best = m.argmax(dim=1)
            ok = m.gather(1, best[:, None])[:, 0] > 0
            if not bool(ok.any()):
                break
            cand = torch.full((n_prb,), -1, dtype=torch.int64)
            cand[free.nonzero()[:, 0][ok]] = cand_users[best[ok]]
            users = torch.unique(cand[cand >= 0])
            onehot = cand[:, None] == users[None, :]  # [n_prb, k]
            n_alloc = onehot.sum(dim=0)
            # provisional MCS at this allocation; trim each user to the PRBs its buffer needs
            mcs_u = tab.mcs[n_alloc, tab.snr_index(sinr_eff_db[users] - offset[users] + conc_db[users, n_alloc])]
            bits_k = tab.tb_bits[mcs_u][:, 1:]  # [k, n_prb]: TB bits for 1..n_prb PRBs
            need = (bits_k < remaining[users][:, None]).sum(dim=1) + 1
            g = torch.where(onehot, sinr32[users].T, torch.full_like(sinr32[users].T, -1.0))
            rank = torch.argsort(torch.argsort(g, dim=0, descending=True), dim=0)  # 0 = the user's best PRB
            keep = onehot & (rank < torch.minimum(need, n_alloc)[None, :])
            owner = torch.where(keep.any(dim=1), users[keep.float().argmax(dim=1)], owner)
            m_all[:, torch.isin(cand_users, users)] = -1.0
        users = torch.unique(owner[owner >= 0])
        onehot = owner[:, None] == users[None, :]  # [n_prb, k]
        n_alloc = onehot.sum(dim=0)
        conc = conc_db[users, n_alloc]
        mcs_u = tab.mcs[n_alloc, tab.snr_index(sinr_eff_db[users] - offset[users] + conc)]
        # Sionna EESM over the allocated PRBs: [1 symbol group, n_prb, k users, 1 stream]
        s_alloc = torch.where(onehot, sinr32[users].T * torch.pow(10.0, conc / 10.0)[None, :], torch.zeros_like(sinr32[users].T))
        sinr_eff = eesm(s_alloc[None, :, :, None], mcs_u.to(torch.int32), mcs_table_index=MCS_TABLE, per_stream=False)
        eff_db = 10.0 * torch.log10(sinr_eff.clamp(min=1e-6))
        tbler = tab.tbler[mcs_u, n_alloc, tab.snr_index(eff_db)]
        ack = torch.rand(len(users), generator=gen) >= tbler  # PHYAbstraction's HARQ draw
        decoded = torch.where(ack, tab.tb_bits[mcs_u, n_alloc], torch.zeros_like(mcs_u))
        # OLLA offset update and the new effective-SINR report of the scheduled devices
        offset[users] = torch.where(ack, offset[users] - delta_down, offset[users] + OLLA_DELTA_UP_DB).clamp(*OLLA_OFFSET_DB)
        sinr_eff_db[users] = eff_db - conc  # the report, normalised to a full-band allocation
        res.tx_energy_j[users] += tx[users, n_alloc] * n_alloc.double() * slot_s
        nacks[users] = torch.where(ack, torch.zeros_like(nacks[users]), nacks[users] + 1)
        got = torch.minimum(decoded, remaining[users])
        remaining[users] -= got
        res.delivered_bits[users] += got
        res.slots[users] += 1
        res.prb_slots[users] += n_alloc
        res.mcs_sum[users] += mcs_u
        res.mcs_counts[users, mcs_u.clamp(0, 31)] += 1
        res.retx[users] += (~ack).to(torch.int64)
        done = users[remaining[users] <= 0]
        res.finish_s[done] = (t + 1) * slot_s
        alive[done] = False
        alive[users[nacks[users] >= MAX_CONSECUTIVE_NACK]] = False  # out of coverage: gives up
        rate_last.zero_()
        rate_last[users] = decoded.float()
        res.prbs_used.append(int(n_alloc.sum()))
        if trace:
            res.trace.append({"users": users, "bits": decoded, "n_prb": n_alloc, "sinr_eff": sinr_eff, "tbler": tbler, "mcs": mcs_u})
        t += 1
    return res
