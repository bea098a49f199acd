"""Each device's own channel per PRB (common.radio.channel), its position for path loss
(common.radio.cell), and the path-loss table against Sionna called directly."""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.channels.gbsm import channels_at, gbsm_environment
from common.channels.layout import task_centre_m
from common.profiles import device_profile
from common.radio.cell import _scenario, device_links, pathloss_db
from common.radio.channel import round_channels
from common.radio.config import CellConfig
from common.scenario import parse_scenario
from common.seeding import derive_seed


def _fleet(channels: dict[str, Any], n: int = 4, n_tx: int = 4) -> tuple[Any, CellConfig, list[Any]]:
    raw: dict[str, Any] = {
        "seed": 5,
        "channels": {"n_rx": 16, "n_tx": n_tx, "n_pilots": n_tx, **channels},
        "fleet": [{"name": "a", "count": n, "workload": "none", "tasks": [100, 101]}],
        "radio": {"bandwidth_hz": 5e6, "numerology": 0},  # 25 PRBs at 15 kHz
    }
    sc = parse_scenario(raw, "t.toml", check_sources=False)
    return sc, CellConfig.from_data(sc.data["radio"]), [device_profile(sc, d) for d in range(n)]


def _oracle_gain(H: np.ndarray) -> np.ndarray:
    """Largest squared singular value of each ``[..., n_rx, n_tx]`` (NumPy SVD)."""
    return np.linalg.svd(H, compute_uv=False)[..., 0] ** 2


def test_gbsm_gain_per_prb_is_the_centre_subcarrier_of_the_devices_own_channel() -> None:
    sc, cell, profiles = _fleet({"source": "gbsm"})
    ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 2)
    assert ch.gains.shape == (4, 25)
    for i, p in enumerate(profiles):
        # the drop: 63 hashed bits of the device's round seed, low 31 the radius, next 32
        # the angle (plain Python here)
        s = derive_seed(sc.seed, "radio-channel", 2, p.device_id)
        r, phi = 5.0 * math.sqrt((s % 2**31) / 2**31), 2 * math.pi * ((s >> 31) / 2**32)
        c = task_centre_m(p.task)
        pos = np.array([[c[0] + r * math.cos(phi), c[1] + r * math.sin(phi), c[2]]])
        np.testing.assert_allclose(ch.position_m[i], pos[0], rtol=0, atol=1e-9)
        # oracle: the task's environment on the full 15 kHz grid (300 subcarriers) at that
        # position; PRB k's centre is subcarrier 12 k + 6
        H = channels_at(gbsm_environment(p.task), pos, 12 * cell.n_prb, cell.scs_hz)[0, 6::12].numpy()
        np.testing.assert_allclose(ch.gains[i], _oracle_gain(H), rtol=2e-3)
        # inside the device's own task circle (radius 5 m)
        assert np.linalg.norm(ch.position_m[i, :2] - task_centre_m(p.task)[:2]) <= 5.0 + 1e-9
    again = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 2)
    np.testing.assert_array_equal(again.gains, ch.gains)
    other = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 3)
    assert not np.allclose(other.gains, ch.gains) and not np.allclose(other.position_m, ch.position_m)
    # frequency selective through the path delays: a flat channel gives 0. The strongest
    # eigenmode of a device dominated by one 38.901 cluster can swing by only ~1 % over
    # 4.5 MHz, so the check is on the fleet's largest swing (10-50 % per device otherwise)
    assert max(np.ptp(g) / g.mean() for g in ch.gains) > 0.1


def test_path_loss_follows_the_devices_position() -> None:
    sc, cell, profiles = _fleet({"source": "gbsm"})
    ch = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 1)
    links = device_links(cell, profiles, sc.seed, ch.position_m)
    for ln, pos in zip(links, ch.position_m):
        assert ln.distance_m == pytest.approx(float(np.linalg.norm(pos[:2])))
    centre = device_links(cell, profiles, sc.seed)  # no positions: the task centres
    assert [ln.distance_m for ln in centre] == pytest.approx([float(np.linalg.norm(task_centre_m(p.task)[:2])) for p in profiles])
    assert [ln.distance_m for ln in links] != [ln.distance_m for ln in centre]


def test_rayleigh_source_is_iid_per_prb_and_a_flat_source_is_flat(tmp_path: Path) -> None:
    sc, cell, profiles = _fleet({"source": "rayleigh"}, n_tx=2)
    g = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 1).gains
    assert np.isnan(round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 1).position_m).all()
    assert (g.std(axis=1) > 0).all()
    # mean of the largest eigenvalue of a 16 x 2 CN(0, 1) Wishart: about (4 + 1.41)^2 = 29
    assert 20 < g.mean() < 35

    rng = np.random.default_rng(0)
    H = (rng.standard_normal((6, 16, 2)) + 1j * rng.standard_normal((6, 16, 2))).astype(np.complex64)
    np.save(tmp_path / "h.npy", H)
    sc, cell, profiles = _fleet({"source": "imported", "options": {"path": str(tmp_path / "h.npy"), "normalise": "none"}}, n_tx=2)
    g = round_channels(profiles, cell.n_prb, cell.prb_bandwidth_hz, sc.seed, 1).gains
    assert (g == g[:, :1]).all()  # the same H on every PRB
    file_gains = _oracle_gain(H)
    for row in g:
        assert np.isclose(file_gains, row[0], rtol=1e-4).any()  # one of the file's channels


@pytest.mark.parametrize("kind", ["umi", "uma"])
def test_path_loss_table_matches_sionna_called_directly(kind: str) -> None:
    cell = _fleet({"source": "rayleigh"})[1]
    cell = CellConfig.from_data({**cell.data, "scenario": kind})
    xy = np.random.default_rng(1).uniform(-3000, 3000, (300, 2))
    sc = _scenario(kind, float(cell["carrier_hz"]))
    ut = torch.zeros(1, 300, 3)
    ut[0, :, :2] = torch.as_tensor(xy, dtype=torch.float32)
    ut[0, :, 2] = float(cell["ue_height_m"])
    bs = torch.tensor([[[0.0, 0.0, float(cell["bs_height_m"])]]])
    sc.reset_topology()
    sc.set_topology(ut, bs, torch.zeros(1, 300, 3), torch.zeros(1, 1, 3), torch.zeros(1, 300, 3), torch.zeros(1, 300, dtype=torch.bool), los=False)
    direct = sc.basic_pathloss[0, 0].double().numpy()
    np.testing.assert_allclose(pathloss_db(cell, xy), direct, atol=0.01)
    assert direct.max() - direct.min() > 30  # the test spans the model's range
