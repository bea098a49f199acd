"""The codec contract: named float arrays (and a residual) in, one framed bitstream out, and back.

A :class:`Codec` codes a model update — a mapping ``name -> float32 array`` — into one
``KIND_CODEC`` frame of :mod:`common.coding.bitstream` (versioned header, bounded sizes,
CRC; parsed, never unpickled). The frame's kind-specific fields are::

    offset  size  field
    0       16    codec name      ASCII, zero-padded (the registry name)
    16      1     codec format    the codec's own format version
    17      1     reserved        0
    18      2     n_tensors       u16
    20      4     n_params        u32: total elements of all tensors
    24      4     body_len        u32: bytes of the codec's payload (the frame's words, zero-padded)
    28      2     params_len      u16: bytes of the codec's side information that ends the fields
    30      ...   tensor table    per tensor: name length (u8), UTF-8 name, ndim (u8), dims (u32 each)
    ...     P     params          codec-wide side information (levels, k, quantizer, ...)

so the receiver learns names and shapes from the stream, and bounds every count (tensors,
elements, body bytes) against the codec's ``max_params`` before it allocates anything.

A codec implements two methods on flat ``float32`` vectors, one per tensor, in stream order:
:meth:`Codec.encode_body` (returns a :class:`Body`: side information, payload bytes, the
codec's ideal bits and, for error-feedback codecs, what the receiver will decode) and
:meth:`Codec.decode_body` (which may return them as one vector: what :meth:`Codec.decode_flat`
hands a base station). The base class does the framing, the checks, and the error
feedback of stateful codecs: ``acc = x + residual`` is coded and ``residual' = acc -
decoded`` is handed back (Seide et al., 2014; Karimireddy et al., ICML 2019, Alg. 2), so
``sum of decoded updates + final residual = sum of inputs``.
"""

from __future__ import annotations

import abc
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from common.coding.bitstream import FRAME_OVERHEAD_BYTES, KIND_CODEC, BitstreamError, pack_frame, unpack_frame

__all__ = [
    "Codec",
    "Encoded",
    "Body",
    "DEFAULT_MAX_PARAMS",
    "MAX_NAME_BYTES",
    "read_exact",
    "split",
    "unflatten",
]

#: default bound on the elements one stream may declare (64 MiB of float32)
DEFAULT_MAX_PARAMS = 1 << 24
#: codec names are at most this many ASCII characters
MAX_NAME_BYTES = 16
_HEAD = struct.Struct("<16sBBHIIH")
_MAX_FIELDS = 0xFFFF
_MAX_NDIM = 8
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Encoded:
    """One coded update.

    Attributes
    ----------
    data : bytes
        The frame (what goes on the air; ``8 * len(data)`` are the real bits).
    ideal_bits : float
        The codec's own ideal bits for this payload (an estimate, labelled as one): the
        information content of what it codes under its own model (entropy-coded codecs)
        or the bits of its fixed-length fields (fp16, n-bit, sign), side information
        included, framing (names, shapes, CRC) excluded.
    residual : dict of str -> np.ndarray, or None
        Error-feedback state (``float32``, the shapes of the input) to pass to the next
        :meth:`Codec.encode`; None for stateless codecs.
    overhead_bytes : int, default 0
        Bytes of framing and tensor table around the codec's payload
        (``len(data) - overhead_bytes`` is the payload, zero padding to 4 bytes included).
    """

    data: bytes
    ideal_bits: float
    residual: dict[str, np.ndarray] | None
    overhead_bytes: int = 0


@dataclass(frozen=True)
class Body:
    """What a codec's :meth:`Codec.encode_body` returns.

    Attributes
    ----------
    params : bytes
        Codec-wide side information, stored in the frame's fields (at most a few KiB).
    payload : bytes
        The coded values.
    ideal_bits : float
        See :attr:`Encoded.ideal_bits`.
    decoded : list of np.ndarray or None
        Stateful codecs: the flat ``float32`` vectors the receiver will decode (the error
        feedback subtracts them); None otherwise.
    """

    params: bytes
    payload: bytes
    ideal_bits: float
    decoded: list[np.ndarray] | None = None


