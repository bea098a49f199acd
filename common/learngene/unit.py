"""The learngene unit: tensors + metadata, its content hash and pickle-free file format,
and extraction from the collective model.

Paper: Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene", 2025,
Sec. IV-D (the unit: the significant layers of the collective model), V-B.

A unit holds the conv weights and biases of ``M`` consecutive significant layers
(``"{m}.weight"``, ``"{m}.bias"`` for ``m = 0..M-1``) and ConfigRecord-compatible
metadata (``layer_ids``, ``source_n_conv``, ``n_r``, ``n_t``, ``segment``, ``n_params``,
``content_hash``). Placement into individual models is in ``common.learngene.expansion``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.models.sdnet import SDNet

__all__ = [
    "UNIT_VERSION",
    "LearngeneUnit",
    "extract_unit",
    "write_array_file",
    "read_array_file",
    "content_hash",
    "segment_layer_ids",
]

UNIT_VERSION: int = 1

_MAGIC = b"AFARRAY1"
_MAX_HEADER = 1 << 20  # bytes of JSON header
_MAX_PAYLOAD = 1 << 30  # bytes of tensor data
_DTYPES = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}


def _canonical_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in meta.items() if k != "content_hash"}, sort_keys=True).encode()


def content_hash(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """sha256 hex over sorted (name, dtype, shape, little-endian bytes) and the meta JSON
    (without its own ``content_hash`` key)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        a = tensors[k]
        h.update(k.encode() + b"\0" + str(a.dtype.str).encode() + b"\0" + str(tuple(a.shape)).encode() + b"\0")
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(_canonical_meta(meta))
    return h.hexdigest()


def _check_meta_value(key: str, v: Any) -> None:
    ok = (str, int, float, bool)
    if isinstance(v, ok):
        return
    if isinstance(v, list) and all(isinstance(x, ok) for x in v) and len({type(x) for x in v}) <= 1:
        return
    raise ValueError(f"meta[{key!r}] must be str/int/float/bool or a homogeneous list of those, got {v!r}")


@dataclass
class LearngeneUnit:
    """A learngene: consecutive significant conv layers cut from a collective SDNet.

    Attributes
    ----------
    tensors : dict of str -> np.ndarray
        ``float32`` arrays named ``"{m}.weight"`` (``[c_out, c_in, 3, 3]``) and
        ``"{m}.bias"`` (``[c_out]``) for unit layer ``m = 0..M-1`` (top to bottom).
    meta : dict
        ConfigRecord-compatible values: ``version``, ``layer_ids`` (significant layer ids
        in the source model), ``source_n_conv``, ``n_r``, ``n_t`` (antennas learnt at),
        ``segment``, significance statistics, ``n_params`` and ``content_hash``.
    """

    tensors: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, v in list(self.tensors.items()):
            if not isinstance(v, np.ndarray) or v.dtype != np.float32:
                raise ValueError(f"unit tensor {k!r} must be a float32 ndarray, got {type(v).__name__} {getattr(v, 'dtype', '')}")
            self.tensors[k] = np.ascontiguousarray(v, dtype="<f4")
        for k, v in self.meta.items():
            _check_meta_value(k, v)
        n = self.n_layers
        expect = {f"{m}.{p}" for m in range(n) for p in ("weight", "bias")}
        if set(self.tensors) != expect:
            raise ValueError(f"unit tensors must be {sorted(expect)}, got {sorted(self.tensors)}")
        got = self.meta.get("content_hash")
        want = content_hash(self.tensors, self.meta)
        if got is None:
            self.meta["content_hash"] = want
        elif got != want:
            raise ValueError("learngene unit content hash mismatch: tensors or metadata were altered")

    @property
    def n_layers(self) -> int:
        """Number of conv layers ``M`` in the unit."""
        return len(self.tensors) // 2

    @property
    def n_params(self) -> int:
        return int(sum(a.size for a in self.tensors.values()))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The tensors (for a Flower ``ArrayRecord``); metadata travels separately."""
        return dict(self.tensors)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LearngeneUnit:
        """Rebuild a unit; ``ValueError`` if ``meta['content_hash']`` does not match."""
        if "content_hash" not in meta:
            raise ValueError("meta lacks 'content_hash'; refusing an unverifiable unit")
        return cls({k: np.asarray(v) for k, v in arrays.items()}, dict(meta))

    def save(self, path: str | Path) -> None:
        """Write the unit (``write_array_file`` format, no pickle)."""
        write_array_file(path, self.tensors, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> LearngeneUnit:
        """Read and verify a unit written by ``save``; ``ValueError`` on any inconsistency."""
        tensors, meta = read_array_file(path)
        return cls.from_arrays(tensors, meta)


def write_array_file(path: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write named arrays and JSON metadata without pickle.

    Layout: ``b"AFARRAY1"``, header length (uint64 little-endian), a UTF-8 JSON header
    ``{"meta": ..., "tensors": {name: {"dtype", "shape", "offset", "nbytes"}}}``, then the
    raw little-endian tensor bytes in header order. dtypes: float32 and int64.
    """
    entries: dict[str, dict[str, Any]] = {}
    chunks: list[bytes] = []
    off = 0
    for k in sorted(tensors):
        a = np.asarray(tensors[k])
        name = {np.dtype("float32"): "float32", np.dtype("int64"): "int64"}.get(a.dtype)
        if name is None:
            raise ValueError(f"array {k!r}: dtype {a.dtype} not supported (float32, int64)")
        b = np.ascontiguousarray(a, dtype=_DTYPES[name]).tobytes()
        entries[k] = {"dtype": name, "shape": list(a.shape), "offset": off, "nbytes": len(b)}
        chunks.append(b)
        off += len(b)
    digest = hashlib.blake2b(b"".join(chunks), digest_size=16).hexdigest()  # caught on read: a flipped bit is never loaded
    header = json.dumps({"meta": meta, "tensors": entries, "blake2b": digest}, sort_keys=True).encode()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + struct.pack("<Q", len(header)) + header)
        for c in chunks:
            f.write(c)
    tmp.replace(path)


