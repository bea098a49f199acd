"""NNCodec's DeepCABAC (the MPEG NNR reference coder, ISO/IEC 15938-17) as an optional codec.

Uses only the DeepCABAC core of ``nncodec`` 2.1.3 (Fraunhofer HHI; a pybind11 extension
``nncodec.extensions.deepCABAC``): per tensor, ``quantLayer`` (uniform reconstruction
with the step of quantization parameter ``qp``, ``step = (4 + qp mod 4) 2^(qp div 4 - 2)``
at ``qp_density = 2``; with ``dq=True`` the standard's dependent (trellis-coded)
quantization) and ``encodeLayer`` (context-adaptive binary arithmetic coding of the
indices), one CABAC stream a tensor (as a ``[1, n]`` row in scan order 0), like
nncodec's one NDU a parameter.

Getting it: the ``nncodec`` package declares ``numpy<2``, ``opencv-python``, ``torch`` and
``torchvision``, which this project's environment (NumPy 2, CPU torch without torchvision)
cannot take; its core needs none of them. ``pip install --no-deps nncodec==2.1.3`` builds
the core (a C++17 compiler is needed; pip fetches pybind11 for the build) and leaves
the rest unused; or build ``src/nncodec/extensions/deepCABAC`` alone into a module
``deepCABAC`` on ``sys.path``. Built against NumPy 2.4 here it encodes and decodes.

Untrusted bytes: the DeepCABAC decoder reads its buffer through a bare pointer, with no
length. The adapter hands it the payload followed by ``8 n + 4096`` zero bytes, refuses a
stream whose decoder read past the payload (``finish`` reports the bytes read), refuses a
``qp`` outside ``[-128, 64]``, and re-encodes the decoded indices to check that the payload
is exactly their coding. A forged stream that drives the decoder beyond the zero tail
(more than 64 bits an index) is not ruled out by construction: the ``nnc`` fuzz tests are
the evidence, and they run only where the core is installed.
"""

from __future__ import annotations

import math
import struct
from types import ModuleType

import numpy as np

from common.coding.bitstream import BitstreamError
from common.coding.codec_base import Body, Codec, read_exact
from common.coding.range_coder import ideal_bits

__all__ = ["NNC_HINT", "NNCodec", "nnc_available", "nnc_step"]

NNC_HINT = (
    "codec 'nnc' needs NNCodec's DeepCABAC core: pip install --no-deps nncodec==2.1.3 "
    "(its numpy<2/torchvision requirements are not needed; see common/coding/nnc.py)"
)

_QP_DENSITY = 2
_UNARY_LENGTH = 10  # cabac_unary_length_minus1 + 1, nncodec's default
_QP_RANGE = (-128, 64)
_TENSOR = struct.Struct("<iI")
_PARAMS = struct.Struct("<BBBx")


def _core() -> ModuleType | None:
    try:
        from nncodec.extensions import deepCABAC  # the package installed with --no-deps
    except ImportError:
        try:
            import deepCABAC  # the core built alone
        except ImportError:
            return None
    return deepCABAC


def nnc_available() -> bool:
    """Whether the DeepCABAC core imports."""
    return _core() is not None


def nnc_step(qp: int) -> float:
    """Quantization step of ``qp`` at ``qp_density = 2`` (NNR's ``get_stepsize_from_qp``)."""
    k = 1 << _QP_DENSITY
    return (k + (qp & (k - 1))) * 2.0 ** ((qp >> _QP_DENSITY) - _QP_DENSITY)


def _as_layer(x: np.ndarray) -> np.ndarray:
    """``[1, n]`` C-contiguous: one row, scan order 0 (the receiver knows only ``n``)."""
    return np.ascontiguousarray(x.reshape(1, -1))


