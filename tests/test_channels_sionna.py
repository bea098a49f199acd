"""Sionna TR 38.901 sources: geometry of Table II, NLoS, seeds, the vectorised ray
path against Sionna's own coefficients, CDL, and lazy import. Kept to few samples."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from common.channels import ChannelTask, available_sources, sample_channels
from common.channels.layout import task_centre_m



def _task(source: str = "umi", task_id: int = 4, **opts: object) -> ChannelTask:
    return ChannelTask.make(source, 32, 8, task_id=task_id, seed=7, **opts)


def test_importing_channels_does_not_import_sionna() -> None:
    code = (
        "import sys, common.channels as c; c.available_sources(); "
        "from common.channels import cache, gbsm, sionna_38901; "
        "assert 'sionna' not in sys.modules, 'sionna imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sources_registered() -> None:
    assert {"umi", "uma", "rma", "cdl", "gbsm", "imported", "rayleigh"} <= set(available_sources())


def test_umi_geometry_nlos_and_shapes() -> None:
    from common.channels.sionna_38901 import system_model

    task = _task()
    H = sample_channels(task, 6, seed=1)
    assert H.shape == (6, 32, 8) and H.dtype == torch.complex64
    scen = system_model(task)._scenario
    bs = scen.bs_loc[0, 0].numpy()
    ut = scen.ut_loc[0].numpy()
    assert np.allclose(bs, [0.0, 0.0, 15.0])
    assert ut.shape == (6, 3) and np.allclose(ut[:, 2], 1.5)
    centre = task_centre_m(task)
    assert 50.0 < np.hypot(*centre[:2]) < 100.0
    assert np.all(np.linalg.norm(ut[:, :2] - centre[:2], axis=1) <= 5.0 + 1e-4)
    d2 = np.hypot(ut[:, 0], ut[:, 1])
    assert np.all((d2 > 45.0) & (d2 < 105.0))
    assert not bool(scen.los.any()) and not bool(scen.indoor.any())
    assert float(scen.carrier_frequency) == pytest.approx(6e9)
    assert scen.direction == "uplink"
    assert scen.bs_array.num_ant == 32 and scen.ut_array.num_ant == 8


def test_umi_seeds_and_global_rng_untouched() -> None:
    task = _task()
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = sample_channels(task, 4, seed=2)
    after = torch.rand(3)
    assert torch.equal(before, after)  # Sionna's reseeding does not leak into the caller
    b = sample_channels(task, 4, seed=2)
    c = sample_channels(task, 4, seed=3)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("source", ["umi", "uma", "rma"])
def test_vectorised_rays_match_sionna_coefficients(source: str) -> None:
    rays = _task(source, task_id=1)
    direct = _task(source, task_id=1, method="direct")
    Hr, Hd = sample_channels(rays, 5, seed=0), sample_channels(direct, 5, seed=0)
    assert torch.allclose(Hr, Hd, atol=1e-4, rtol=0)
    Wr, Wd = sample_channels(rays, 3, seed=0, n_subcarriers=24), sample_channels(direct, 3, seed=0, n_subcarriers=24)
    assert Wr.shape == (3, 24, 32, 8)
    assert torch.allclose(Wr, Wd, atol=1e-4, rtol=0)
    # narrowband is the DC subcarrier; the band is frequency selective
    assert torch.allclose(Wr[:, 12], sample_channels(rays, 3, seed=0), atol=1e-4)
    assert not torch.allclose(Wr[:, 0], Wr[:, 23], atol=1e-2)


def test_umi_power_normalisation() -> None:
    H = sample_channels(_task(task_id=2), 64, seed=5)
    assert 0.7 < H.abs().pow(2).mean().item() < 1.3
    Hs = sample_channels(_task(task_id=2, normalise="sample"), 4, seed=5)
    assert torch.allclose(Hs.abs().pow(2).mean(dim=(1, 2)), torch.ones(4), atol=1e-4)


def test_chunked_against_unchunked_output() -> None:
    """Chunks are independent Sionna topologies over the same UE positions: a chunk's
    channels do not depend on how many chunks follow, and chunked and unchunked draws
    share shape, dtype and power while differing in the draw (LSPs are correlated only
    within a topology)."""
    chunked = sample_channels(_task(ue_chunk=3), 7, seed=0, n_subcarriers=4)
    assert chunked.shape == (7, 4, 32, 8) and chunked.dtype == torch.complex64
    prefix = sample_channels(_task(ue_chunk=3), 3, seed=0, n_subcarriers=4)
    assert torch.equal(chunked[:3], prefix)
    whole = sample_channels(_task(ue_chunk=7), 7, seed=0, n_subcarriers=4)
    assert whole.shape == chunked.shape and whole.dtype == chunked.dtype
    assert not torch.equal(whole, chunked)
    for H in (whole, chunked):
        assert 0.5 < H.abs().pow(2).mean().item() < 1.5  # unit ensemble power, 7 UEs


def test_cdl_profiles() -> None:
    task = ChannelTask.make("cdl", 16, 4, task_id=0, profile="A", delay_spread_s=300e-9)
    a = sample_channels(task, 32, seed=0)
    assert a.shape == (32, 16, 4) and a.dtype == torch.complex64
    assert torch.equal(a, sample_channels(task, 32, seed=0))
    assert not torch.allclose(a, sample_channels(task, 32, seed=1))
    assert 0.5 < a.abs().pow(2).mean().item() < 1.5
    w = sample_channels(ChannelTask.make("cdl", 16, 4, profile="E"), 2, seed=0, n_subcarriers=8)
    assert w.shape == (2, 8, 16, 4)
    with pytest.raises(ValueError, match="A..E"):
        sample_channels(ChannelTask.make("cdl", 16, 4, profile="Z"), 2, seed=0)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="method"):
        sample_channels(_task(method="fast"), 2, seed=0)
    with pytest.raises(ValueError, match="bs_rows=5"):
        sample_channels(_task(bs_rows=5), 2, seed=0)


def test_los_option_uses_direct_path() -> None:
    from common.channels.sionna_38901 import system_model

    task = _task(los=True)
    H = sample_channels(task, 3, seed=0)
    assert bool(system_model(task)._scenario.los.all())
    assert torch.allclose(H, sample_channels(_task(los=True, method="direct"), 3, seed=0), atol=1e-6)
