"""QPSK with Gray mapping: bits <-> symbol indices <-> unit-power complex symbols.

Conventions (used by every detector, dataset and metric in airfleet):

- symbol index ``k in {0, 1, 2, 3}`` carries the bit pair ``(b_re, b_im) = (k >> 1, k & 1)``;
- the symbol is ``((1 - 2 b_re) + 1j (1 - 2 b_im)) / sqrt(2)`` (unit power, Gray: the
  two nearest neighbours of every point differ in exactly one bit);
- hence the real-valued vector ``x = [Re(x_bar); Im(x_bar)]`` of eq. (2)-(3) has entries
  ``+-1/sqrt(2)`` and the bit that belongs to entry ``x_j`` is ``x_j < 0``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "QPSK_AMPLITUDE",
    "qpsk_constellation",
    "bits_to_indices",
    "indices_to_bits",
    "indices_to_symbols",
    "symbols_to_real",
    "real_to_symbols",
    "hard_qpsk",
    "random_indices",
]

#: amplitude of each real dimension of a unit-power QPSK symbol
QPSK_AMPLITUDE: float = 1.0 / math.sqrt(2.0)


def qpsk_constellation() -> torch.Tensor:
    """The four QPSK points in index order.

    Returns
    -------
    torch.Tensor
        ``complex64 [4]``: index ``k`` -> ``((1-2(k>>1)) + 1j(1-2(k&1))) / sqrt(2)``.
    """
    k = torch.arange(4)
    re = 1.0 - 2.0 * (k >> 1).float()
    im = 1.0 - 2.0 * (k & 1).float()
    return torch.complex(re, im) * QPSK_AMPLITUDE


def _check_indices(idx: torch.Tensor) -> None:
    if idx.dtype.is_floating_point or idx.dtype.is_complex:
        raise ValueError(f"QPSK indices must be an integer tensor, got {idx.dtype}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) > 3):
        raise ValueError("QPSK indices must lie in {0, 1, 2, 3}")


def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
    """Bits in the real-vector layout -> symbol indices.

    Parameters
    ----------
    bits : torch.Tensor
        ``uint8/int64 [..., 2 n_t]`` with values 0/1: ``bits[..., :n_t]`` are the bits of
        the real parts, ``bits[..., n_t:]`` those of the imaginary parts (``bits == (x < 0)``).

    Returns
    -------
    torch.Tensor
        ``int64 [..., n_t]`` indices ``2 b_re + b_im``.
    """
    if bits.shape[-1] % 2:
        raise ValueError(f"bits must have an even last dimension (2 n_t), got {tuple(bits.shape)}")
    b = bits.long()
    if b.numel() and (int(b.min()) < 0 or int(b.max()) > 1):
        raise ValueError("bits must be 0 or 1")
    n_t = b.shape[-1] // 2
    return 2 * b[..., :n_t] + b[..., n_t:]


def indices_to_bits(idx: torch.Tensor) -> torch.Tensor:
    """Symbol indices -> bits in the real-vector layout.

    Parameters
    ----------
    idx : torch.Tensor
        ``int64 [..., n_t]`` in ``{0..3}``.

    Returns
    -------
    torch.Tensor
        ``uint8 [..., 2 n_t]``: ``[b_re of every stream, b_im of every stream]``.
    """
    _check_indices(idx)
    return torch.cat([(idx >> 1) & 1, idx & 1], dim=-1).to(torch.uint8)


def indices_to_symbols(idx: torch.Tensor) -> torch.Tensor:
    """Symbol indices -> unit-power complex QPSK symbols, ``complex64`` of the same shape."""
    _check_indices(idx)
    return qpsk_constellation()[idx.long()]


def symbols_to_real(x: torch.Tensor) -> torch.Tensor:
    """Complex ``[..., n_t]`` -> real ``float32 [..., 2 n_t]`` as ``[Re; Im]`` (eq. 2-3)."""
    return torch.cat([x.real, x.imag], dim=-1).to(torch.float32)


def real_to_symbols(x: torch.Tensor) -> torch.Tensor:
    """Real ``[..., 2 n_t]`` as ``[Re; Im]`` -> complex ``complex64 [..., n_t]``."""
    if x.shape[-1] % 2:
        raise ValueError(f"real vector must have an even last dimension, got {tuple(x.shape)}")
    n_t = x.shape[-1] // 2
    return torch.complex(x[..., :n_t].float(), x[..., n_t:].float())


def hard_qpsk(x: torch.Tensor) -> torch.Tensor:
    """Nearest QPSK point of each complex sample (sign decisions).

    Parameters
    ----------
    x : torch.Tensor
        ``complex [..., n_t]`` soft estimates.

    Returns
    -------
    torch.Tensor
        ``int64 [..., n_t]`` symbol indices.
    """
    if not x.is_complex():
        raise ValueError(f"hard_qpsk expects a complex tensor, got {x.dtype}; use real_to_symbols first")
    return 2 * (x.real < 0).long() + (x.imag < 0).long()


def random_indices(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform i.i.d. QPSK indices, ``int64`` of ``shape``."""
    return torch.randint(0, 4, shape, generator=generator)
