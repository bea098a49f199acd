"""PHY: QPSK mapping, LS estimation, ZF/MMSE/ML detectors, metrics, batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.phy import (
    baseline_sers,
    covariance_ml_detect,
    binomial_ci,
    complex_to_real_channel,
    make_detection_batch,
    ml_detect,
    mmse,
    nmse_db,
    noise_variance,
    orthogonal_pilots,
    ser,
    ser_with_ci,
    zf,
    zf_error_covariance,
)
from common.phy.estimation import ls_estimate, transmit_pilots
from common.phy.modulation import (
    bits_to_indices,
    hard_qpsk,
    indices_to_bits,
    indices_to_symbols,
    qpsk_constellation,
    symbols_to_real,
)



def _crandn(*shape: int, g: torch.Generator) -> torch.Tensor:
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) / math.sqrt(2)


def test_qpsk_gray_unit_power_and_roundtrip() -> None:
    c = qpsk_constellation()
    assert torch.allclose(c.abs(), torch.ones(4))
    # Gray: nearest neighbours (distance sqrt(2)) differ in exactly one bit
    for a in range(4):
        for b in range(4):
            d = float((c[a] - c[b]).abs())
            if abs(d - math.sqrt(2)) < 1e-6:
                assert bin(a ^ b).count("1") == 1
    idx = torch.randint(0, 4, (50, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(bits_to_indices(indices_to_bits(idx)), idx)
    assert torch.equal(hard_qpsk(indices_to_symbols(idx)), idx)
    x = symbols_to_real(indices_to_symbols(idx))
    assert torch.equal(indices_to_bits(idx).bool(), x < 0)
    with pytest.raises(ValueError):
        indices_to_bits(torch.tensor([4]))


def test_pilots_orthogonal_qpsk() -> None:
    Xp = orthogonal_pilots(8, 16)
    assert Xp.shape == (8, 16)
    assert torch.allclose(Xp @ Xp.conj().T, 16 * torch.eye(8, dtype=torch.complex64), atol=1e-5)
    assert torch.allclose(Xp.abs(), torch.ones(8, 16))
    with pytest.raises(ValueError):
        orthogonal_pilots(8, 12)
    with pytest.raises(ValueError):
        orthogonal_pilots(32, 16)


def test_ls_closed_form_and_noise_variance() -> None:
    g = torch.Generator().manual_seed(1)
    H = _crandn(2, 3, 2, g=g)
    Xp = orthogonal_pilots(2, 4)
    # noiseless: LS recovers H exactly
    assert torch.allclose(ls_estimate(H @ Xp, Xp), H, atol=1e-5)
    # with orthogonal pilots, LS = Y_p X_p^H / N_p
    Yp = transmit_pilots(H, 0.1, 4, g)
    assert torch.allclose(ls_estimate(Yp, Xp), Yp @ Xp.conj().T / 4, atol=1e-5)
    # estimation error variance = noise_var / N_p
    H = _crandn(4000, 4, 2, g=g)
    err = ls_estimate(transmit_pilots(H, 0.5, 16, g), orthogonal_pilots(2, 16)) - H
    assert abs(float(err.abs().pow(2).mean()) - 0.5 / 16) < 0.002


def test_zf_mmse_closed_forms_on_tiny_case() -> None:
    H = torch.tensor([[[1 + 0j, 0.5j], [0.2 + 0j, 1 - 1j], [0.3 - 0.1j, 0.4 + 0j]]], dtype=torch.complex64)
    x = torch.tensor([[1 + 1j, -1 + 1j]], dtype=torch.complex64) / math.sqrt(2)
    y = (H @ x.unsqueeze(-1)).squeeze(-1)
    # noiseless ZF inverts the channel exactly
    assert torch.allclose(zf(y, H), x, atol=1e-5)
    y = y + torch.tensor([[0.05 - 0.02j, -0.03j, 0.01 + 0j]], dtype=torch.complex64)
    Hn = H[0].numpy().astype(np.complex128)
    yn = y[0].numpy().astype(np.complex128)
    # eq. (9) and eq. (11), and the real-valued block form of eq. (2) gives the same answer
    assert np.allclose(zf(y, H)[0].numpy(), np.linalg.pinv(Hn) @ yn, atol=1e-5)
    s2 = 0.3
    ref = np.linalg.solve(Hn.conj().T @ Hn + s2 * np.eye(2), Hn.conj().T @ yn)
    assert np.allclose(mmse(y, H, s2)[0].numpy(), ref, atol=1e-5)
    Hr = complex_to_real_channel(H)[0].double().numpy()
    yr = np.concatenate([yn.real, yn.imag])
    xr = np.linalg.solve(Hr.T @ Hr + s2 * np.eye(4), Hr.T @ yr)
    assert np.allclose(xr[:2] + 1j * xr[2:], ref, atol=1e-5)
    with pytest.raises(ValueError):
        mmse(y, H, 0.0)


def test_ml_is_optimal_and_at_least_as_good_as_zf() -> None:
    g = torch.Generator().manual_seed(3)
    H = _crandn(3000, 2, 2, g=g)
    b = make_detection_batch(H, snr_db=8.0, generator=g)
    ml = ml_detect(b.y, b.H_ls)
    # ML decision has the smallest residual among all candidates (check vs ZF decision)
    def resid(idx: torch.Tensor) -> torch.Tensor:
        r = b.y - (b.H_ls @ indices_to_symbols(idx).unsqueeze(-1)).squeeze(-1)
        return r.abs().pow(2).sum(-1)

    zf_idx = hard_qpsk(zf(b.y, b.H_ls))
    assert bool((resid(ml) <= resid(zf_idx) + 1e-5).all())
    assert ser(ml, b.symbols) < ser(zf_idx, b.symbols)
    with pytest.raises(ValueError):
        ml_detect(b.y[:1].repeat(1, 5), _crandn(1, 10, 9, g=g))  # 4**9 candidates: refused


def _one_channel_samples(H: torch.Tensor, n: int, noise_var: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` samples through one known channel ``H [n_r, n_t]``: symbols, ``y``, ``x_ZF``."""
    idx = torch.randint(0, 4, (n, H.shape[1]), generator=g)
    y = (H @ indices_to_symbols(idx).unsqueeze(-1)).squeeze(-1) + math.sqrt(noise_var) * _crandn(n, H.shape[0], g=g)
    return idx, y, zf(y, H.expand(n, -1, -1))


