"""Neighbour-cell interference through Sionna's hexagonal grid (common.radio.neighbours):
the sites' geometry, zero load is no interference exactly, more load lowers SINR and MCS
and raises airtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common.radio.cell import DeviceLink, link_sinr, prb_gains
from common.radio.config import RADIO_SCHEMA, CellConfig, validate_radio
from common.radio.neighbours import downlink_interference_w, neighbour_sites, uplink_interference_w
from common.radio.round import DeviceRound, radio_round
from common.schema import validate_section


def _cell(**over: Any) -> CellConfig:
    base = {"bandwidth_hz": 5e6, "numerology": 0, "isd_m": 500.0}
    return CellConfig.from_data(validate_radio(validate_section({**base, **over}, RADIO_SCHEMA, "radio")))


def _devices(n: int = 8) -> list[DeviceRound]:
    out = []
    for i in range(n):
        r = 60.0 + 25.0 * i  # 60 .. 235 m, bearings spread around the cell
        xy = (r * np.cos(2.1 * i), r * np.sin(2.1 * i))
        link = DeviceLink(i, r, 95.0 + 0.12 * r, 16, 2, 23.0, 0.3, 1e-11, xy)
        out.append(DeviceRound(link, 6_000, 0, 3_000, 0, 1e10))
    return out


def test_sites_are_the_hexagonal_rings() -> None:
    one = neighbour_sites(_cell(neighbour_rings=1))
    assert one.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(one[:, :2], axis=1), 500.0)  # ring 1 at the ISD
    np.testing.assert_allclose(one[:, 2], 15.0)
    two = np.linalg.norm(neighbour_sites(_cell(neighbour_rings=2))[:, :2], axis=1)
    assert len(two) == 18
    np.testing.assert_allclose(np.sort(two), np.sort([500.0] * 6 + [500.0 * 3**0.5] * 6 + [1000.0] * 6))


def test_zero_load_is_no_interference_exactly() -> None:
    devs = _devices()
    off = radio_round(_cell(), devs, 7, 2)
    zero = radio_round(_cell(neighbour_rings=1, neighbour_load=0.0), devs, 7, 2)
    assert zero == off
    assert not uplink_interference_w(_cell(neighbour_rings=2, neighbour_load=0.0), 7, 2).any()


def test_more_load_more_interference_lower_sinr_and_mcs_more_airtime() -> None:
    devs = _devices()
    links = [d.link for d in devs]
    xy = np.array([ln.xy_m for ln in links])
    gains = prb_gains(links, 25, 7, 2)
    prev: dict[str, Any] = {}
    for load in (0.0, 0.3, 1.0):
        cell = _cell(neighbour_rings=1, neighbour_load=load)
        i_ul, i_dl = uplink_interference_w(cell, 7, 2), downlink_interference_w(cell, xy, 7, 2)
        s_ul = link_sinr(cell, links, gains, "up", i_ul)[0]
        s_dl = link_sinr(cell, links, gains, "down", i_dl)[0]
        rows = radio_round(cell, devs, 7, 2)
        mcs = np.mean([r["mcs_mean_up"] for r in rows] + [r["mcs_mean_down"] for r in rows])
        air = sum(r["airtime_up_s"] + r["airtime_down_s"] for r in rows)
        print(f"load {load}: UL interference {10 * np.log10(i_ul.mean() + 1e-30) + 30:.1f} dBm/PRB, mean MCS {mcs:.2f}, airtime {1e3 * air:.0f} ms")
        if prev:
            assert (i_ul >= prev["i_ul"]).all() and (i_dl >= prev["i_dl"]).all()  # only more interferers
            assert (s_ul <= prev["s_ul"]).all() and (s_dl <= prev["s_dl"]).all()
            assert (s_ul < prev["s_ul"]).any() and (s_dl < prev["s_dl"]).any()
            assert mcs < prev["mcs"] and air > prev["air"]
        prev = {"i_ul": i_ul, "i_dl": i_dl, "s_ul": s_ul, "s_dl": s_dl, "mcs": mcs, "air": air}


def test_a_device_near_a_neighbour_site_hears_it_more() -> None:
    cell = _cell(neighbour_rings=1, neighbour_load=1.0, shadowing_db=0.0)
    site = neighbour_sites(cell)[0, :2]
    xy = np.array([site * 0.2, site * 0.8])  # near our BS, near the neighbour's
    i_dl = downlink_interference_w(cell, xy, 3, 1)
    assert i_dl[1].mean() > 10 * i_dl[0].mean()


def test_topology_and_scalar_interference_together_are_refused() -> None:
    from common.schema import ScenarioError

    with pytest.raises(ScenarioError, match="radio.interference_db"):
        _cell(neighbour_rings=1, interference_db=3.0)
