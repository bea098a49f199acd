"""SISO-OFDM link for channel estimation studies (X-REFINE).

One *frame* per sample: a pilot OFDM symbol followed by ``n_data_symbols`` data OFDM
symbols, all under the same frequency response ``h: complex64 [K]`` (block fading over
the frame). Pilots are unit-modulus QPSK symbols at ``pilot_indices(...)``:

- ``"comb"``: every ``spacing``-th subcarrier, plus the last one so that linear
  interpolation never extrapolates;
- ``"block"``: every subcarrier (the pilot symbol is a full preamble).

Data subcarriers carry Gray-mapped square QAM (QPSK or 64-QAM, unit average energy) on
every subcarrier of the data symbols. Noise is ``CN(0, sigma^2)`` per subcarrier with
``sigma^2 = 10^(-snr_db / 10)`` (symbol energy 1, ``E|h_k|^2 = 1``).

Receivers: LS at the pilots, linear interpolation across subcarriers, LMMSE with the
channel's frequency correlation (estimated from training channels), one-tap (ZF)
equalization and hard-decision Gray demapping (BER / NMSE from ``common.phy.metrics``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.phy.metrics import ber
from common.phy.modulation import real_to_symbols, symbols_to_real
from common.phy.noise import noise_variance

__all__ = [
    "MODULATION_ORDERS",
    "OfdmBatch",
    "channel_features",
    "equalize",
    "features_to_channel",
    "frequency_correlation",
    "interpolate_linear",
    "lmmse_estimate",
    "ls_at_pilots",
    "noise_variance",
    "pilot_indices",
    "qam_constellation",
    "qam_demodulate",
    "qam_modulate",
    "simulate_ofdm",
]

#: modulation name -> constellation size M
MODULATION_ORDERS: dict[str, int] = {"qpsk": 4, "qam16": 16, "qam64": 64}


def _order(modulation: str | int) -> int:
    if isinstance(modulation, str):
        if modulation not in MODULATION_ORDERS:
            raise ValueError(f"modulation must be one of {sorted(MODULATION_ORDERS)}, got {modulation!r}")
        return MODULATION_ORDERS[modulation]
    m = int(modulation)
    side = math.isqrt(m)
    if m < 4 or side * side != m or side & (side - 1):
        raise ValueError(f"QAM order must be a square power of 4 (4, 16, 64, ...), got {modulation!r}")
    return m


def pilot_indices(n_subcarriers: int, kind: str = "comb", spacing: int = 4) -> torch.Tensor:
    """Subcarrier indices of the pilots.

    Parameters
    ----------
    n_subcarriers : int
        K, the number of (used) subcarriers.
    kind : {"comb", "block"}, default "comb"
        Comb: every ``spacing``-th subcarrier from 0, plus ``K - 1``. Block: all K.
    spacing : int, default 4
        Comb spacing, in subcarriers.

    Returns
    -------
    torch.Tensor
        int64 [n_pilots], sorted, unique.
    """
    if n_subcarriers < 2:
        raise ValueError(f"n_subcarriers must be >= 2, got {n_subcarriers}")
    if kind == "block":
        return torch.arange(n_subcarriers)
    if kind != "comb":
        raise ValueError(f"pilot kind must be 'comb' or 'block', got {kind!r}")
    if spacing < 1:
        raise ValueError(f"comb spacing must be >= 1, got {spacing}")
    idx = torch.arange(0, n_subcarriers, spacing)
    if idx[-1] != n_subcarriers - 1:
        idx = torch.cat([idx, torch.tensor([n_subcarriers - 1])])
    return idx


# ----------------------------------------------------------------------------- QAM


def _pam_levels(side: int) -> torch.Tensor:
    """Gray label -> PAM amplitude for one dimension: float32 [side]."""
    idx = torch.arange(side)
    gray = idx ^ (idx >> 1)
    amp = torch.empty(side)
    amp[gray] = (2 * idx - (side - 1)).float()  # amplitude of the point whose Gray label is g
    return amp


def qam_constellation(modulation: str | int) -> torch.Tensor:
    """The Gray-labelled square QAM constellation with unit average energy.

    Point ``c[l]`` has bit label ``l`` (MSB first): the first half of the bits selects
    the in-phase PAM level, the second half the quadrature level, each Gray coded, so
    nearest neighbours differ in exactly one bit.

    Returns
    -------
    torch.Tensor
        complex64 [M].
    """
    m = _order(modulation)
    side = math.isqrt(m)
    half = int(math.log2(side))
    amp = _pam_levels(side)
    labels = torch.arange(m)
    re = amp[labels >> half]
    im = amp[labels & (side - 1)]
    scale = math.sqrt(2.0 * (m - 1) / 3.0)
    return torch.complex(re / scale, im / scale)


def qam_modulate(bits: torch.Tensor, modulation: str | int) -> torch.Tensor:
    """Map bits to Gray QAM symbols.

    Parameters
    ----------
    bits : integer or bool tensor [..., n_sym * log2(M)]
        0/1 values, MSB of each symbol first.
    modulation : "qpsk", "qam16", "qam64" or M

    Returns
    -------
    torch.Tensor
        complex64 [..., n_sym].
    """
    m = _order(modulation)
    k = int(math.log2(m))
    if bits.shape[-1] % k:
        raise ValueError(f"last dimension of bits ({bits.shape[-1]}) must be a multiple of log2(M) = {k}")
    b = bits.to(torch.int64).reshape(*bits.shape[:-1], -1, k)
    weights = 2 ** torch.arange(k - 1, -1, -1)
    labels = (b * weights).sum(-1)
    return qam_constellation(m)[labels]


def qam_demodulate(symbols: torch.Tensor, modulation: str | int) -> torch.Tensor:
    """Hard-decision Gray demapping (nearest point, per dimension).

    Parameters
    ----------
    symbols : complex tensor [..., n_sym]
        Equalized symbols.
    modulation : "qpsk", "qam16", "qam64" or M

    Returns
    -------
    torch.Tensor
        int64 [..., n_sym * log2(M)] of 0/1, MSB of each symbol first.
    """
    m = _order(modulation)
    side = math.isqrt(m)
    half = int(math.log2(side))
    scale = math.sqrt(2.0 * (m - 1) / 3.0)

    def dim_bits(x: torch.Tensor) -> torch.Tensor:
        idx = torch.round((x * scale + (side - 1)) / 2.0).clamp(0, side - 1).to(torch.int64)
        gray = idx ^ (idx >> 1)
        shifts = torch.arange(half - 1, -1, -1)
        return (gray.unsqueeze(-1) >> shifts) & 1

    bits = torch.cat([dim_bits(symbols.real.float()), dim_bits(symbols.imag.float())], dim=-1)
    return bits.reshape(*symbols.shape[:-1], -1)


# ----------------------------------------------------------------------------- estimation


def ls_at_pilots(y_pilots: torch.Tensor, x_pilots: torch.Tensor) -> torch.Tensor:
    """Least-squares estimate at the pilots, ``h_p = y_p / x_p``.

    Parameters
    ----------
    y_pilots : complex64 [n, n_pilots]
        Received pilot subcarriers.
    x_pilots : complex64 [n_pilots] or [n, n_pilots]
        Transmitted pilots (non-zero).

    Returns
    -------
    torch.Tensor
        complex64 [n, n_pilots].
    """
    if (x_pilots.abs() == 0).any():
        raise ValueError("pilot symbols must be non-zero for LS estimation")
    return (y_pilots / x_pilots).to(torch.complex64)


def interpolate_linear(h_pilots: torch.Tensor, pilots: torch.Tensor, n_subcarriers: int) -> torch.Tensor:
    """Linear interpolation across subcarriers (real and imaginary parts).

    Subcarriers outside the pilot span take the nearest pilot's value.

    Parameters
    ----------
    h_pilots : complex64 [n, n_pilots]
        Estimates at the pilot subcarriers.
    pilots : int64 [n_pilots]
        Sorted pilot indices.
    n_subcarriers : int
        K.

    Returns
    -------
    torch.Tensor
        complex64 [n, K].
    """
    if h_pilots.shape[-1] != pilots.numel():
        raise ValueError(f"h_pilots has {h_pilots.shape[-1]} columns, expected {pilots.numel()} (one per pilot)")
    k = torch.arange(n_subcarriers)
    if pilots.numel() == 1:
        return h_pilots[:, :1].expand(-1, n_subcarriers).clone()
    right = torch.searchsorted(pilots, k, right=False).clamp(1, pilots.numel() - 1)
    left = right - 1
    p0, p1 = pilots[left].double(), pilots[right].double()
    w = ((k.double() - p0) / (p1 - p0)).clamp(0.0, 1.0).float()
    h0, h1 = h_pilots[:, left], h_pilots[:, right]
    return (h0 * (1 - w) + h1 * w).to(torch.complex64)


def frequency_correlation(H: torch.Tensor) -> torch.Tensor:
    """Sample frequency correlation ``R = E[h h^H]`` of training channels.

    Parameters
    ----------
    H : complex [n, K] (or [n, K, 1, 1] as returned by ``sample_channels`` for SISO)

    Returns
    -------
    torch.Tensor
        complex64 [K, K], Hermitian.
    """
    h = _siso(H).to(torch.complex128)
    R = h.T @ h.conj() / h.shape[0]
    return ((R + R.conj().T) / 2).to(torch.complex64)


def lmmse_estimate(
    h_ls_pilots: torch.Tensor, pilots: torch.Tensor, R: torch.Tensor, noise_var: float | torch.Tensor
) -> torch.Tensor:
    """LMMSE channel estimate from the LS pilots and the frequency correlation.

    ``h = R_{:,P} (R_{P,P} + sigma^2 I)^{-1} h_P`` (unit-modulus pilots, so the LS error at
    the pilots is ``CN(0, sigma^2)``).

    Parameters
    ----------
    h_ls_pilots : complex64 [n, n_pilots]
    pilots : int64 [n_pilots]
    R : complex64 [K, K]
        Frequency correlation (``frequency_correlation``).
    noise_var : float or float tensor [n]
        ``sigma^2`` per sample (linear).

    Returns
    -------
    torch.Tensor
        complex64 [n, K].
    """
    n = h_ls_pilots.shape[0]
    nv = torch.as_tensor(noise_var, dtype=torch.float64).reshape(-1)
    if nv.numel() == 1:
        nv = nv.expand(n)
    if nv.numel() != n:
        raise ValueError(f"noise_var must be a scalar or have {n} entries, got {nv.numel()}")
    R = R.to(torch.complex128)
    Rkp = R[:, pilots]
    Rpp = R[pilots][:, pilots]
    eye = torch.eye(pilots.numel(), dtype=torch.complex128)
    out = torch.empty(n, R.shape[0], dtype=torch.complex128)
    hp = h_ls_pilots.to(torch.complex128)
    for v in torch.unique(nv):
        sel = nv == v
        W = torch.linalg.solve(Rpp + float(v) * eye, Rkp.conj().T).conj().T  # [K, P] = R_kp (R_pp + s I)^-1
        out[sel] = hp[sel] @ W.T
    return out.to(torch.complex64)


def equalize(y: torch.Tensor, h_hat: torch.Tensor) -> torch.Tensor:
    """One-tap zero-forcing equalization ``y / h_hat`` per subcarrier.

    Parameters
    ----------
    y : complex64 [n, n_symbols, K]
        Received data symbols.
    h_hat : complex64 [n, K]
        Channel estimate.

    Returns
    -------
    torch.Tensor
        complex64 [n, n_symbols, K].
    """
    if y.shape[0] != h_hat.shape[0] or y.shape[-1] != h_hat.shape[-1]:
        raise ValueError(f"y {tuple(y.shape)} and h_hat {tuple(h_hat.shape)} disagree on n or K")
    h = torch.where(h_hat.abs() > 1e-12, h_hat, torch.full_like(h_hat, 1e-12))
    return y / h.unsqueeze(1)


# ----------------------------------------------------------------------------- features


def channel_features(h: torch.Tensor) -> torch.Tensor:
    """Complex per-subcarrier values -> real network features ``[re_0..re_{K-1}, im_0..im_{K-1}]``.

    Parameters
    ----------
    h : complex [n, K]

    Returns
    -------
    torch.Tensor
        float32 [n, 2K].
    """
    return symbols_to_real(h)  # the same [Re; Im] layout as the MIMO detector's vectors


def features_to_channel(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``channel_features``: float [n, 2K] -> complex64 [n, K]."""
    return real_to_symbols(x)