def test_covariance_ml_under_the_channels_own_covariance_is_exact_ml() -> None:
    g = torch.Generator().manual_seed(11)
    H = _crandn(6, 3, g=g) @ torch.diag(torch.tensor([1.0, 0.3, 0.1], dtype=torch.complex64))  # ill-conditioned
    s2 = 0.05
    idx, y, x_zf = _one_channel_samples(H, 2000, s2, g)
    Hd = H.to(torch.complex128)
    C = s2 * torch.linalg.inv(Hd.conj().T @ Hd)  # ||y - H x||^2 = (x_zf - x)^H H^H H (x_zf - x) + const
    assert torch.equal(covariance_ml_detect(x_zf, C), ml_detect(y, H.expand(len(y), -1, -1)))


def test_fitted_zf_error_covariance_recovers_the_channel_and_beats_zf() -> None:
    g = torch.Generator().manual_seed(12)
    H = _crandn(6, 3, g=g) @ torch.diag(torch.tensor([1.0, 0.3, 0.1], dtype=torch.complex64))
    s2 = 0.05
    idx, _, x_zf = _one_channel_samples(H, 20000, s2, g)
    C = zf_error_covariance(x_zf, indices_to_symbols(idx))
    Hd = H.to(torch.complex128)
    truth = s2 * torch.linalg.inv(Hd.conj().T @ Hd)
    assert torch.allclose(C, C.conj().T)
    assert float(torch.linalg.norm(C - truth) / torch.linalg.norm(truth)) < 0.05
    t_idx, t_y, t_zf = _one_channel_samples(H, 3000, s2, g)  # fresh samples: fitted, not memorised
    ser_fit = ser(covariance_ml_detect(t_zf, C), t_idx)
    ser_ml = ser(ml_detect(t_y, H.expand(len(t_y), -1, -1)), t_idx)
    assert ser_fit < 0.8 * ser(hard_qpsk(t_zf), t_idx)
    assert ser_fit <= ser_ml + 0.005
    with pytest.raises(ValueError):
        zf_error_covariance(x_zf, indices_to_symbols(idx)[:, :2])
    with pytest.raises(ValueError):
        covariance_ml_detect(t_zf, C[:2, :2])


