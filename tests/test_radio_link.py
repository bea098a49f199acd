"""The radio link abstraction (common.radio): Shannon bound, BLER target, PF fairness,
path loss, monotone airtime, empty payloads, reproducibility (no Ray, no Flower)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.radio.cell import DeviceLink
from common.radio.config import RADIO_SCHEMA, CellConfig, validate_radio
from common.radio.round import DeviceRound, radio_round
from common.radio.transfer import PDSCH, PUSCH, eesm_db, simulate_transfers
from common.schema import validate_section


def _cell(**over: object) -> CellConfig:
    return CellConfig.from_data(validate_radio(validate_section(dict(over), RADIO_SCHEMA, "radio")))


def _flat(sinr_db: list[float], n_prb: int) -> torch.Tensor:
    return torch.tensor([[10 ** (s / 10)] * n_prb for s in sinr_db], dtype=torch.float64)


def _bits(*b: int) -> torch.Tensor:
    return torch.tensor(b, dtype=torch.int64)


def test_delivered_bits_per_slot_never_exceed_shannon() -> None:
    cell = _cell()  # 20 MHz, 51 PRBs at 30 kHz
    g = torch.Generator().manual_seed(1)
    sinr_db = torch.rand(12, cell.n_prb, generator=g, dtype=torch.float64) * 40 - 5  # -5..35 dB, frequency selective
    sinr = 10 ** (sinr_db / 10)
    worst = 0.0
    for category in (PUSCH, PDSCH):
        res = simulate_transfers(cell, sinr, torch.full((12,), 150_000, dtype=torch.int64), torch.zeros(12, dtype=torch.float64), category, 3, trace=True)
        assert len(res.trace) > 30
        for tr in res.trace:
            bound = tr["n_prb"] * cell.prb_bandwidth_hz * cell.slot_s * np.log2(1 + tr["sinr_eff"])
            assert bool((tr["bits"] <= bound).all()), (tr["bits"], bound)
            worst = max(worst, float((tr["bits"] / bound).max()))
    print(f"max delivered bits / Shannon bound per slot: {worst:.3f}")
    assert worst > 0.3  # the link is used, not idle


@pytest.mark.parametrize("target", [0.1, 0.3])
def test_tbler_at_link_adaptation_target(target: float) -> None:
    cell = _cell(bler_target=target, bandwidth_hz=5e6, numerology=0, max_slots=1500)
    for sinr_db in (3.0, 12.0):
        res = simulate_transfers(cell, _flat([sinr_db], cell.n_prb), _bits(10**9), torch.zeros(1, dtype=torch.float64), PUSCH, 5, trace=True)
        tbs = res.slots.item()
        nack = res.retx.item() / tbs
        # the TBLER the BLER tables give at the MCS link adaptation chose, slot by slot
        tbler = sum(float(tr["tbler"][0]) for tr in res.trace[200:]) / len(res.trace[200:])
        print(f"target {target}, SINR {sinr_db} dB: {tbs} TBs, NACK rate {nack:.3f}, mean TBLER {tbler:.3f}")
        assert tbs >= 1500
        assert abs(nack - target) < 0.25 * target + 0.01
        assert abs(tbler - target) < 0.35 * target


def test_pf_gives_identical_devices_equal_shares() -> None:
    cell = _cell(max_slots=2000)
    g = torch.Generator().manual_seed(2)
    row = 10 ** ((torch.rand(1, cell.n_prb, generator=g, dtype=torch.float64) * 20 + 5) / 10)
    third = 10 ** ((torch.rand(1, cell.n_prb, generator=g, dtype=torch.float64) * 20 + 5) / 10)
    sinr = torch.cat([row, row, third])
    res = simulate_transfers(cell, sinr, _bits(10**9, 10**9, 10**9), torch.zeros(3, dtype=torch.float64), PUSCH, 9)
    a, b = res.prb_slots[:2].astype(float)
    da, db = res.delivered_bits[:2].astype(float)
    print(f"PRB-slots {int(a)} vs {int(b)}; bits {int(da)} vs {int(db)}")
    assert abs(a - b) / (a + b) < 0.02
    assert abs(da - db) / (da + db) < 0.03


def test_pf_state_and_allocation_are_sionnas_pfscheduler() -> None:
    """Oracle: Sionna's PFSchedulerSUMIMO fed the same rates, slot by slot. With full
    buffers nothing is trimmed, so each PRB goes to Sionna's per-PRB choice."""
    from sionna.sys import PFSchedulerSUMIMO

    cell = _cell(bandwidth_hz=5e6, numerology=0, max_slots=80, hold_slots=1)
    g = torch.Generator().manual_seed(3)
    sinr = 10 ** ((torch.rand(5, cell.n_prb, generator=g, dtype=torch.float64) * 25) / 10)
    res = simulate_transfers(cell, sinr, _bits(*[10**9] * 5), torch.zeros(5, dtype=torch.float64), PUSCH, 2, trace=True)
    pf = PFSchedulerSUMIMO(5, cell.n_prb, 1, beta=float(cell["pf_beta"]))
    rate = torch.log2(1 + sinr).float().T[None].contiguous()  # [1 symbol group, n_prb, 5]
    last = torch.zeros(5)
    assert len(res.trace) == 80
    for tr in res.trace:
        chosen = pf(last, rate)[0, :, :, 0]  # [n_prb, 5] bool
        np.testing.assert_allclose(tr["pf_past"], pf.rate_achieved_past.double().numpy(), rtol=1e-5)
        per_user = chosen.sum(dim=0).numpy()
        assert {int(u): int(k) for u, k in zip(tr["users"], tr["n_prb"])} == {u: int(per_user[u]) for u in range(5) if per_user[u] > 0}
        last = torch.zeros(5)
        last[torch.from_numpy(tr["users"])] = torch.from_numpy(tr["bits"]).float()


