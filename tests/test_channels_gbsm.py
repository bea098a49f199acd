"""The built-in geometry-based stochastic model: shapes, seeds, normalisation,
spatial consistency, delay-based frequency selectivity, arrays and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.channels import ChannelTask, available_sources, sample_channels
from common.channels.arrays import SPEED_OF_LIGHT, array_positions, steering_vectors, unit_vectors
from common.channels.gbsm import (
    channels_along_track,
    gbsm_environment,
    linear_track,
    subcarrier_offsets_hz,
)
from common.channels.layout import task_centre_m, ue_positions_m



def _task(task_id: int = 0, **opts: object) -> ChannelTask:
    return ChannelTask.make("gbsm", 32, 8, task_id=task_id, seed=11, model="legacy", **opts)


def test_registered_and_shapes() -> None:
    assert "gbsm" in available_sources()
    H = sample_channels(_task(), 5, seed=0)
    assert H.shape == (5, 32, 8) and H.dtype == torch.complex64
    Hw = sample_channels(_task(), 3, seed=0, n_subcarriers=12)
    assert Hw.shape == (3, 12, 32, 8) and Hw.dtype == torch.complex64


def test_ensemble_power_is_one() -> None:
    H = sample_channels(_task(2), 3000, seed=1)
    assert abs(H.abs().pow(2).mean().item() - 1.0) < 0.1
    env = gbsm_environment(_task(2))
    assert np.isclose(np.sum(np.abs(env.gains) ** 2), 1.0)


def test_los_power_split() -> None:
    env = gbsm_environment(_task(0, los=True, k_factor_db=10.0))
    assert np.isclose(env.los_power, 10 / 11)
    assert np.isclose(np.sum(np.abs(env.gains) ** 2), 1 / 11)
    H = sample_channels(_task(0, los=True, k_factor_db=10.0), 2000, seed=0)
    assert abs(H.abs().pow(2).mean().item() - 1.0) < 0.1


def test_seeds() -> None:
    a = sample_channels(_task(), 8, seed=3)
    b = sample_channels(_task(), 8, seed=3)
    c = sample_channels(_task(), 8, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # another task_id is another environment
    d = sample_channels(_task(1), 8, seed=3)
    assert not torch.allclose(a, d)


def test_layout_matches_table_ii() -> None:
    for tid in range(20):
        task = _task(tid)
        c = task_centre_m(task)
        assert 50.0 < np.hypot(c[0], c[1]) < 100.0 and c[2] == 1.5
        pos = ue_positions_m(task, 200, seed=tid)
        assert np.all(np.linalg.norm(pos[:, :2] - c[:2], axis=1) <= 5.0 + 1e-9)
        assert np.allclose(pos[:, 2], 1.5)
    # prefix-stable: the first k of n draws are a draw of k
    assert np.array_equal(ue_positions_m(_task(3), 10, seed=1), ue_positions_m(_task(3), 25, seed=1)[:10])
    # the centre depends on task_id, not on the per-call seed
    assert not np.allclose(task_centre_m(_task(0)), task_centre_m(_task(1)))


def test_hashed_drops_are_uniform_in_the_circle() -> None:
    """``ue_drops_m`` (one UE per derived seed, no generator): inside the circle, uniform by
    area (E[r^2] = R^2 / 2, P(r < R/2) = 1/4) and in angle."""
    from common.channels.layout import ue_drops_m
    from common.seeding import derive_seed

    task = _task(7)
    c = task_centre_m(task)
    pos = ue_drops_m(task, [derive_seed(13, "radio-channel", 1, d) for d in range(4000)])
    rel = pos[:, :2] - c[:2]
    r2 = (rel**2).sum(axis=1) / 25.0
    assert np.all(r2 <= 1.0 + 1e-12) and np.allclose(pos[:, 2], c[2])
    assert abs(r2.mean() - 0.5) < 0.02 and abs((r2 < 0.25).mean() - 0.25) < 0.03
    counts = np.histogram(np.arctan2(rel[:, 1], rel[:, 0]), bins=8, range=(-np.pi, np.pi))[0]
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500


def test_spatial_consistency() -> None:
    """Ensemble correlation of channels a distance d apart: high at 0.1 lambda, falls with d."""
    rhos = []
    for tid in range(3):
        task = _task(tid)
        lam = gbsm_environment(task).wavelength_m
        p0 = ue_positions_m(task, 300, seed=5)
        H0 = channels_along_track(task, p0)
        row = []
        for d in (0.1, 2.0, 10.0):
            H1 = channels_along_track(task, p0 + np.array([d * lam, 0.0, 0.0]))
            num = (H0 * H1.conj()).sum().abs()
            row.append((num / torch.sqrt(H0.abs().pow(2).sum() * H1.abs().pow(2).sum())).item())
        rhos.append(row)
    r = np.mean(rhos, axis=0)
    assert r[0] > 0.9
    assert r[0] > r[1] > r[2]
    assert r[2] < 0.3


def test_track_is_continuous_and_matches_source() -> None:
    task = _task(4)
    c = task_centre_m(task)
    track = linear_track(c, c + np.array([1.0, 0.0, 0.0]), 0.001)
    assert track.shape == (1001, 3)
    H = channels_along_track(task, track)
    step = (H[1:] - H[:-1]).abs().pow(2).sum(dim=(1, 2)) / H[:-1].abs().pow(2).sum(dim=(1, 2))
    assert step.max().item() < 0.05  # 1 mm = 0.02 lambda: small change every step
    # the source at the same positions gives the same numbers
    from common.channels.gbsm import channels_at

    assert torch.allclose(channels_at(gbsm_environment(task), track[:5]), H[:5])


def test_single_path_frequency_response_closed_form() -> None:
    """One scatterer: H(f_k) = H(f_0) exp(-j 2 pi (f_k - f_0) tau), tau from the geometry."""
    task = _task(6, n_clusters=1, rays_per_cluster=1, subcarrier_spacing_hz=60e3)
    env = gbsm_environment(task)
    pos = ue_positions_m(task, 2, seed=0)
    H = channels_along_track(task, pos, n_subcarriers=16)
    tau = env.path_delays_s(pos)[:, 0]
    f = subcarrier_offsets_hz(16, 60e3)
    for i in range(2):
        expect = H[i, 8] * torch.from_numpy(np.exp(-2j * np.pi * (f - f[8]) * tau[i])).to(torch.complex64)[:, None, None]
        assert torch.allclose(H[i], expect, atol=1e-4)
    # rank one, unit-modulus entries
    assert torch.allclose(H[0, 0].abs(), torch.ones(32, 8), atol=1e-4)
    assert np.all(tau > 0)


def test_delay_spread_makes_frequency_selective() -> None:
    task = _task(1, subcarrier_spacing_hz=120e3)
    H = sample_channels(task, 200, seed=2, n_subcarriers=128)
    ref = H[:, 64]

    def corr(k: int) -> float:
        x = H[:, k]
        return ((ref * x.conj()).sum().abs() / torch.sqrt(ref.abs().pow(2).sum() * x.abs().pow(2).sum())).item()

    assert corr(65) > 0.99  # 120 kHz apart: flat
    assert corr(127) < 0.6  # ~7.6 MHz apart: decorrelated by the ~100 ns delay spread
    # narrowband equals the DC subcarrier
    Hn = sample_channels(task, 200, seed=2)
    assert torch.allclose(Hn, ref, atol=1e-5)


def test_random_rotation_option_changes_channels() -> None:
    a = sample_channels(_task(0), 4, seed=0)
    b = sample_channels(_task(0, ue_rotation="random"), 4, seed=0)
    assert not torch.allclose(a, b)
    assert torch.allclose(a.abs().pow(2).mean(), b.abs().pow(2).mean(), rtol=0.5)
    with pytest.raises(ValueError, match="ue_rotation"):
        sample_channels(_task(0, ue_rotation="spin"), 2, seed=0)


def test_arrays() -> None:
    lam = SPEED_OF_LIGHT / 6e9
    upa = array_positions("upa", 32, lam)
    assert upa.shape == (32, 3) and np.allclose(upa.mean(axis=0), 0)
    assert np.isclose(np.ptp(upa[:, 1]), 7 * lam / 2) and np.isclose(np.ptp(upa[:, 2]), 3 * lam / 2)
    ula = array_positions("ula", 8, lam, orientation="x")
    assert np.isclose(np.ptp(ula[:, 0]), 7 * lam / 2)
    # broadside of a y-axis ULA (direction +x) gives equal phases; endfire a linear ramp of pi
    y_ula = array_positions("ula", 4, lam)
    a = steering_vectors(unit_vectors(np.pi / 2, 0.0), y_ula, lam)
    assert np.allclose(a, a[0])
    e = steering_vectors(unit_vectors(np.pi / 2, np.pi / 2), y_ula, lam)
    assert np.allclose(e[1:] / e[:-1], np.exp(1j * np.pi))
    with pytest.raises(ValueError, match="divide"):
        array_positions("upa", 32, lam, rows=5)
    with pytest.raises(ValueError, match="ula"):
        array_positions("ring", 8, lam)
    H = sample_channels(ChannelTask.make("gbsm", 16, 4, bs_array="ula", ue_array="upa"), 3, seed=0)
    assert H.shape == (3, 16, 4)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        channels_along_track(_task(), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="step_m"):
        linear_track((0, 0, 0), (1, 0, 0), 0.0)
    with pytest.raises(ValueError, match="n_clusters"):
        sample_channels(_task(0, n_clusters=0), 2, seed=0)


def test_torch_steering_matches_numpy() -> None:
    from common.channels.arrays import steering_vectors_torch

    lam = SPEED_OF_LIGHT / 6e9
    rng = np.random.default_rng(0)
    d = unit_vectors(rng.uniform(0, np.pi, (5, 7)), rng.uniform(-np.pi, np.pi, (5, 7)))
    for pos in (array_positions("upa", 32, lam), array_positions("ula", 8, lam, orientation="x"), rng.normal(size=(6, 3)) * lam):
        ref = steering_vectors(d, pos, lam)
        got = steering_vectors_torch(torch.from_numpy(d), pos, lam)
        assert got.shape == (5, 7, pos.shape[0]) and np.allclose(got.numpy(), ref, atol=1e-9)
