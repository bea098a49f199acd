"""The compact DeepRx and its Sionna OFDM slot link."""

from __future__ import annotations

import pytest
import torch

from common.influence import bce_bits, bits_from_logits
from common.models.deeprx import DeepRx
from common.phy.ofdm_link import OfdmLink, OfdmLinkConfig, receiver_input_channels



@pytest.fixture(scope="module")
def link() -> OfdmLink:
    return OfdmLink(OfdmLinkConfig(n_subcarriers=12, snr_db_range=(0.0, 10.0)))


def test_deeprx_shapes_and_bad_input():
    m = DeepRx(9)
    assert m(torch.zeros(3, 9, 14, 12)).shape == (3, 2, 14, 12)
    with pytest.raises(ValueError, match="expected input"):
        m(torch.zeros(3, 8, 14, 12))
    with pytest.raises(ValueError):
        DeepRx(0)


def test_slot_layout_pilots_and_bit_mapping(link):
    b = link.simulate(16, seed=1)
    S, F = 14, 12
    assert b.y.shape == (16, 2, S, F) and b.h.shape == (16, 2, S, F)
    assert int(b.data_mask.sum()) == link.n_data == (S - 2) * F  # pilots fill symbols 2 and 11
    assert not b.data_mask[2].any() and not b.data_mask[11].any()
    # pilots are unit-modulus QPSK; data REs carry the mapper's Gray QPSK of the bits
    assert torch.allclose(b.pilot_grid[~b.data_mask].abs(), torch.ones(2 * F), atol=1e-5)
    s_idx, f_idx = torch.nonzero(b.data_mask, as_tuple=True)
    x_data = b.x[:, s_idx, f_idx]  # [n, n_data], row-major data REs
    bits = b.bits.view(16, -1, 2).float()
    expect = torch.complex(1 - 2 * bits[..., 0], 1 - 2 * bits[..., 1]) / 2**0.5
    assert torch.allclose(x_data, expect, atol=1e-6)
    assert torch.equal(b.grid_to_bits(b.bits_grid()), b.bits.float())
    assert b.receiver_input().shape == (16, receiver_input_channels(2), S, F)


def test_channel_power_noise_and_determinism(link):
    b = link.simulate(64, seed=2)
    assert abs(float(b.h.abs().pow(2).mean()) - 1.0) < 0.15  # normalised TDL, E|h|^2 = 1
    resid = b.y - b.h * b.x[:, None]
    ratio = resid.abs().pow(2).mean((1, 2, 3)) / b.noise_var
    assert abs(float(ratio.mean()) - 1.0) < 0.05  # CN(0, N0) per RE and antenna
    c = OfdmLink(link.cfg).simulate(64, seed=2)
    assert torch.equal(b.y, c.y) and torch.equal(b.bits, c.bits)
    assert not torch.equal(b.y, link.simulate(64, seed=3).y)


def test_genie_beats_ls_and_both_beat_guessing(link):
    b = link.simulate(128, seed=4)
    ber = {}
    for name, fn in (("ls", link.ls_lmmse_llrs), ("genie", link.genie_lmmse_llrs)):
        llr = fn(b)
        assert llr.shape == b.bits.shape
        ber[name] = float((bits_from_logits(llr) != b.bits).float().mean())
    assert ber["genie"] < ber["ls"] < 0.2, ber
    # the genie's LLRs are calibrated enough that their BCE stays below 1 bit per bit
    assert float(bce_bits(link.genie_lmmse_llrs(b), b.bits).mean()) < 0.5


def test_deeprx_learns_on_the_slot(link):
    torch.manual_seed(0)
    b = link.simulate(32, seed=5)
    X, Y = b.receiver_input(), b.bits_grid()
    m = DeepRx(X.shape[1], width=8, n_blocks=2)
    loss = lambda o, y: bce_bits(o, y, mask=b.data_mask)  # noqa: E731
    l0 = float(loss(m(X), Y).mean().detach())
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss(m(X), Y).mean().backward()
        opt.step()
    assert float(loss(m(X), Y).mean()) < 0.8 * l0
