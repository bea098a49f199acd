"""Detection batches: channels -> pilots, LS estimate, data symbols, received vectors, SDNet input.

SNR definition (everywhere in airfleet's detection code): SNR per receive antenna with
unit-power channel entries (``E|h_ij|^2 = 1``) and unit-power symbols, i.e.
``snr = E||H x||^2 / (n_r sigma_n^2) = n_t / sigma_n^2``, so
``noise_var = sigma_n^2 = n_t * 10**(-snr_db / 10)`` (``common.phy.noise``). Pilot and data symbols see the
same ``sigma_n^2``. Each sample is its own coherence block: its own pilots, LS estimate
and one data vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from common.phy.detection import zf
from common.phy.estimation import ls_channel_estimate
from common.phy.noise import noise_variance
from common.phy.modulation import (
    indices_to_bits,
    indices_to_symbols,
    random_indices,
    symbols_to_real,
)

__all__ = [
    "DetectionBatch",
    "complex_to_real_channel",
    "build_sdnet_input",
    "make_detection_batch",
    "concat_batches",
]


def complex_to_real_channel(H: torch.Tensor) -> torch.Tensor:
    """Eq. (2): ``[[Re H, -Im H], [Im H, Re H]]``.

    Parameters
    ----------
    H : torch.Tensor
        ``complex [n, n_r, n_t]``.

    Returns
    -------
    torch.Tensor
        ``float32 [n, 2 n_r, 2 n_t]``.
    """
    top = torch.cat([H.real, -H.imag], dim=-1)
    bot = torch.cat([H.imag, H.real], dim=-1)
    return torch.cat([top, bot], dim=-2).to(torch.float32)


def build_sdnet_input(H_ls: torch.Tensor, x_zf: torch.Tensor) -> torch.Tensor:
    """SDNet's input image ``[H_LS ; x_ZF^T]`` (Sec. III-B).

    Parameters
    ----------
    H_ls : torch.Tensor
        ``complex [n, n_r, n_t]`` LS channel estimate.
    x_zf : torch.Tensor
        ``complex [n, n_t]`` ZF estimate.

    Returns
    -------
    torch.Tensor
        ``float32 [n, 1, 2 n_r + 1, 2 n_t]``: rows ``0..2n_r-1`` are the real channel of
        eq. (2), the last row is ``[Re x_ZF, Im x_ZF]``.
    """
    Hr = complex_to_real_channel(H_ls)
    xr = symbols_to_real(x_zf).unsqueeze(-2)
    return torch.cat([Hr, xr], dim=-2).unsqueeze(1).contiguous()


@dataclass
class DetectionBatch:
    """One batch of detection samples (one coherence block per sample).

    Attributes
    ----------
    sdnet_input : torch.Tensor
        ``float32 [n, 1, 2 n_r + 1, 2 n_t]`` (``build_sdnet_input(H_ls, zf(y, H_ls))``).
    x : torch.Tensor
        ``float32 [n, 2 n_t]`` transmitted symbols ``[Re; Im]``, entries ``+-1/sqrt(2)``.
    symbols : torch.Tensor
        ``int64 [n, n_t]`` QPSK indices.
    bits : torch.Tensor
        ``uint8 [n, 2 n_t]`` Gray bits in the layout of ``x``: ``bits == (x < 0)``.
    H, H_ls : torch.Tensor
        ``complex64 [n, n_r, n_t]`` true channel and its LS estimate.
    y : torch.Tensor
        ``complex64 [n, n_r]`` received data vectors.
    noise_var : float
        ``sigma_n^2`` (linear).
    snr_db : float
        SNR per receive antenna in dB.
    """

    sdnet_input: torch.Tensor
    x: torch.Tensor
    symbols: torch.Tensor
    bits: torch.Tensor
    H: torch.Tensor
    H_ls: torch.Tensor
    y: torch.Tensor
    noise_var: float
    snr_db: float

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_r(self) -> int:
        return int(self.H.shape[1])

    @property
    def n_t(self) -> int:
        return int(self.H.shape[2])

    @property
    def x_zf(self) -> torch.Tensor:
        """``complex64 [n, n_t]``: the ZF estimate stored in the last input row."""
        row = self.sdnet_input[:, 0, -1, :]
        return torch.complex(row[:, : self.n_t], row[:, self.n_t :])

    def subset(self, idx: slice | Sequence[int] | torch.Tensor | np.ndarray) -> DetectionBatch:
        """The samples ``idx`` (slice, index list or tensor, boolean mask) as a new batch."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
            if idx.dtype == torch.bool:
                if idx.shape != (len(self),):
                    raise ValueError(f"mask must have shape ({len(self)},), got {tuple(idx.shape)}")
            elif idx.dtype.is_floating_point:
                raise ValueError("indices must be integers or a boolean mask")
            else:
                idx = idx.long()
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v[idx] if isinstance(v, torch.Tensor) else v
        return DetectionBatch(**kw)

    def __getitem__(self, idx: slice | Sequence[int] | torch.Tensor) -> DetectionBatch:
        return self.subset(idx)


