"""Range coding of integer latents with the learned per-channel PMF tables (plus escape).

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. II-B: the quantized latents entropy-coded with
the learned factorized prior; their actual length is what eq. (5) estimates.

Stream layout inside the frame payload (one range-coded queue):

1. for each channel ``c`` in order: every symbol of that channel (batch-major, then row,
   column), coded with the table of channel ``c``; an integer outside the table's range is
   coded as the escape symbol (index ``n_symbols``);
2. for each escaped value in the same order: which side it left the table on (1 bit) and how
   far beyond the edge it lies (``ESCAPE_MAGNITUDE_BITS`` bits, two uniform halves).

Header fields (``KIND_LATENT``): batch ``n`` (u32), ``C, H, W`` (u16 each), reserved (u16),
``model_tag`` (u32, the CRC of the decoder state the latents were coded for).

The receiver accepts a payload only if it is exactly the coding of the latents it decodes
to: every declared word consumed, none appended or replaced (a forged frame with a
recomputed CRC would otherwise decode into other CSI).
"""

from __future__ import annotations

import struct

import numpy as np

from common.coding.bitstream import KIND_LATENT, BitstreamError, check_exact_coding, pack_frame, unpack_frame
from common.coding.entropy_models import PmfTable
from common.coding.range_coder import RangeReader, RangeWriter

__all__ = [
    "ESCAPE_MAGNITUDE_BITS",
    "encode_latents",
    "decode_latents",
    "latent_ideal_bits",
    "pack_latents",
    "unpack_latents",
]

#: bits that carry an escaped value's distance beyond its table edge (plus 1 side bit)
ESCAPE_MAGNITUDE_BITS = 20
_HALF = ESCAPE_MAGNITUDE_BITS // 2
_FIELDS = struct.Struct("<IHHHHI")


