"""Contract shared by the fast sources (rayleigh, gbsm, imported): shapes, dtypes,
normalisation, seeds; plus the rayleigh source's Kronecker correlation closed form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.channels import ChannelTask, get_source, sample_channels
from common.channels.imported import write_channels



@pytest.fixture(scope="module")
def imported_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    g = torch.Generator().manual_seed(0)
    H = torch.complex(torch.randn(600, 4, 16, 4, generator=g), torch.randn(600, 4, 16, 4, generator=g)) * 5
    return write_channels(tmp_path_factory.mktemp("imp") / "h.parquet", H)


def _tasks(path: Path) -> list[ChannelTask]:
    return [
        ChannelTask.make("rayleigh", 16, 4, task_id=1),
        ChannelTask.make("gbsm", 16, 4, task_id=1),
        ChannelTask.make("imported", 16, 4, task_id=1, path=str(path)),
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_contract(which: int, imported_file: Path) -> None:
    task = _tasks(imported_file)[which]
    H = sample_channels(task, 500, seed=0)
    assert H.shape == (500, 16, 4) and H.dtype == torch.complex64
    assert abs(H.abs().pow(2).mean().item() - 1.0) < 0.15  # E|h_ij|^2 = 1
    W = sample_channels(task, 3, seed=0, n_subcarriers=4)
    assert W.shape == (3, 4, 16, 4) and W.dtype == torch.complex64
    assert torch.equal(sample_channels(task, 20, seed=9), sample_channels(task, 20, seed=9))
    assert not torch.allclose(sample_channels(task, 20, seed=9), sample_channels(task, 20, seed=10))


def test_sample_channels_checks_source_shape() -> None:
    with pytest.raises(ValueError, match="positive"):
        sample_channels(ChannelTask.make("rayleigh", 2, 2), 0, seed=0)
    with pytest.raises(ValueError, match="unknown channel source"):
        get_source("nope")


def test_rayleigh_kronecker_correlation() -> None:
    rho = 0.7
    H = sample_channels(ChannelTask.make("rayleigh", 4, 2, correlation=rho), 40_000, seed=1)
    # E[H H^H] = n_tx R_rx with R_rx[i, j] = rho^|i-j|
    R = torch.einsum("nit,njt->ij", H, H.conj()) / H.shape[0] / 2
    idx = torch.arange(4)
    expect = rho ** (idx[:, None] - idx[None, :]).abs().float()
    assert torch.allclose(R.real, expect, atol=0.05) and R.imag.abs().max() < 0.05
