"""Framing of uplink bitstreams: versioned header, bounded sizes, CRC; parse, never unpickle.

Every coded stream airfleet sends (latent CSI, decoder updates) is one *frame*::

    offset  size  field
    0       4     magic           b"AFCF"
    4       1     version         FORMAT_VERSION
    5       1     kind            KIND_LATENT | KIND_UPDATE | KIND_CODEC
    6       2     fields_len      bytes of the kind-specific header that follows (u16)
    8       F     fields          kind-specific header (fixed layout per kind, ``struct``)
    8+F     4     n_words         number of 32-bit range-coder words (u32)
    12+F    4*W   words           range-coder payload, little-endian u32
    12+F+4W 4     crc32           zlib CRC-32 of every byte before it

All integers are little-endian. The parser checks the total length against the caller's
bound *before* it looks at anything else, checks every count against its bound before
allocating, and checks the CRC before it returns; every failure is a
:class:`BitstreamError` whose message says what was expected.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = [
    "BitstreamError",
    "FORMAT_VERSION",
    "MAGIC",
    "KIND_LATENT",
    "KIND_UPDATE",
    "KIND_CODEC",
    "FRAME_OVERHEAD_BYTES",
    "pack_frame",
    "unpack_frame",
    "crc32_of_arrays",
    "check_exact_coding",
]

MAGIC = b"AFCF"
FORMAT_VERSION = 1
KIND_LATENT = 1
KIND_UPDATE = 2
#: a codec-registry stream (``common.coding.codec_base``): named tensors coded by one codec
KIND_CODEC = 3
_PREFIX = struct.Struct("<4sBBH")
_U32 = struct.Struct("<I")
#: bytes a frame adds around its kind-specific fields and payload
FRAME_OVERHEAD_BYTES = _PREFIX.size + 2 * _U32.size


class BitstreamError(ValueError):
    """A stream that is malformed, truncated, forged, oversized or made for another model."""


def pack_frame(kind: int, fields: bytes, words: np.ndarray) -> bytes:
    """Frame a range-coder payload.

    Parameters
    ----------
    kind : int
        ``KIND_LATENT`` or ``KIND_UPDATE``.
    fields : bytes
        The kind-specific header (at most 65535 bytes).
    words : np.ndarray
        ``uint32 [n_words]``: the range coder's compressed words.

    Returns
    -------
    bytes
        The frame (``FRAME_OVERHEAD_BYTES + len(fields) + 4 * n_words`` bytes).
    """
    if kind not in (KIND_LATENT, KIND_UPDATE, KIND_CODEC):
        raise ValueError(f"kind must be KIND_LATENT, KIND_UPDATE or KIND_CODEC, got {kind!r}")
    if len(fields) > 0xFFFF:
        raise ValueError(f"fields must be at most 65535 bytes, got {len(fields)}")
    w = np.ascontiguousarray(words, dtype="<u4")
    if w.ndim != 1:
        raise ValueError(f"words must be a rank-1 uint32 array, got shape {w.shape}")
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, kind, len(fields)) + bytes(fields) + _U32.pack(w.size) + w.tobytes()
    return body + _U32.pack(zlib.crc32(body))


def unpack_frame(
    data: bytes, kind: int, fields_len: int, max_words: int, *, max_fields_len: int | None = None
) -> tuple[bytes, np.ndarray]:
    """Parse and check a frame; the inverse of :func:`pack_frame`.

    Parameters
    ----------
    data : bytes
        The untrusted frame.
    kind : int
        The kind the caller expects.
    fields_len : int
        The exact size of that kind's fields (the least size when ``max_fields_len`` is set).
    max_words : int
        Upper bound on the payload, in 32-bit words (the caller derives it from the sizes
        it is willing to decode).
    max_fields_len : int or None, default None
        For kinds whose fields vary in size: the largest size accepted (``fields_len`` is
        then the smallest); None: the fields are exactly ``fields_len`` bytes.

    Returns
    -------
    fields : bytes
    words : np.ndarray
        ``uint32 [n_words]`` (a copy, native byte order).

    Raises
    ------
    BitstreamError
        On any deviation from the format, a size beyond the bounds, or a CRC mismatch.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    min_flen = fields_len
    max_flen = fields_len if max_fields_len is None else min(int(max_fields_len), 0xFFFF)
    max_len = FRAME_OVERHEAD_BYTES + max_flen + 4 * max_words
    if len(data) < FRAME_OVERHEAD_BYTES + fields_len:
        raise BitstreamError(
            f"truncated stream: {len(data)} bytes, a frame of this kind needs at least {FRAME_OVERHEAD_BYTES + fields_len}"
        )
    if len(data) > max_len:
        raise BitstreamError(f"oversized stream: {len(data)} bytes, at most {max_len} expected")
    magic, version, got_kind, got_flen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported format version {version}, expected {FORMAT_VERSION}")
    if got_kind != kind:
        raise BitstreamError(f"stream kind {got_kind}, expected {kind}")
    if not min_flen <= got_flen <= max_flen:
        expected = f"{fields_len}" if min_flen == max_flen else f"{min_flen} to {max_flen}"
        raise BitstreamError(f"header fields of {got_flen} bytes, expected {expected}")
    if len(data) < FRAME_OVERHEAD_BYTES + got_flen:
        raise BitstreamError(f"truncated stream: {len(data)} bytes, its header fields alone need {FRAME_OVERHEAD_BYTES + got_flen}")
    off = _PREFIX.size
    fields = data[off : off + got_flen]
    off += got_flen
    (n_words,) = _U32.unpack_from(data, off)
    off += _U32.size
    if n_words > max_words:
        raise BitstreamError(f"payload of {n_words} words declared, at most {max_words} allowed")
    expect_len = off + 4 * n_words + _U32.size
    if len(data) != expect_len:
        raise BitstreamError(f"stream is {len(data)} bytes but its header declares {expect_len}")
    (crc,) = _U32.unpack_from(data, expect_len - _U32.size)
    if zlib.crc32(memoryview(data)[: expect_len - _U32.size]) != crc:
        raise BitstreamError("CRC mismatch: the stream was corrupted")
    words = np.frombuffer(data, dtype="<u4", count=n_words, offset=off).astype(np.uint32)
    return fields, words