# ----------------------------------------------------------------------------- simulation


def _siso(H: torch.Tensor) -> torch.Tensor:
    if H.dim() == 4:
        if H.shape[2] != 1 or H.shape[3] != 1:
            raise ValueError(f"expected a SISO channel [n, K, 1, 1], got {tuple(H.shape)}")
        return H[:, :, 0, 0]
    if H.dim() != 2:
        raise ValueError(f"expected H complex [n, K] or [n, K, 1, 1], got {tuple(H.shape)}")
    return H


@dataclass
class OfdmBatch:
    """One batch of simulated OFDM frames.

    Attributes
    ----------
    h : complex64 [n, K]
        True frequency response.
    pilots : int64 [n_pilots]
        Pilot subcarriers.
    h_ls_pilots : complex64 [n, n_pilots]
        LS estimates at the pilots.
    h_ls : complex64 [n, K]
        LS, linearly interpolated to every subcarrier (the estimator's input).
    y : complex64 [n, n_data_symbols, K]
        Received data symbols.
    bits : int64 [n, n_data_symbols, K * log2(M)]
        Transmitted bits.
    modulation : str or int
    noise_var : float32 [n]
        ``sigma^2`` per frame (linear).
    snr_db : float32 [n]
    """

    h: torch.Tensor
    pilots: torch.Tensor
    h_ls_pilots: torch.Tensor
    h_ls: torch.Tensor
    y: torch.Tensor
    bits: torch.Tensor
    modulation: str | int
    noise_var: torch.Tensor
    snr_db: torch.Tensor

    def __len__(self) -> int:
        return int(self.h.shape[0])

    def features(self) -> torch.Tensor:
        """Estimator input: float32 [n, 2K] (interpolated LS, re | im)."""
        return channel_features(self.h_ls)

    def targets(self) -> torch.Tensor:
        """Estimator target: float32 [n, 2K] (true channel, re | im)."""
        return channel_features(self.h)

    def ber_with(self, h_hat: torch.Tensor) -> float:
        """BER after one-tap equalization with ``h_hat: complex64 [n, K]``."""
        return ber(qam_demodulate(equalize(self.y, h_hat), self.modulation), self.bits)

    def subset(self, idx: torch.Tensor | slice) -> OfdmBatch:
        """The frames ``idx`` (index tensor or slice)."""
        return OfdmBatch(
            self.h[idx], self.pilots, self.h_ls_pilots[idx], self.h_ls[idx], self.y[idx],
            self.bits[idx], self.modulation, self.noise_var[idx], self.snr_db[idx],
        )


