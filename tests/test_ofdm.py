"""SISO-OFDM link: Gray QAM, LS / interpolation / LMMSE, closed-form BER."""

from __future__ import annotations

import math

import pytest
import torch

from common.phy.metrics import nmse_db
from common.phy.ofdm import (
    channel_features,
    features_to_channel,
    frequency_correlation,
    interpolate_linear,
    lmmse_estimate,
    pilot_indices,
    qam_constellation,
    qam_demodulate,
    qam_modulate,
    simulate_ofdm,
)



def _tdl_channels(n: int, K: int, n_taps: int, seed: int) -> torch.Tensor:
    """Exponential-PDP tapped delay line -> complex64 [n, K] (unit average power)."""
    g = torch.Generator().manual_seed(seed)
    pdp = torch.exp(-torch.arange(n_taps, dtype=torch.float32) / max(n_taps / 3, 1e-3))
    pdp = pdp / pdp.sum()
    taps = torch.complex(torch.randn(n, n_taps, generator=g), torch.randn(n, n_taps, generator=g)) * (pdp / 2).sqrt()
    F = torch.exp(-2j * math.pi * torch.arange(K)[:, None] * torch.arange(n_taps)[None, :] / K).to(torch.complex64)
    return taps @ F.T


@pytest.mark.parametrize("mod,m", [("qpsk", 4), ("qam16", 16), ("qam64", 64)])
def test_constellation_unit_energy_and_gray(mod: str, m: int) -> None:
    c = qam_constellation(mod)
    assert c.shape == (m,)
    assert float((c.abs() ** 2).mean()) == pytest.approx(1.0, abs=1e-6)
    d = (c[:, None] - c[None, :]).abs()
    dmin = float(d[d > 1e-6].min())
    labels = torch.arange(m)
    hamming = torch.tensor([[bin(int(a) ^ int(b)).count("1") for b in labels] for a in labels])
    nearest = (d - dmin).abs() < 1e-5
    assert (hamming[nearest] == 1).all()  # Gray: every nearest neighbour differs in one bit


@pytest.mark.parametrize("mod", ["qpsk", "qam64"])
def test_modulate_demodulate_roundtrip(mod: str) -> None:
    k = int(math.log2(qam_constellation(mod).numel()))
    bits = torch.randint(0, 2, (5, 7 * k), generator=torch.Generator().manual_seed(0))
    assert torch.equal(qam_demodulate(qam_modulate(bits, mod), mod), bits)


def test_bad_modulation_rejected() -> None:
    with pytest.raises(ValueError, match="QAM order"):
        qam_constellation(8)
    with pytest.raises(ValueError, match="modulation"):
        qam_constellation("bpsk")


def test_pilots_comb_ends_on_last_subcarrier() -> None:
    p = pilot_indices(64, "comb", 4)
    assert p.tolist()[:3] == [0, 4, 8] and p[-1] == 63 and p.numel() == 17
    assert pilot_indices(8, "block").tolist() == list(range(8))


def test_linear_interpolation_exact_on_affine_channel() -> None:
    K = 32
    k = torch.arange(K, dtype=torch.float32)
    h = torch.complex(0.5 + 0.03 * k, -0.2 + 0.01 * k)[None]
    p = pilot_indices(K, "comb", 5)
    assert torch.allclose(interpolate_linear(h[:, p], p, K), h, atol=1e-6)


def test_features_roundtrip() -> None:
    h = torch.randn(3, 8, dtype=torch.complex64)
    assert torch.equal(features_to_channel(channel_features(h)), h)


def test_noiseless_ls_is_exact_at_pilots() -> None:
    H = _tdl_channels(4, 16, 3, 1)
    b = simulate_ofdm(H, 300.0, pilot_indices(16, "comb", 4), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(b.h_ls_pilots, H[:, b.pilots], atol=1e-5)
    assert b.ber_with(b.h) == 0.0


def test_qpsk_rayleigh_ber_matches_closed_form() -> None:
    # flat Rayleigh, perfect CSI: BER = 1/2 (1 - sqrt(g / (1 + g))), g = Eb/N0 = snr / 2
    n, K, snr_db = 4000, 8, 10.0
    g = torch.Generator().manual_seed(3)
    flat = torch.complex(torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)) / math.sqrt(2)
    b = simulate_ofdm(flat.expand(n, K), snr_db, pilot_indices(K, "block"), "qpsk", 4, generator=g)
    gb = 10 ** (snr_db / 10) / 2
    expect = 0.5 * (1 - math.sqrt(gb / (1 + gb)))
    assert b.ber_with(b.h) == pytest.approx(expect, rel=0.08)


def test_lmmse_beats_interpolated_ls() -> None:
    K = 64
    R = frequency_correlation(_tdl_channels(4000, K, 6, 10))
    p = pilot_indices(K, "comb", 4)
    b = simulate_ofdm(_tdl_channels(500, K, 6, 11), 10.0, p, generator=torch.Generator().manual_seed(4))
    ls = nmse_db(b.h_ls, b.h, reduction="sum")
    lm = nmse_db(lmmse_estimate(b.h_ls_pilots, p, R, b.noise_var), b.h, reduction="sum")
    assert lm < ls - 3.0
    # at high SNR interpolated LS is limited by interpolation error, LMMSE is not
    b2 = simulate_ofdm(_tdl_channels(500, K, 6, 12), 40.0, p, generator=torch.Generator().manual_seed(5))
    assert nmse_db(lmmse_estimate(b2.h_ls_pilots, p, R, b2.noise_var), b2.h, reduction="sum") < nmse_db(b2.h_ls, b2.h, reduction="sum")


def test_qam64_awgn_ber_matches_nearest_neighbour_approximation() -> None:
    # Gray 64-QAM, Es/N0 = snr: BER ~ (4/6)(1 - 1/8) Q(sqrt(3 snr / 63)) at high SNR
    n, K, snr_db = 1000, 64, 20.0
    b = simulate_ofdm(torch.ones(n, K, dtype=torch.complex64), snr_db, pilot_indices(K, "block"), "qam64", 4,
                      generator=torch.Generator().manual_seed(6))
    snr = 10 ** (snr_db / 10)
    q = 0.5 * math.erfc(math.sqrt(3 * snr / 63) / math.sqrt(2))
    assert b.ber_with(b.h) == pytest.approx((4 / 6) * (7 / 8) * q, rel=0.1)