def split(flat: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """``flat`` cut into consecutive vectors (views) of ``sizes`` (none for no sizes)."""
    out, pos = [], 0
    for n in sizes:
        out.append(flat[pos : pos + n])
        pos += n
    if pos != flat.shape[0]:
        raise ValueError(f"{flat.shape[0]} values do not split into sizes summing to {pos}")
    return out


def unflatten(names: list[str], shapes: list[tuple[int, ...]], flat: np.ndarray) -> dict[str, np.ndarray]:
    """``name -> `` view of ``flat`` of that shape, tensors consecutive in ``names`` order
    (``flat`` holds exactly ``sum(prod(shapes))`` elements)."""
    out, pos = {}, 0
    for k, s in zip(names, shapes):
        n = math.prod(s)
        out[k] = flat[pos : pos + n].reshape(s)
        pos += n
    if pos != flat.shape[0]:
        raise ValueError(f"{flat.shape[0]} values do not hold shapes of {pos} elements")
    return out


def read_exact(buf: bytes, offset: int, n: int, what: str) -> bytes:
    """``buf[offset:offset + n]``, or :class:`BitstreamError` naming ``what`` if it runs short."""
    if n < 0 or offset + n > len(buf):
        raise BitstreamError(f"truncated {what}: needs {n} bytes at offset {offset}, {max(len(buf) - offset, 0)} left")
    return buf[offset : offset + n]


class Codec(abc.ABC):
    """A codec of named float arrays; subclasses set the class attributes and two methods.

    Parameters
    ----------
    max_params : int, default ``DEFAULT_MAX_PARAMS`` (2**24)
        The most elements a stream may declare; larger ones are refused before allocation.

    Class attributes
    ----------------
    name : str
        Registry name (at most 16 ASCII characters), written into every stream.
    lossless : bool
        Decoding gives back the input bit for bit.
    stateful : bool, default False
        Error feedback: :meth:`encode` takes and returns a residual.
    format_version : int, default 1
        The codec's own stream format; a stream of another version is refused.
    """

    name: ClassVar[str]
    lossless: ClassVar[bool]
    stateful: ClassVar[bool] = False
    format_version: ClassVar[int] = 1

    def __init__(self, *, max_params: int = DEFAULT_MAX_PARAMS) -> None:
        if not 0 < int(max_params) <= 0xFFFFFFFF:
            raise ValueError(f"max_params must lie in [1, 2**32 - 1], got {max_params!r}")
        self.max_params = int(max_params)
        self._tables: dict[tuple[int, bytes], tuple[tuple[str, ...], tuple[tuple[int, ...], ...], int, tuple[int, ...]]] = {}

    # -- what a codec implements -------------------------------------------------------

    @abc.abstractmethod
    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        """Code flat ``float32`` vectors (finite; after adding the residual when stateful)."""

    @abc.abstractmethod
    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        """Decode flat ``float32`` vectors of ``sizes`` from untrusted ``params`` and ``payload``:
        a list of them, or one ``float32 [sum(sizes)]`` vector of all of them in order
        (cheaper for many small tensors).

        Raise :class:`BitstreamError` (or ``ValueError``, which the caller turns into one)
        on anything malformed; the caller checks sizes and finiteness of the result.
        """

    def max_payload_bytes(self, n_params: int) -> int:
        """The largest payload a stream of ``n_params`` elements may declare (default ``8 n + 64 KiB``)."""
        return 8 * int(n_params) + 65536

    def error_bound(self, arrays: Mapping[str, np.ndarray]) -> float | None:
        """Stated max absolute reconstruction error for ``arrays``; None: no per-element bound."""
        return 0.0 if self.lossless else None

    # -- the driver ----------------------------------------------------------------------

    def encode(self, arrays: Mapping[str, np.ndarray], residual: dict[str, np.ndarray] | None = None) -> Encoded:
        """Code ``arrays`` (plus ``residual`` for stateful codecs) into one frame.

        Parameters
        ----------
        arrays : mapping of str -> np.ndarray
            Finite float arrays (cast to float32), at most 8 dimensions each; names of at
            most 255 UTF-8 bytes.
        residual : dict of str -> np.ndarray, or None
            Stateful codecs: the residual of the previous :meth:`encode` (same names and
            shapes), or None for zeros. Stateless codecs: must be None.

        Returns
        -------
        Encoded

        Raises
        ------
        ValueError
            Non-finite values, bad names or shapes, a residual that does not match, or more
            than ``max_params`` elements.
        """
        names, shapes, tensors = self._check_input(arrays)
        if residual is not None:
            if not self.stateful:
                raise ValueError(f"codec {self.name!r} keeps no residual; pass residual=None")
            if set(residual) != set(names):
                raise ValueError(f"residual names {sorted(residual)} differ from the arrays' {sorted(names)}")
            for i, k in enumerate(names):
                r = np.asarray(residual[k], dtype=np.float32)
                if r.shape != shapes[i]:
                    raise ValueError(f"residual {k!r} has shape {r.shape}, the array {shapes[i]}")
                tensors[i] = tensors[i] + r.ravel()
            if not all(np.all(np.isfinite(t)) for t in tensors):
                raise ValueError("arrays + residual overflow float32")
        body = self.encode_body(tensors)
        new_residual = None
        if self.stateful:
            if body.decoded is None or len(body.decoded) != len(tensors):
                raise RuntimeError(f"stateful codec {self.name!r} must return what the receiver decodes")
            new_residual = {k: (t - np.asarray(d, dtype=np.float32)).reshape(s) for k, s, t, d in zip(names, shapes, tensors, body.decoded)}
        data, overhead = self._frame(names, shapes, body)
        return Encoded(data=data, ideal_bits=float(body.ideal_bits), residual=new_residual, overhead_bytes=overhead)

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        """Parse, check and decode a frame: ``name -> float32`` array, in stream order.

        Raises
        ------
        BitstreamError
            Truncated, oversized, corrupted (CRC), forged (fields that disagree with each
            other or with this codec), or a payload that does not decode.
        """
        return unflatten(*self.decode_flat(data))

    def decode_flat(self, data: bytes) -> tuple[list[str], list[tuple[int, ...]], np.ndarray]:
        """:meth:`decode` as the stream's names and shapes and one ``float32 [n_params]``
        vector of every tensor in order (what a base station aggregates, with no copy per tensor).

        Raises
        ------
        BitstreamError
            As :meth:`decode`.
        """
        max_words = (self.max_payload_bytes(self.max_params) + 3) // 4
        fields, words = unpack_frame(data, KIND_CODEC, _HEAD.size, max_words, max_fields_len=_MAX_FIELDS)
        name, version, reserved, n_tensors, n_params, body_len, params_len = _HEAD.unpack_from(fields, 0)
        if name != self.name.encode("ascii").ljust(MAX_NAME_BYTES, b"\0"):
            got = name.rstrip(b"\0")
            raise BitstreamError(f"stream coded by {got!r}, this decoder is {self.name!r}")
        if version != self.format_version or reserved != 0:
            raise BitstreamError(f"{self.name} stream format {version} (reserved {reserved}), expected {self.format_version} (0)")
        if n_params > self.max_params:
            raise BitstreamError(f"stream declares {n_params} elements, this decoder takes at most {self.max_params}")
        if body_len > self.max_payload_bytes(n_params):
            raise BitstreamError(f"{self.name} payload of {body_len} bytes declared, at most {self.max_payload_bytes(n_params)} for {n_params} elements")
        # a base station decodes many streams of one layout: parse each table once
        key = (n_tensors, fields[_HEAD.size :])
        table = getattr(self, "_tables", {}).get(key)
        if table is None:
            table = _parse_table(fields, _HEAD.size, n_tensors, self.max_params)
            tables = self.__dict__.setdefault("_tables", {})
            if len(tables) >= 64:
                tables.clear()
            tables[key] = table
        names, shapes, off, sizes = table
        if sum(sizes) != n_params:
            raise BitstreamError(f"tensor table holds {sum(sizes)} elements, the header says {n_params}")
        if off + params_len != len(fields):
            raise BitstreamError(f"header fields are {len(fields)} bytes, table and params take {off + params_len}")
        params = fields[off:]
        raw = words.astype("<u4", copy=False).tobytes()
        if len(raw) != 4 * ((body_len + 3) // 4) or any(raw[body_len:]):
            raise BitstreamError(f"payload is {len(raw)} bytes, {body_len} declared (padding must be zero)")
        try:
            got = self.decode_body(list(sizes), params, raw[:body_len])
        except BitstreamError:
            raise
        except (ValueError, struct.error) as e:
            raise BitstreamError(f"{self.name} payload does not decode: {e}") from e
        if isinstance(got, np.ndarray):
            flat = got
            if flat.dtype != np.float32 or flat.shape != (n_params,):
                raise BitstreamError(f"{self.name} decoded {flat.dtype} {list(flat.shape)}, expected float32 [{n_params}]")
        else:
            if len(got) != len(sizes):
                raise BitstreamError(f"{self.name} decoded {len(got)} tensors, the stream declares {len(sizes)}")
            vecs = [np.asarray(v) for v in got]
            for k, n, v in zip(names, sizes, vecs):
                if v.dtype != np.float32 or v.size != n:
                    raise BitstreamError(f"{self.name} decoded {k!r} as {v.dtype} [{v.size}], expected float32 [{n}]")
            flat = np.concatenate([v.ravel() for v in vecs]) if vecs else np.zeros(0, np.float32)
        # one finiteness pass over all tensors (a base station decodes thousands of small ones)
        if n_params and not np.isfinite(flat).all():
            bad = next(k for k, v in zip(names, split(flat, list(sizes))) if not np.isfinite(v).all())
            raise BitstreamError(f"{self.name} stream decodes {bad!r} to non-finite values")
        return list(names), list(shapes), flat

    # -- helpers -------------------------------------------------------------------------

    def _check_input(self, arrays: Mapping[str, np.ndarray]) -> tuple[list[str], list[tuple[int, ...]], list[np.ndarray]]:
        if not isinstance(arrays, Mapping):
            raise ValueError(f"arrays must be a mapping name -> array, got {type(arrays).__name__}")
        names, shapes, tensors = [], [], []
        for k, a in arrays.items():
            if not isinstance(k, str) or not 0 < len(k.encode("utf-8")) <= 255:
                raise ValueError(f"array names must be non-empty strings of at most 255 UTF-8 bytes, got {k!r}")
            x = np.asarray(a)
            if x.dtype.kind not in "fiu":
                raise ValueError(f"array {k!r} must be real numbers, got dtype {x.dtype}")
            if x.ndim > _MAX_NDIM:
                raise ValueError(f"array {k!r} has {x.ndim} dimensions, at most {_MAX_NDIM}")
            x = x.astype(np.float32)
            if not np.all(np.isfinite(x)):
                raise ValueError(f"array {k!r} holds non-finite values (or values beyond float32)")
            names.append(k)
            shapes.append(tuple(int(d) for d in x.shape))
            tensors.append(x.ravel().copy())
        if len(names) > 0xFFFF:
            raise ValueError(f"at most 65535 arrays per stream, got {len(names)}")
        n = sum(t.size for t in tensors)
        if n > self.max_params:
            raise ValueError(f"{n} elements, codec {self.name!r} takes at most max_params={self.max_params}")
        return names, shapes, tensors

    def _frame(self, names: list[str], shapes: list[tuple[int, ...]], body: Body) -> tuple[bytes, int]:
        table = b"".join(
            struct.pack("<B", len(k.encode())) + k.encode() + struct.pack(f"<B{len(s)}I", len(s), *s) for k, s in zip(names, shapes)
        )
        n = sum(math.prod(s) for s in shapes)
        payload = bytes(body.payload)
        head = _HEAD.pack(self.name.encode("ascii"), self.format_version, 0, len(names), n, len(payload), len(body.params))
        fields = head + table + bytes(body.params)
        if len(fields) > _MAX_FIELDS:
            raise ValueError(f"names, shapes and side information take {len(fields)} bytes, a frame holds at most {_MAX_FIELDS}")
        padded = payload + b"\0" * (-len(payload) % 4)
        data = pack_frame(KIND_CODEC, fields, np.frombuffer(padded, dtype="<u4"))
        return data, FRAME_OVERHEAD_BYTES + len(fields)


def _parse_table(fields: bytes, off: int, n_tensors: int, max_params: int) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], int, tuple[int, ...]]:
    """Names, shapes, the offset after the table and the sizes of the tensor table at ``fields[off:]``."""
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    total = 0
    for i in range(n_tensors):
        (ln,) = read_exact(fields, off, 1, f"name length of tensor {i}")
        raw = read_exact(fields, off + 1, ln, f"name of tensor {i}")
        off += 1 + ln
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BitstreamError(f"tensor {i} name is not UTF-8: {e}") from None
        if not name or name in names:
            raise BitstreamError(f"tensor {i} name {name!r} is empty or repeated")
        (ndim,) = read_exact(fields, off, 1, f"ndim of tensor {name!r}")
        if ndim > _MAX_NDIM:
            raise BitstreamError(f"tensor {name!r} declares {ndim} dimensions, at most {_MAX_NDIM}")
        dims = struct.unpack(f"<{ndim}I", read_exact(fields, off + 1, 4 * ndim, f"dims of tensor {name!r}"))
        off += 1 + 4 * ndim
        total += math.prod(dims)
        if total > max_params:
            raise BitstreamError(f"tensor table declares more than {max_params} elements")
        names.append(name)
        shapes.append(tuple(int(d) for d in dims))
    return tuple(names), tuple(shapes), off, tuple(math.prod(s) for s in shapes)