def test_fitted_hblind_baseline_learns_a_shared_channel_from_the_training_samples() -> None:
    """``baseline_sers(val, fit_from=train)``: on a task whose samples share one ill-conditioned
    channel, the covariance fitted from the training samples alone brings the H-blind ML
    detector to exact ML with each sample's own ``H_LS`` (an independent oracle: a QR search
    per sample) and below ZF and MMSE; it is reported only when asked and for ``n_t <= 8``."""
    g = torch.Generator().manual_seed(13)
    H1 = _crandn(8, 4, g=g) @ torch.diag(torch.tensor([1.0, 0.5, 0.25, 0.15], dtype=torch.complex64))
    train = make_detection_batch(H1.expand(6000, -1, -1).clone(), snr_db=15.0, generator=g)
    val = make_detection_batch(H1.expand(3000, -1, -1).clone(), snr_db=15.0, generator=g)
    s = baseline_sers(val, fit_from=train)
    ser_ml_ls = ser(ml_detect(val.y, val.H_ls), val.symbols)
    assert s["ser_hblind_fit"] < 0.8 * s["ser_zf"] and s["ser_hblind_fit"] < 0.85 * s["ser_mmse"]
    assert s["ser_hblind_fit"] <= ser_ml_ls + 0.01
    assert "ser_hblind_fit" not in baseline_sers(val)
    wide = make_detection_batch(_crandn(20, 9, 9, g=g), snr_db=15.0, generator=g)  # 4**9 candidates: not reported
    assert "ser_hblind_fit" not in baseline_sers(wide, fit_from=wide) and "ser_zf" in baseline_sers(wide, fit_from=wide)


def test_batch_shapes_snr_and_baselines() -> None:
    g = torch.Generator().manual_seed(4)
    H = _crandn(2000, 8, 4, g=g)
    b = make_detection_batch(H, snr_db=10.0, generator=g)
    assert b.sdnet_input.shape == (2000, 1, 17, 8) and b.sdnet_input.dtype == torch.float32
    assert b.x.shape == (2000, 8) and b.symbols.shape == (2000, 4) and b.bits.shape == (2000, 8)
    assert torch.allclose(b.x.abs(), torch.full_like(b.x, 1 / math.sqrt(2)))
    assert b.noise_var == pytest.approx(noise_variance(10.0, 4)) and b.noise_var == pytest.approx(0.4)
    # measured SNR per receive antenna matches the definition
    sig = (b.H @ indices_to_symbols(b.symbols).unsqueeze(-1)).squeeze(-1)
    snr = float(sig.abs().pow(2).mean() / (b.y - sig).abs().pow(2).mean())
    assert 10 * math.log10(snr) == pytest.approx(10.0, abs=0.2)
    # last input row is the ZF estimate with H_LS
    assert torch.allclose(b.x_zf, zf(b.y, b.H_ls), atol=1e-5)
    assert nmse_db(b.H_ls, b.H, reduction="sum") == pytest.approx(10 * math.log10(0.4 / 16), abs=0.3)
    s = baseline_sers(b)
    assert set(s) == {"ser_zf", "ser_mmse", "ser_lmmse_genie"}
    assert s["ser_lmmse_genie"] <= s["ser_mmse"] <= s["ser_zf"] and s["ser_zf"] > 0
    sub = b.subset([0, 5, 7])
    assert len(sub) == 3 and torch.equal(sub.symbols[1], b.symbols[5])
    assert len(b[10:20]) == 10
    # same generator seed -> same batch
    b2 = make_detection_batch(H, 10.0, generator=torch.Generator().manual_seed(9))
    b3 = make_detection_batch(H, 10.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(b2.sdnet_input, b3.sdnet_input)
    with pytest.raises(ValueError):
        make_detection_batch(_crandn(5, 2, 4, g=g), 10.0)


def test_confidence_intervals() -> None:
    lo, hi = binomial_ci(10, 100, method="wilson")
    assert lo < 0.1 < hi and lo == pytest.approx(0.0552, abs=1e-3) and hi == pytest.approx(0.1744, abs=1e-3)
    lo, hi = binomial_ci(0, 50, method="clopper-pearson")
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 50), rel=1e-6)
    p, lo, hi = ser_with_ci(torch.tensor([[0, 1], [2, 3]]), torch.tensor([[0, 1], [2, 2]]))
    assert p == 0.25 and lo < 0.25 < hi
    with pytest.raises(ValueError):
        binomial_ci(3, 2)


def test_a_ratio_to_an_error_free_reference_counts_its_zero_errors_as_one() -> None:
    from common.phy.metrics import ser_ratio

    assert ser_ratio(0.02, 0.01, 8000) == pytest.approx(2.0)
    assert ser_ratio(0.02, 0.0, 8000) == pytest.approx(0.02 * 8000)  # finite: one error in 8,000
    assert ser_ratio(0.0, 0.0, 8000) == 0.0


def test_noise_variance_is_one_convention_for_floats_and_tensors() -> None:
    snr = torch.tensor([0.0, 10.0, 20.0])
    nv = noise_variance(snr)
    assert nv.dtype == torch.float32
    torch.testing.assert_close(nv, torch.tensor([1.0, 0.1, 0.01]))
    assert noise_variance(20.0, 8) == pytest.approx(0.08)
    torch.testing.assert_close(noise_variance(snr, 8), 8 * nv)