def make_detection_batch(
    H: torch.Tensor | np.ndarray,
    snr_db: float,
    n_pilots: int = 16,
    generator: torch.Generator | None = None,
) -> DetectionBatch:
    """Simulate pilots, LS estimation and one QPSK data vector per channel.

    Parameters
    ----------
    H : torch.Tensor or np.ndarray
        ``complex [n, n_r, n_t]`` channels with unit-power entries, ``n_r >= n_t``.
    snr_db : float
        SNR per receive antenna (module docstring).
    n_pilots : int, default 16
        ``N_p`` orthogonal pilots (Table III).
    generator : torch.Generator, optional
        Source of the symbol and noise draws (derive it with ``common.seeding``).

    Returns
    -------
    DetectionBatch
    """
    H = torch.as_tensor(H)
    if H.dim() != 3 or not H.is_complex():
        raise ValueError(f"H must be complex [n, n_r, n_t], got {H.dtype} {tuple(H.shape)}")
    n, n_r, n_t = H.shape
    if n_r < n_t:
        raise ValueError(f"need n_r >= n_t for ZF, got n_r={n_r}, n_t={n_t}")
    if not math.isfinite(float(snr_db)):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    H = H.to(torch.complex64)
    nv = noise_variance(snr_db, n_t)
    H_ls = ls_channel_estimate(H, nv, n_pilots, generator)  # eq. (4)-(5)
    symbols = random_indices((n, n_t), generator)
    xs = indices_to_symbols(symbols)
    s = math.sqrt(nv / 2)
    noise = torch.complex(torch.randn((n, n_r), generator=generator) * s, torch.randn((n, n_r), generator=generator) * s)
    y = (H @ xs.unsqueeze(-1)).squeeze(-1) + noise  # eq. (1)
    x_zf = zf(y, H_ls)  # eq. (9)
    return DetectionBatch(
        sdnet_input=build_sdnet_input(H_ls, x_zf),
        x=symbols_to_real(xs),
        symbols=symbols,
        bits=indices_to_bits(symbols),
        H=H,
        H_ls=H_ls,
        y=y.to(torch.complex64),
        noise_var=nv,
        snr_db=float(snr_db),
    )


def concat_batches(batches: Sequence[DetectionBatch]) -> DetectionBatch:
    """Concatenate batches drawn at the same SNR."""
    if not batches:
        raise ValueError("no batches to concatenate")
    if len({(b.snr_db, b.n_r, b.n_t) for b in batches}) != 1:
        raise ValueError("batches must share snr_db, n_r and n_t")
    kw = {}
    for f in fields(DetectionBatch):
        v = getattr(batches[0], f.name)
        kw[f.name] = torch.cat([getattr(b, f.name) for b in batches], 0) if isinstance(v, torch.Tensor) else v
    return DetectionBatch(**kw)