def test_held_allocations_stay_close_to_slot_by_slot_scheduling() -> None:
    """The hold (an allocation kept while every ready device is scheduled and none
    finishes) against the scheduler deciding every slot: same devices, buffers, start
    times and seed; a few devices on a 25-PRB carrier, no contention."""
    g = torch.Generator().manual_seed(6)
    sinr_db = torch.tensor([[2.0], [8.0], [14.0], [20.0], [26.0], [-3.0]], dtype=torch.float64) + torch.rand(6, 25, generator=g, dtype=torch.float64) * 6
    sinr = 10 ** (sinr_db / 10)
    bits = _bits(60_000, 120_000, 200_000, 150_000, 300_000, 30_000)
    start = torch.tensor([0.0, 0.0, 0.004, 0.010, 0.020, 0.0], dtype=torch.float64)
    out = {}
    for hold in (1, 64):
        cell = _cell(bandwidth_hz=5e6, numerology=0, hold_slots=hold)
        runs = [simulate_transfers(cell, sinr, bits, start, PUSCH, seed) for seed in range(8)]
        out[hold] = {k: np.mean([getattr(r, k) for r in runs], axis=0) for k in ("finish_s", "slots", "prb_slots", "retx")}
        out[hold]["mcs"] = np.mean([r.mcs_mean for r in runs], axis=0)
    exact, held = out[1], out[64]
    print({k: (np.round(exact[k], 4), np.round(held[k], 4)) for k in exact})
    np.testing.assert_allclose(held["finish_s"], exact["finish_s"], rtol=0.10)
    np.testing.assert_allclose(held["slots"], exact["slots"], rtol=0.10)
    np.testing.assert_allclose(held["mcs"], exact["mcs"], atol=1.0)
    assert held["retx"].sum() == pytest.approx(exact["retx"].sum(), rel=0.35)


def test_effective_sinr_is_sionnas_eesm() -> None:
    from sionna.sys import EESM

    rng = np.random.default_rng(4)
    sinr = 10 ** (rng.uniform(-5, 30, (25, 8)) / 10)
    used = rng.random((25, 8)) < 0.4
    used[0] = True
    mcs = rng.integers(0, 28, 8)
    ours = eesm_db(sinr, used, mcs)
    theirs = EESM()(torch.from_numpy(np.where(used, sinr, 0.0)).float()[None, :, :, None], torch.from_numpy(mcs).int(), mcs_table_index=1, per_stream=False)
    np.testing.assert_allclose(ours, 10 * np.log10(theirs.double().numpy()), atol=2e-3)


def test_ten_db_more_path_loss_lower_mcs_more_airtime() -> None:
    cell = _cell()
    near, far = 10 ** (18 / 10), 10 ** (8 / 10)
    out = {}
    for name, s in (("near", near), ("far", far)):
        res = simulate_transfers(cell, torch.full((1, cell.n_prb), s, dtype=torch.float64), _bits(2_000_000), torch.zeros(1, dtype=torch.float64), PUSCH, 4)
        out[name] = (float(res.mcs_mean[0]), int(res.slots[0]), float(res.finish_s[0]))
    print(out)
    assert out["far"][0] < out["near"][0] - 2
    assert out["far"][1] > 1.3 * out["near"][1] and out["far"][2] > out["near"][2]


def test_airtime_monotone_in_payload_and_empty_costs_nothing() -> None:
    cell = _cell()
    sinr = _flat([6.0], cell.n_prb)
    prev = -1
    for bits in (0, 100, 1_000, 10_000, 100_000, 1_000_000):
        res = simulate_transfers(cell, sinr, _bits(bits), torch.zeros(1, dtype=torch.float64), PUSCH, 8)
        slots = int(res.slots[0])
        if bits == 0:
            assert slots == 0 and int(res.prb_slots[0]) == 0 and float(res.finish_s[0]) == 0.0 and int(res.retx[0]) == 0
        else:
            assert int(res.delivered_bits[0]) == bits
        assert slots >= prev
        prev = slots


def _devices(n: int = 6) -> list[DeviceRound]:
    out = []
    for i in range(n):
        far = i % 2 == 1
        link = DeviceLink(i, 400.0 if far else 70.0, 135.0 if far else 100.0, 32, 1 if far else 4, 20.0 if far else 23.0, 0.3, 1e-11)
        out.append(DeviceRound(link, 12_000, 10_000, 0 if i == 4 else 3_000, 5 * 10**8, 1e10))
    return out


