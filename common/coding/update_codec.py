"""Quantize, range-code and apply decoder updates (eq. 12-15, 19).

A decoder state is an ordered list of float32 arrays (the same order at both ends). The
update to send is ``k = clip(round((theta' - theta) / t), k_min, k_max)`` (eq. 12-14) for
every parameter, flattened in that order; both ends apply it as ``theta + float32(t) * k``
with the same NumPy float32 arithmetic, so their decoders agree bit for bit.

Header fields (``KIND_UPDATE``): ``n_params`` (u32), ``n_bins`` (u16), prior id (u8),
reserved (u8), ``t``, ``sigma``, ``alpha`` (float32 each), ``base_tag`` (u32: CRC of the
decoder state the update applies to), ``n_nonzero`` (u32). The receiver compares every field
with its own configuration and state before it decodes a single symbol.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

import numpy as np

from common.coding.bitstream import KIND_UPDATE, BitstreamError, pack_frame, unpack_frame
from common.coding.range_coder import RangeReader, RangeWriter, decode_exact, ideal_bits
from common.coding.spike_slab import SpikeSlabPrior, UniformPrior, UpdatePrior, UpdateQuantizer

__all__ = [
    "PRIOR_IDS",
    "quantize_update",
    "apply_update",
    "dequantize_update",
    "encode_update",
    "decode_update",
    "update_ideal_bits",
    "pack_update",
    "unpack_update",
    "update_norm",
]

PRIOR_IDS: dict[str, int] = {"spike_slab": 1, "uniform": 2}
_FIELDS = struct.Struct("<IHBBfffII")


def update_norm(arrays: Iterable[np.ndarray]) -> float:
    """L2 norm over every array of an update, exactly rounded: each float32 value squared in
    float64 (exact) and summed by ``math.fsum``, so the figure does not depend on memory
    alignment, SIMD width or BLAS threads (a same-seed run gives the same bits)."""
    return math.sqrt(math.fsum(x for a in arrays for x in np.square(np.asarray(a, dtype=np.float64).ravel()).tolist()))


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays]) if arrays else np.zeros(0, np.float32)


def quantize_update(new: list[np.ndarray], base: list[np.ndarray], quantizer: UpdateQuantizer) -> np.ndarray:
    """Integer update ``k`` (eq. 13-14) from ``new - base``.

    Parameters
    ----------
    new, base : list of np.ndarray
        float32 parameter arrays, same shapes, same order.
    quantizer : UpdateQuantizer

    Returns
    -------
    np.ndarray
        ``int32 [n_params]`` in ``[k_min, k_max]``.
    """
    if len(new) != len(base) or any(np.shape(a) != np.shape(b) for a, b in zip(new, base)):
        raise ValueError("new and base must list arrays of the same shapes in the same order")
    delta = _flat(new).astype(np.float64) - _flat(base).astype(np.float64)
    k = np.clip(np.rint(delta / quantizer.t), quantizer.k_min, quantizer.k_max)
    return k.astype(np.int32)


def apply_update(base: list[np.ndarray], k: np.ndarray, quantizer: UpdateQuantizer) -> list[np.ndarray]:
    """``theta + float32(t) * k`` per array (float32 arithmetic; the same at both ends).

    Parameters
    ----------
    base : list of np.ndarray
        float32 arrays (not modified).
    k : np.ndarray
        ``int32 [n_params]``, ``n_params`` = total size of ``base``.

    Returns
    -------
    list of np.ndarray
        New float32 arrays with the shapes of ``base``.
    """
    k = np.asarray(k)
    total = sum(int(np.size(a)) for a in base)
    if k.shape != (total,):
        raise ValueError(f"update must be a flat vector of {total} integers, got shape {k.shape}")
    step = dequantize_update(k, quantizer)
    out, pos = [], 0
    for a in base:
        a32 = np.asarray(a, dtype=np.float32)
        n = a32.size
        out.append(np.add(a32, step[pos : pos + n].reshape(a32.shape), dtype=np.float32))
        pos += n
    return out


def dequantize_update(k: np.ndarray, quantizer: UpdateQuantizer) -> np.ndarray:
    """``float32(t) * float32(k)``: the step :func:`apply_update` adds (``float32``, the shape of ``k``).

    On a zero base it is what ``apply_update`` gives, bit for bit: ``t > 0`` never makes ``-0.0``.
    """
    return np.multiply(np.asarray(k).astype(np.float32), np.float32(quantizer.t), dtype=np.float32)


def _prior_fields(prior: UpdatePrior) -> tuple[int, float, float]:
    if isinstance(prior, SpikeSlabPrior):
        return PRIOR_IDS["spike_slab"], prior.sigma, prior.alpha
    if isinstance(prior, UniformPrior):
        return PRIOR_IDS["uniform"], 0.0, 0.0
    raise ValueError(f"unsupported prior {type(prior).__name__}")


def encode_update(k: np.ndarray, prior: UpdatePrior) -> np.ndarray:
    """Range-code integer updates with the prior's discretized PMF (eq. 15): ``uint32`` words."""
    q = prior.quantizer
    w = RangeWriter()
    try:  # the writer refuses symbols k - k_min outside [0, n_bins)
        w.write(np.asarray(k, dtype=np.int64).ravel() - q.k_min, prior.pmf())
    except ValueError:
        raise ValueError(f"update integers must lie in [{q.k_min}, {q.k_max}]") from None
    return w.words()


