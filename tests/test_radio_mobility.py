"""Mobility (common.radio.mobility, issue #13 item 1): a moving device's straight track,
its gbsm channel at the track position, its path loss and MCS as it drives away, and
speed 0 as the fresh drop every round."""

from __future__ import annotations

import math

from typing import Any

import numpy as np
import pytest

from common.channels.gbsm import channels_at, gbsm_environment
from common.channels.layout import task_centre_m
from common.profiles import device_profile
from common.radio.cell import device_links
from common.radio.channel import round_channels
from common.radio.config import CellConfig
from common.radio.round import price_round
from common.scenario import parse_scenario
from common.seeding import derive_seed


def _fleet(source: str, n: int = 3, seed: int = 5, radio: dict[str, Any] | None = None, **cls: Any) -> tuple[Any, CellConfig, list[Any]]:
    raw: dict[str, Any] = {
        "seed": seed,
        "channels": {"n_rx": 8, "n_tx": 2, "n_pilots": 2, "source": source},
        "fleet": [{"name": "a", "count": n, "workload": "none", "tasks": [100, 101], **cls}],
        "radio": {"bandwidth_hz": 5e6, "numerology": 0, **(radio or {})},  # 25 PRBs at 15 kHz
    }
    sc = parse_scenario(raw, "t.toml", check_sources=False)
    return sc, CellConfig.from_data(sc.data["radio"]), [device_profile(sc, d) for d in range(n)]


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"bytes_down": 20_000, "bytes_unit": 10_000, "bytes_up": 5_000, "flops": 10**8, "status": "ok"} for _ in range(n)]


def _drop(p: Any, seed: int, round_: int) -> np.ndarray:
    """The static device's position: a fresh drop in its task circle, from the 63 bits of
    its round's seed (low 31: radius, next 32: angle), computed here in plain Python."""
    s = derive_seed(seed, "radio-channel", round_, p.device_id)
    r = float(p.task.option("radius_m", 5.0)) * math.sqrt((s % 2**31) / 2**31)
    phi = 2 * math.pi * ((s >> 31) / 2**32)
    c = task_centre_m(p.task)
    return np.array([c[0] + r * math.cos(phi), c[1] + r * math.sin(phi), c[2]])


def _oracle_gain(H: np.ndarray) -> np.ndarray:
    return np.linalg.svd(H, compute_uv=False)[..., 0] ** 2


def test_speed_zero_is_a_fresh_drop_every_round_whatever_the_other_mobility_keys() -> None:
    sc, cell, profiles = _fleet("gbsm")
    _, _, still = _fleet("gbsm", speed_mps=0.0, heading="away", round_interval_s=7.0)
    for r in (1, 2):
        ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, r)
        np.testing.assert_allclose(ch.position_m, np.stack([_drop(p, sc.seed, r) for p in profiles]), rtol=0, atol=1e-9)
        assert price_round(cell, profiles, _rows(3), sc.seed, r) == price_round(cell, still, _rows(3), sc.seed, r)


def test_track_is_a_straight_line_spaced_speed_times_interval() -> None:
    speed, dt = 1.5, 2.0
    sc, cell, profiles = _fleet("gbsm", speed_mps=speed, round_interval_s=dt)
    pos = np.stack([round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, r).position_m for r in range(1, 6)])  # [round, device, 3]
    for i, p in enumerate(profiles):
        np.testing.assert_allclose(pos[0, i], _drop(p, sc.seed, 1), rtol=0, atol=1e-9)  # starts where a static device is in round 1
        step = np.diff(pos[:, i], axis=0)
        np.testing.assert_allclose(np.linalg.norm(step, axis=1), speed * dt, rtol=1e-12)
        np.testing.assert_allclose(step, np.repeat(step[:1], 4, axis=0), atol=1e-9)  # one direction: a line
        assert (step[:, 2] == 0).all()
    headings = [tuple(np.round(pos[1, i] - pos[0, i], 9)) for i in range(3)]
    assert len(set(headings)) == 3  # a random heading per device


def test_gbsm_channel_is_the_environment_at_the_track_position() -> None:
    speed = 0.5
    sc, cell, profiles = _fleet("gbsm", speed_mps=speed, heading="away")
    for r in (1, 3):
        ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, r)
        for i, p in enumerate(profiles):
            start = _drop(p, sc.seed, 1)
            want = start + np.r_[speed * (r - 1) * start[:2] / np.linalg.norm(start[:2]), 0.0]
            np.testing.assert_allclose(ch.position_m[i], want, atol=1e-9)
            H = channels_at(gbsm_environment(p.task), want[None], cell.n_prb, cell.prb_bandwidth_hz)[0].numpy()
            np.testing.assert_allclose(ch.gains[i], _oracle_gain(H), rtol=2e-3)


def test_slow_device_keeps_its_channel_between_rounds_a_static_one_does_not() -> None:
    def change(profiles: list[Any], cell: CellConfig, seed: int) -> float:
        g = [round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, seed, r).gains for r in range(1, 5)]
        return float(np.mean([np.abs(b - a).mean() / a.mean() for a, b in zip(g, g[1:])]))

    sc, cell, still = _fleet("gbsm", n=4)
    _, _, slow = _fleet("gbsm", n=4, speed_mps=0.005)  # 5 mm per round, well under a wavelength
    assert change(slow, cell, sc.seed) < 0.25 * change(still, cell, sc.seed)


@pytest.mark.parametrize("fading", ["task", "rayleigh"])
def test_driving_away_path_loss_grows_and_mcs_falls(fading: str) -> None:
    speed = 300.0
    sc, cell, profiles = _fleet("rayleigh", n=2, radio={"shadowing_db": 0.0, "fading": fading}, speed_mps=speed, heading="away")
    pl, mcs_down, mcs_up = [], [], []
    for r in range(1, 5):
        ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, r)
        links = device_links(cell, profiles, sc.seed, ch.position_m)
        for ln, p in zip(links, profiles):  # a non-geometric source starts at its task centre
            assert ln.distance_m == pytest.approx(np.linalg.norm(task_centre_m(p.task)[:2]) + speed * (r - 1))
        pl.append([ln.pathloss_db for ln in links])
        cols = price_round(cell, profiles, _rows(2), sc.seed, r)
        mcs_down.append([c["mcs_mean_down"] for c in cols])
        mcs_up.append([c["mcs_mean_up"] for c in cols])
    pl_a, down, up = np.array(pl), np.array(mcs_down), np.array(mcs_up)
    assert (np.diff(pl_a, axis=0) > 3.0).all()
    assert (np.diff(down, axis=0) <= 0).all() and (down[-1] < down[0] - 5).all()  # from the top MCS (28) near the BS
    assert (up[-1] < up[0]).all()


def test_same_seed_same_columns_other_seed_other_track() -> None:
    sc, cell, profiles = _fleet("gbsm", speed_mps=2.0)
    a = price_round(cell, profiles, _rows(3), sc.seed, 3)
    assert a == price_round(cell, profiles, _rows(3), sc.seed, 3)
    sc9, _, other = _fleet("gbsm", seed=9, speed_mps=2.0)
    p5 = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 3).position_m
    p9 = round_channels(other, cell.n_prb, cell.prb_bandwidth_hz, sc9.seed, 3).position_m
    assert not np.allclose(p5, p9)