def read_array_file(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a ``write_array_file`` file, validating sizes before allocating anything.

    Raises
    ------
    ValueError
        Bad magic, oversize or malformed header, unknown dtype, inconsistent
        shape/offset/size, or trailing bytes.
    """
    data = Path(path).read_bytes()
    if len(data) < 16 or data[:8] != _MAGIC:
        raise ValueError(f"{path}: not an airfleet array file (bad magic)")
    (hlen,) = struct.unpack("<Q", data[8:16])
    if hlen > _MAX_HEADER or 16 + hlen > len(data):
        raise ValueError(f"{path}: header length {hlen} out of bounds")
    try:
        header = json.loads(data[16 : 16 + hlen].decode())
        meta, entries = header["meta"], header["tensors"]
        if not isinstance(meta, dict) or not isinstance(entries, dict):
            raise TypeError
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed header") from e
    payload = memoryview(data)[16 + hlen :]
    if len(payload) > _MAX_PAYLOAD:
        raise ValueError(f"{path}: payload of {len(payload)} bytes exceeds {_MAX_PAYLOAD}")
    digest = header.get("blake2b")
    if digest is not None and hashlib.blake2b(payload, digest_size=16).hexdigest() != digest:
        raise ValueError(f"{path}: tensor bytes fail their BLAKE2b checksum (corrupted file)")
    out: dict[str, np.ndarray] = {}
    end = 0
    for k, e in entries.items():
        try:
            dt = _DTYPES[e["dtype"]]
            shape = [int(s) for s in e["shape"]]
            off, nb = int(e["offset"]), int(e["nbytes"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad entry for {k!r}") from err
        if min(shape, default=1) < 0 or off != end or nb != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ValueError(f"{path}: entry {k!r} has inconsistent shape/offset/size")
        if off + nb > len(payload):
            raise ValueError(f"{path}: entry {k!r} runs past the end of the file")
        out[k] = np.frombuffer(payload[off : off + nb], dtype=dt).reshape(shape).copy()
        end = off + nb
    if end != len(payload):
        raise ValueError(f"{path}: {len(payload) - end} trailing bytes")
    return out, meta


def segment_layer_ids(n_conv: int, m: int, segment: str) -> list[int]:
    """Significant layer ids (1-based) of a ``segment`` of ``m`` layers in a depth-``n_conv`` model.

    ``top`` -> ``1..m``; ``middle`` -> starts at ``(n_conv - m)//2 + 1``; ``bottom`` ->
    ``n_conv-m+1..n_conv``. For the collective model (12, 4): 1-4, 5-8, 9-12; for the
    individual model (8, 4): 1-4, 3-6, 5-8 (Sec. V-A3).
    """
    if not 1 <= m <= n_conv:
        raise ValueError(f"need 1 <= m <= n_conv, got m={m}, n_conv={n_conv}")
    start = {"top": 1, "middle": (n_conv - m) // 2 + 1, "bottom": n_conv - m + 1}.get(segment)
    if start is None:
        raise ValueError(f"segment must be top, middle or bottom, got {segment!r}")
    return list(range(start, start + m))


def extract_unit(model: SDNet, layer_ids: list[int], **meta: Any) -> LearngeneUnit:
    """Cut significant layers ``layer_ids`` (consecutive, 1-based) out of ``model``.

    Extra keyword metadata (ConfigRecord-compatible) is stored in ``meta``.
    """
    ids = [int(i) for i in layer_ids]
    if not ids or ids != list(range(ids[0], ids[0] + len(ids))) or ids[0] < 1 or ids[-1] > model.n_conv:
        raise ValueError(f"layer_ids must be consecutive within 1..{model.n_conv}, got {layer_ids}")
    tensors: dict[str, np.ndarray] = {}
    for m, l in enumerate(ids):
        conv = model.convs[l]
        tensors[f"{m}.weight"] = conv.weight.detach().cpu().numpy().astype(np.float32).copy()
        tensors[f"{m}.bias"] = conv.bias.detach().cpu().numpy().astype(np.float32).copy()
    seg = next((s for s in ("top", "middle", "bottom") if segment_layer_ids(model.n_conv, len(ids), s) == ids), "custom")
    base: dict[str, Any] = {
        "version": UNIT_VERSION,
        "layer_ids": ids,
        "source_n_conv": model.n_conv,
        "n_r": model.n_r,
        "n_t": model.n_t,
        "segment": seg,
        "n_params": int(sum(a.size for a in tensors.values())),
    }
    base.update(meta)
    return LearngeneUnit(tensors, base)