def decode_update(words: np.ndarray, prior: UpdatePrior, n_params: int) -> np.ndarray:
    """Inverse of :func:`encode_update`: ``int32 [n_params]``; ``ValueError`` on undecodable data."""
    q = prior.quantizer
    return RangeReader(words).read(prior.pmf(), n_params) + np.int32(q.k_min)


def update_ideal_bits(k: np.ndarray, prior: UpdatePrior) -> float:
    """Information content of ``k`` under the prior (eq. 19), bits."""
    return ideal_bits(np.asarray(k, dtype=np.int64).ravel() - prior.quantizer.k_min, prior.pmf())


def pack_update(k: np.ndarray, prior: UpdatePrior, base_tag: int) -> bytes:
    """Code and frame an update; ``base_tag`` is the CRC of the decoder it applies to."""
    k = np.asarray(k).ravel()
    pid, sigma, alpha = _prior_fields(prior)
    q = prior.quantizer
    fields = _FIELDS.pack(k.size, int(q.n_bins) & 0xFFFF, pid, 0, q.t, sigma, alpha, int(base_tag) & 0xFFFFFFFF, int(np.count_nonzero(k)))
    return pack_frame(KIND_UPDATE, fields, encode_update(k, prior))


def unpack_update(data: bytes, prior: UpdatePrior, n_params: int, base_tag: int) -> np.ndarray:
    """Parse, check and decode an update frame.

    Parameters
    ----------
    data : bytes
        Untrusted stream.
    prior : UpdatePrior
        The receiver's prior (its quantizer fixes ``t`` and ``n_bins``).
    n_params : int
        Parameters of the receiver's decoder.
    base_tag : int
        CRC of the receiver's current decoder for that device.

    Returns
    -------
    np.ndarray
        ``int32 [n_params]``.

    Raises
    ------
    BitstreamError
        Wrong sizes, another quantizer or prior, another base decoder, or bad payload.
    """
    q = prior.quantizer
    # the largest bin costs at most ~24 bits at the coder's precision; allow 32 + slack
    max_words = n_params + 8
    fields, words = unpack_frame(data, KIND_UPDATE, _FIELDS.size, max_words)
    n, n_bins, pid, _, t, sigma, alpha, tag, nnz = _FIELDS.unpack(fields)
    if n != n_params:
        raise BitstreamError(f"update for {n} parameters, this decoder has {n_params}")
    my_pid, my_sigma, my_alpha = _prior_fields(prior)
    if n_bins != (int(q.n_bins) & 0xFFFF) or pid != my_pid:
        raise BitstreamError(f"update quantized with n_bins={n_bins}, prior id {pid}; expected n_bins={q.n_bins}, prior id {my_pid}")
    if (np.float32(t), np.float32(sigma), np.float32(alpha)) != (np.float32(q.t), np.float32(my_sigma), np.float32(my_alpha)):
        raise BitstreamError(f"update made with t={t}, sigma={sigma}, alpha={alpha}; expected t={q.t}, sigma={my_sigma}, alpha={my_alpha}")
    if tag != (int(base_tag) & 0xFFFFFFFF):
        raise BitstreamError(f"update made against decoder {tag:08x}, the base station holds {int(base_tag) & 0xFFFFFFFF:08x}")
    if nnz > n:
        raise BitstreamError(f"header claims {nnz} non-zero updates out of {n}")
    try:  # what decode_update decodes, refused unless the words are exactly encode_update's
        k = decode_exact(words, prior.pmf(), n, "update") + np.int32(q.k_min)
    except BitstreamError:
        raise
    except ValueError as e:
        raise BitstreamError(f"update payload does not decode: {e}") from e
    if int(np.count_nonzero(k)) != nnz:
        raise BitstreamError(f"decoded {int(np.count_nonzero(k))} non-zero updates, header says {nnz}")
    return k