def crc32_of_arrays(arrays: list[np.ndarray]) -> int:
    """CRC-32 over the raw bytes of float32 arrays, in order (a model-state fingerprint).

    Parameters
    ----------
    arrays : list of np.ndarray
        Cast to little-endian float32 before hashing.

    Returns
    -------
    int
        Unsigned 32-bit checksum.
    """
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a, dtype="<f4").tobytes(), crc)
    return crc & 0xFFFFFFFF


def check_exact_coding(words: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Refuse a payload whose words are not exactly the coding of what they decode to.

    A range decoder reads only the words it needs and takes any word values, so a frame
    with words appended, or replaced (a valid CRC recomputed over them), would decode
    without complaint. Range coding is deterministic, so re-coding the decoded symbols
    (``expected``) must give back every declared word.

    Parameters
    ----------
    words : np.ndarray
        ``uint32 [n]``: the frame's declared payload words.
    expected : np.ndarray
        ``uint32 [m]``: the coding of the decoded symbols.
    what : str
        The payload's name for the message (``"latent"``, ``"update"``).

    Raises
    ------
    BitstreamError
        Naming how many words were declared, how many the symbols take and, unless words
        were only appended, the first word that differs.
    """
    n, m = int(words.size), int(expected.size)
    if n == m and np.asarray(words, dtype="<u4").tobytes() == np.asarray(expected, dtype="<u4").tobytes():
        return  # the usual case, settled by one comparison of the bytes
    diff = np.flatnonzero(np.asarray(expected[: min(n, m)]) != np.asarray(words[: min(n, m)]))
    if diff.size == 0 and n > m:
        raise BitstreamError(f"{what} payload declares {n} words but its symbols take {m}: {n - m} words appended")
    if diff.size or n != m:
        first = int(diff[0]) if diff.size else n
        raise BitstreamError(
            f"{what} payload is not the coding of what it decodes to: {n} words declared, the symbols take "
            f"{m}, first differing word {first}: words replaced or missing"
        )