def simulate_ofdm(
    H: torch.Tensor,
    snr_db: float | torch.Tensor,
    pilots: torch.Tensor,
    modulation: str | int = "qpsk",
    n_data_symbols: int = 2,
    generator: torch.Generator | None = None,
) -> OfdmBatch:
    """Transmit one pilot symbol and ``n_data_symbols`` data symbols through ``H``.

    Parameters
    ----------
    H : complex64 [n, K] or [n, K, 1, 1]
        Frequency responses (``sample_channels(..., n_subcarriers=K)`` with n_rx = n_tx = 1).
    snr_db : float or float tensor [n]
        SNR per subcarrier in dB (per frame when a tensor).
    pilots : int64 [n_pilots]
        ``pilot_indices(K, ...)``.
    modulation : "qpsk" | "qam16" | "qam64" | int, default "qpsk"
    n_data_symbols : int, default 2
    generator : torch.Generator, optional
        Source of bits, pilots and noise (seed it from ``common.seeding``).

    Returns
    -------
    OfdmBatch
    """
    h = _siso(H).to(torch.complex64)
    n, K = h.shape
    if int(pilots.max()) >= K or int(pilots.min()) < 0:
        raise ValueError(f"pilot indices must lie in [0, {K}), got range [{int(pilots.min())}, {int(pilots.max())}]")
    if n_data_symbols < 1:
        raise ValueError(f"n_data_symbols must be >= 1, got {n_data_symbols}")
    m = _order(modulation)
    k_bits = int(math.log2(m))
    snr = torch.as_tensor(snr_db, dtype=torch.float32).reshape(-1)
    if snr.numel() == 1:
        snr = snr.expand(n).clone()
    if snr.numel() != n:
        raise ValueError(f"snr_db must be a scalar or have {n} entries, got {snr.numel()}")
    nv = noise_variance(snr)  # one stream per subcarrier
    sd = (nv / 2).sqrt()

    def noise(*shape: int) -> torch.Tensor:
        z = torch.complex(torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator))
        return z * sd.reshape(-1, *([1] * (len(shape) - 1)))

    n_p = pilots.numel()
    pilot_bits = torch.randint(0, 2, (n, 2 * n_p), generator=generator)
    x_p = qam_modulate(pilot_bits, "qpsk")
    y_p = h[:, pilots] * x_p + noise(n, n_p)
    h_ls_p = ls_at_pilots(y_p, x_p)
    bits = torch.randint(0, 2, (n, n_data_symbols, K * k_bits), generator=generator)
    x = qam_modulate(bits, m)
    y = h.unsqueeze(1) * x + noise(n, n_data_symbols, K)
    return OfdmBatch(
        h=h, pilots=pilots, h_ls_pilots=h_ls_p, h_ls=interpolate_linear(h_ls_p, pilots, K),
        y=y.to(torch.complex64), bits=bits, modulation=modulation, noise_var=nv, snr_db=snr,
    )