def test_round_same_seed_same_columns_and_empty_reply_costs_nothing() -> None:
    cell = _cell(bandwidth_hz=5e6, numerology=0, interference_db=3.0)
    a = radio_round(cell, _devices(), 11, 2)
    b = radio_round(cell, _devices(), 11, 2)
    assert a == b
    c = radio_round(cell, _devices(), 11, 3)  # another round: another fading draw
    assert [r["airtime_up_s"] for r in a] != [r["airtime_up_s"] for r in c] or [r["mcs_mean_up"] for r in a] != [r["mcs_mean_up"] for r in c]
    quiet = a[4]  # sent no reply
    assert quiet["radio_slots_up"] == 0 and quiet["energy_tx_j"] == 0.0 and quiet["airtime_up_s"] == 0.0 and quiet["bits_delivered_up"] == 0
    for r in a:
        assert r["bits_delivered_down"] == 8 * 12_000
        assert r["energy_compute_j"] == pytest.approx(5e8 * 1e-11)
        assert r["emulated_s"] >= r["emulated_compute_s"] + r["airtime_down_s"]
    near, far = a[0], a[1]
    assert far["mcs_mean_up"] < near["mcs_mean_up"] and far["airtime_up_s"] > near["airtime_up_s"] and far["energy_tx_j"] > near["energy_tx_j"]


def test_broadcast_unit_sent_once_at_the_weakest_mcs() -> None:
    cell_u = _cell(bandwidth_hz=5e6, numerology=0)
    cell_b = _cell(bandwidth_hz=5e6, numerology=0, unit_downlink="broadcast")
    uni = radio_round(cell_u, _devices(), 11, 1)
    bc = radio_round(cell_b, _devices(), 11, 1)
    # the broadcast's PRB-slots are shared among the receivers: in total fewer than six unicasts
    assert sum(r["radio_prb_slots_down"] for r in bc) < sum(r["radio_prb_slots_down"] for r in uni)
    assert all(r["bits_delivered_down"] == 8 * 12_000 for r in bc)
    assert math.isclose(bc[0]["radio_prb_slots_down"] - bc[2]["radio_prb_slots_down"], 0.0, abs_tol=1e-9) or bc[0]["radio_slots_down"] > 0


def test_pf_state_holds_over_a_long_phase() -> None:
    """The slot loop keeps the PF past rate as a common factor times a per-device one and
    folds the factor back in before it underflows (after ~22,800 slots at beta 0.98):
    past rates and allocations stay Sionna's PFSchedulerSUMIMO's across the fold, with
    more devices than PRBs (most devices wait in any slot)."""
    from sionna.sys import PFSchedulerSUMIMO

    n = 40
    cell = _cell(bandwidth_hz=5e6, numerology=0, max_slots=23_200, hold_slots=1)
    g = torch.Generator().manual_seed(11)
    sinr = 10 ** ((torch.rand(n, 1, generator=g, dtype=torch.float64) * 20 + torch.rand(n, cell.n_prb, generator=g, dtype=torch.float64) * 6) / 10)
    res = simulate_transfers(cell, sinr, _bits(*[10**10] * n), torch.zeros(n, dtype=torch.float64), PUSCH, 7, trace=True)
    assert len(res.trace) == 23_200
    pf = PFSchedulerSUMIMO(n, cell.n_prb, 1, beta=float(cell["pf_beta"]))
    rate = torch.log2(1 + sinr).float().T[None].contiguous()
    last = torch.zeros(n)
    for i, tr in enumerate(res.trace):
        chosen = pf(last, rate)[0, :, :, 0]
        if i % 1000 == 0 or i > 22_700:
            np.testing.assert_allclose(tr["pf_past"], pf.rate_achieved_past.double().numpy(), rtol=1e-4)
            per_user = chosen.sum(dim=0).numpy()
            assert {int(u): int(k) for u, k in zip(tr["users"], tr["n_prb"])} == {u: int(per_user[u]) for u in range(n) if per_user[u] > 0}
        last = torch.zeros(n)
        last[torch.from_numpy(tr["users"])] = torch.from_numpy(tr["bits"]).float()


def test_link_tables_come_back_from_the_cache_and_a_torn_file_is_rebuilt() -> None:
    from common.radio.transfer import _link_tables_path, link_tables

    args = (25, 144, PDSCH, 0.1)
    fields = ("mcs", "tb_bits", "tbler", "snr_lo_db", "snr_step_db")
    link_tables.cache_clear()
    first = link_tables(*args)
    path = _link_tables_path(*args)
    assert path.is_file()
    path.write_bytes(b"PK\x03\x04 torn")  # a half-written or foreign file: rebuilt from Sionna
    link_tables.cache_clear()
    rebuilt = link_tables(*args)
    link_tables.cache_clear()
    loaded = link_tables(*args)
    for f in fields:
        for other in (rebuilt, loaded):
            a, b = getattr(first, f), getattr(other, f)
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f
    assert int(loaded.mcs[25, -1]) > int(loaded.mcs[25, 60])  # a real table: higher SINR, higher MCS