class NNCodec(Codec):
    """DeepCABAC of NNCodec 2.1.3 (MPEG NNR), one CABAC stream a tensor.

    Parameters
    ----------
    qp : int, default -38
        Quantization parameter (step ``nnc_step(qp)``: 1.46e-3 at -38, halving every 4).
    dq : bool, default True
        Dependent (trellis-coded) quantization, NNR's default.
    """

    name, lossless = "nnc", False

    def __init__(self, *, qp: int = -38, dq: bool = True, **kw: int) -> None:
        super().__init__(**kw)
        if not _QP_RANGE[0] <= int(qp) <= _QP_RANGE[1]:
            raise ValueError(f"nnc qp must lie in [{_QP_RANGE[0]}, {_QP_RANGE[1]}], got {qp!r}")
        self.qp, self.dq = int(qp), bool(dq)
        self._m = _core()
        if self._m is None:
            raise ValueError(NNC_HINT)

    def _hdsp(self) -> tuple[object, np.ndarray]:
        return self._m.HdspMode.AlwaysOff, np.array((0, 0), dtype=np.int8)

    def _encode_indices(self, q: np.ndarray) -> bytes:
        enc = self._m.Encoder()
        enc.initCtxModels(_UNARY_LENGTH, 0)
        enc.encodeLayer(q, int(self.dq), 0, 0, 0, 0, np.zeros(q.shape[0], np.int32), *self._hdsp(), 0, 0)
        return bytes(np.asarray(enc.finish(), dtype=np.uint8))

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        parts, bits = [], 0.0
        for t in tensors:
            if t.size == 0:
                parts.append(_TENSOR.pack(self.qp, 0))
                continue
            w = _as_layer(t.astype(np.float32))
            q = np.zeros(w.shape, dtype=np.int32)
            enc = self._m.Encoder()
            enc.initCtxModels(_UNARY_LENGTH, 0)
            qp = int(enc.quantLayer(w, q, int(self.dq), _QP_DENSITY, self.qp, 0.0, _UNARY_LENGTH, 0, 0))
            stream = self._encode_indices(q)
            parts.append(_TENSOR.pack(qp, len(stream)) + stream)
            _, inv = np.unique(q.ravel(), return_inverse=True)
            bits += ideal_bits(inv, np.bincount(inv).astype(np.float64)) + 32.0
        return Body(_PARAMS.pack(_QP_DENSITY, int(self.dq), _UNARY_LENGTH), b"".join(parts), bits)

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray]:
        if params != _PARAMS.pack(_QP_DENSITY, int(self.dq), _UNARY_LENGTH):
            raise BitstreamError(f"nnc stream params {params.hex()}, this decoder has dq={self.dq}")
        out, off = [], 0
        for i, n in enumerate(sizes):
            qp, ln = _TENSOR.unpack(read_exact(payload, off, _TENSOR.size, f"nnc tensor {i} header"))
            stream = read_exact(payload, off + _TENSOR.size, ln, f"nnc tensor {i} stream")
            off += _TENSOR.size + ln
            if n == 0:
                if ln:
                    raise BitstreamError(f"nnc tensor {i} is empty but carries {ln} bytes")
                out.append(np.zeros(0, np.float32))
                continue
            if not _QP_RANGE[0] <= qp <= _QP_RANGE[1] or ln < 2:
                raise BitstreamError(f"nnc tensor {i}: qp {qp} outside {_QP_RANGE} or a stream of {ln} bytes")
            out.append(self._decode_tensor(stream, n, qp, i))
        if off != len(payload):
            raise BitstreamError(f"nnc payload has {len(payload) - off} bytes after its last tensor")
        return out

    def _decode_tensor(self, stream: bytes, n: int, qp: int, i: int) -> np.ndarray:
        # the decoder has no length: give it a zero tail it cannot plausibly run through
        buf = np.zeros(len(stream) + 8 * n + 4096, dtype=np.uint8)
        buf[: len(stream)] = np.frombuffer(stream, dtype=np.uint8)
        q = np.zeros((1, n), dtype=np.int32)
        try:
            dec = self._m.Decoder()
            dec.setStream(buf)
            dec.initCtxModels(_UNARY_LENGTH)
            dec.decodeLayer(q, int(self.dq), 0, 0, 0, *self._hdsp(), 0, 0)
            used = int(dec.finish())
        except RuntimeError as e:
            raise BitstreamError(f"nnc tensor {i} does not decode: {e}") from e
        if used > len(stream):
            raise BitstreamError(f"nnc tensor {i}: the decoder read {used} bytes of a {len(stream)}-byte stream")
        if self._encode_indices(q) != stream:
            raise BitstreamError(f"nnc tensor {i}: the stream is not the coding of what it decodes to")
        w = np.zeros((1, n), dtype=np.float32)
        dec.dequantLayer(w, q, _QP_DENSITY, qp, 0)
        return w.ravel()

    def max_payload_bytes(self, n_params: int) -> int:
        return 8 * int(n_params) + 8 * 65535 + 65536

    def error_bound(self, arrays) -> float | None:  # noqa: ANN001
        """Half a step ``nnc_step(qp) / 2`` without dependent quantization (plus float32
        rounding); None with it: the trellis picks indices by rate and distortion, and
        errors up to 1.4 steps were seen on unit-sized updates."""
        if self.dq:
            return None
        m = max((float(np.abs(np.asarray(a, np.float32)).max()) for a in arrays.values() if np.size(a)), default=0.0)
        return nnc_step(self.qp) / 2 * (1 + 2.0**-20) + 2.0**-22 * m + math.ulp(nnc_step(self.qp))