def _check(y: np.ndarray, tables: list[PmfTable]) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim < 2 or y.shape[1] != len(tables):
        raise ValueError(f"expected integer latents [batch, {len(tables)}, ...], got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"latents must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def _split(v: np.ndarray, t: PmfTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symbol indices, escape sides and escape magnitudes for one channel's values."""
    idx = v - t.offset
    esc = (idx < 0) | (idx >= t.n_symbols)
    sym = np.where(esc, t.n_symbols, idx).astype(np.int32)
    ev = idx[esc]
    side = (ev >= t.n_symbols).astype(np.int32)
    mag = np.where(side == 1, ev - t.n_symbols, -ev - 1)
    if mag.size and mag.max() >= (1 << ESCAPE_MAGNITUDE_BITS):
        raise ValueError(f"latent value beyond the escape range (2**{ESCAPE_MAGNITUDE_BITS} past the table edge)")
    return sym, side, mag


def encode_latents(y: np.ndarray, tables: list[PmfTable]) -> tuple[np.ndarray, int]:
    """Range-code integer latents.

    Parameters
    ----------
    y : np.ndarray
        ``int [batch, C, ...]`` quantized latents.
    tables : list of PmfTable
        One per channel (``DeepFactorized.pmf_tables()``).

    Returns
    -------
    words : np.ndarray
        ``uint32 [n_words]``.
    n_escapes : int
        Values sent through the escape symbol.
    """
    y = _check(y, tables)
    w = RangeWriter()
    sides, mags = [], []
    for c, t in enumerate(tables):
        sym, side, mag = _split(y[:, c].ravel(), t)
        w.write(sym, t.pmf)
        sides.append(side)
        mags.append(mag)
    side = np.concatenate(sides)
    mag = np.concatenate(mags)
    for s, m in zip(side, mag):  # escapes are rare: one small triple each
        w.write_uniform(np.array([s]), 2)
        w.write_uniform(np.array([m >> _HALF, m & ((1 << _HALF) - 1)]), 1 << _HALF)
    return w.words(), int(side.size)


def decode_latents(words: np.ndarray, tables: list[PmfTable], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`encode_latents`: ``int32`` latents of ``shape`` ``[batch, C, ...]``.

    Raises
    ------
    ValueError
        If the range decoder rejects the words.
    """
    if len(shape) < 2 or shape[1] != len(tables):
        raise ValueError(f"shape must be [batch, {len(tables)}, ...], got {shape}")
    r = RangeReader(words)
    per_channel = int(np.prod(shape)) // shape[1]
    syms = [r.read(t.pmf, per_channel) for t in tables]
    out = np.empty((shape[1], per_channel), dtype=np.int64)
    for c, (t, s) in enumerate(zip(tables, syms)):
        out[c] = s.astype(np.int64) + t.offset
    for c, (t, s) in enumerate(zip(tables, syms)):
        for j in np.flatnonzero(s == t.n_symbols):
            side = int(r.read_uniform(2, 1)[0])
            hi, lo = r.read_uniform(1 << _HALF, 2)
            m = (int(hi) << _HALF) | int(lo)
            out[c, j] = t.offset + t.n_symbols + m if side else t.offset - m - 1
    y = out.reshape((shape[1], shape[0]) + tuple(shape[2:]))
    return np.ascontiguousarray(np.moveaxis(y, 0, 1)).astype(np.int32)


def latent_ideal_bits(y: np.ndarray, tables: list[PmfTable]) -> float:
    """Information content of ``y`` under the tables, escapes included (bits)."""
    y = _check(y, tables)
    bits = 0.0
    for c, t in enumerate(tables):
        sym, side, _ = _split(y[:, c].ravel(), t)
        bits += float(-np.log2(t.pmf[sym]).sum()) + side.size * (1 + ESCAPE_MAGNITUDE_BITS)
    return bits


def pack_latents(y: np.ndarray, tables: list[PmfTable], model_tag: int) -> bytes:
    """Code and frame latents ``int [batch, C, H, W]``; ``model_tag`` names the decoder state."""
    y = np.asarray(y)
    if y.ndim != 4:
        raise ValueError(f"expected latents [batch, C, H, W], got shape {y.shape}")
    n, c, h, w_ = y.shape
    if not (n < 2**32 and max(c, h, w_) < 2**16):
        raise ValueError(f"latent shape {y.shape} does not fit the header")
    words, _ = encode_latents(y, tables)
    fields = _FIELDS.pack(n, c, h, w_, 0, int(model_tag) & 0xFFFFFFFF)
    return pack_frame(KIND_LATENT, fields, words)


def unpack_latents(
    data: bytes, tables: list[PmfTable], chw: tuple[int, int, int], max_batch: int, model_tag: int
) -> np.ndarray:
    """Parse, check and decode a latent frame.

    Parameters
    ----------
    data : bytes
        Untrusted stream.
    tables : list of PmfTable
        The receiver's tables (one per channel).
    chw : (int, int, int)
        The latent shape the receiver's model expects per sample.
    max_batch : int
        Most samples one stream may carry.
    model_tag : int
        The receiver's decoder fingerprint; a stream coded for another decoder is refused.

    Returns
    -------
    np.ndarray
        ``int32 [batch, C, H, W]``.

    Raises
    ------
    BitstreamError
        A malformed frame, a shape, batch or decoder tag the receiver does not expect, a
        payload that does not decode, or one that is not exactly the coding of the latents
        it decodes to (words appended or replaced).
    """
    per = int(np.prod(chw))
    max_words = 2 * max_batch * per + 8  # <= 64 bits per symbol (24-bit coder precision + escape)
    fields, words = unpack_frame(data, KIND_LATENT, _FIELDS.size, max_words)
    n, c, h, w_, _, tag = _FIELDS.unpack(fields)
    if (c, h, w_) != tuple(chw):
        raise BitstreamError(f"latent shape {(c, h, w_)} per sample, expected {tuple(chw)}")
    if not 1 <= n <= max_batch:
        raise BitstreamError(f"latent batch {n}, expected 1..{max_batch}")
    if tag != (int(model_tag) & 0xFFFFFFFF):
        raise BitstreamError(f"latents were coded for decoder {tag:08x}, this decoder is {int(model_tag) & 0xFFFFFFFF:08x}")
    try:
        y = decode_latents(words, tables, (n, c, h, w_))
    except ValueError as e:
        raise BitstreamError(f"latent payload does not decode: {e}") from e
    _check_exact(words, y, tables)
    return y


def _check_exact(words: np.ndarray, y: np.ndarray, tables: list[PmfTable]) -> None:
    """Refuse a payload that is not exactly the range coding of the latents it decodes to.

    The range decoder reads only the words it needs and takes any word values, so a frame
    with words appended, or replaced (a valid CRC recomputed over them), would decode into
    other or the same latents without complaint. Range coding is deterministic: the
    sender's words are the coding of its latents, so re-coding the decoded latents must
    give back every declared word.

    Raises
    ------
    BitstreamError
        See :func:`common.coding.bitstream.check_exact_coding`.
    """
    expect, _ = encode_latents(y, tables)
    check_exact_coding(words, expect, "latent")
