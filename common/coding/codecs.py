"""The built-in update codecs of the registry (``common.coding.registry``).

Each codes flat ``float32`` vectors (one per tensor) into a payload; framing, checks and
error feedback are :class:`~common.coding.codec_base.Codec`'s. What each states:

============  ========  =========  ==================================================  ==========================================
name          lossless  feedback   coded values                                        ideal bits (``Encoded.ideal_bits``)
============  ========  =========  ==================================================  ==========================================
fp32          yes       no         IEEE float32, 32 bits each (the reference)          ``32 n``
fp16          no        no         IEEE float16; error <= max(|x| 2^-11, 2^-25)         ``16 n``
int8, int4    no        no         uniform per tensor: ``lo + s q``, ``q`` in          ``b n + 64 T`` (lo, s per tensor)
                                   ``[0, 2^b - 1]``, ``s = (hi - lo)/(2^b - 1)``;
                                   error <= s/2
qsgd          no        no         Alistarh et al., NeurIPS 2017, eq. (2): per tensor   ``n H(levels) + 32 T`` (empirical entropy
                                   ``||v|| sgn(v_i) l_i / s``, ``l_i`` stochastic,       of the signed levels, norms)
                                   unbiased; error < ||v|| / s; levels range coded
                                   with their histogram
topk          no        yes        the ``k = ceil(fraction n)`` largest ``|acc|`` over  ``log2 C(n, k) + 32 k``
                                   all tensors (Stich et al., NeurIPS 2018): positions
                                   as a range-coded Bernoulli(k/n) mask, values float32
sign          no        yes        ``mean|acc| sgn(acc)`` per tensor (EF-SignSGD,        ``n + 32 T``
                                   Karimireddy et al., ICML 2019, Alg. 2), 1 bit each
spike_slab    no        no         the CSI decoder-update coder (``update_codec``, eq.   eq. (19): ``-sum log2 p(k_i)``
                                   12-19): ``t k``, ``k = clip(round(x/t))``, range
                                   coded with the spike-and-slab prior; error <= t/2
                                   inside the clip range; bit-exact on the grid
============  ========  =========  ==================================================  ==========================================

``n`` elements, ``T`` tensors, ``b`` bits. Range-coded payloads come within 1 % of their
ideal plus their side information (histogram, coder flush); fixed-length ones equal it up
to padding to a byte.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from common.coding.bitstream import BitstreamError
from common.coding.codec_base import Body, Codec, read_exact
from common.coding.codec_base import split as _split
from common.coding.range_coder import RangeWriter, decode_exact
from common.coding.spike_slab import UpdateQuantizer, make_prior
from common.coding.update_codec import dequantize_update, pack_update, unpack_update, update_ideal_bits

__all__ = [
    "Float32Codec",
    "Float16Codec",
    "UniformCodec",
    "Int8Codec",
    "Int4Codec",
    "QSGDCodec",
    "TopKCodec",
    "SignCodec",
    "SpikeSlabCodec",
]

_F32 = np.dtype("<f4")
_FP16_MAX = 65504.0


def _concat(tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(tensors).astype(np.float32, copy=False) if tensors else np.zeros(0, np.float32)


def _words(payload: bytes, what: str) -> np.ndarray:
    if len(payload) % 4:
        raise BitstreamError(f"{what}: range-coded part of {len(payload)} bytes is not whole 32-bit words")
    return np.frombuffer(bytes(payload), dtype="<u4").astype(np.uint32)


def _varints(values: np.ndarray) -> bytes:
    """LEB128 of non-negative integers (the histograms of entropy-coded symbols)."""
    out = bytearray()
    for v in np.asarray(values, dtype=np.int64).tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(buf: bytes, off: int, count: int, what: str) -> tuple[list[int], int]:
    """``count`` LEB128 integers from ``buf[off:]`` (each at most 6 bytes) and the offset after them."""
    vals: list[int] = []
    if count == 0:
        return vals, off
    v = shift = 0
    for b in buf[off : off + 6 * count]:
        off += 1
        v |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
            if shift > 35:
                raise BitstreamError(f"{what}: count {len(vals)} is longer than 5 bytes")
        else:
            vals.append(v)
            if len(vals) == count:
                return vals, off
            v = shift = 0
    raise BitstreamError(f"truncated {what}: the payload ends after {len(vals)} of {count} counts")


def _code_with_histogram(symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, float]:
    """Range-code ``symbols`` (in ``[0, alphabet)``) with their own empirical PMF.

    Returns the histogram (LEB128 counts), the words and the ideal bits ``n H(empirical)``.
    """
    counts = np.bincount(symbols, minlength=alphabet)
    if symbols.size == 0 or np.count_nonzero(counts) == 1:
        return _varints(counts), b"", 0.0
    w = RangeWriter()
    w.write(symbols.astype(np.int32), counts.astype(np.float64))
    c = counts[counts > 0].astype(np.float64)
    return _varints(counts), w.words().astype("<u4").tobytes(), float(-(c * np.log2(c / symbols.size)).sum())


def _decode_with_histogram(buf: bytes, off: int, alphabet: int, n: int, what: str) -> np.ndarray:
    """Inverse of :func:`_code_with_histogram` from ``buf[off:]`` (histogram, then words): ``int32 [n]``."""
    counts, off = _read_varints(buf, off, alphabet, f"{what} histogram")
    if sum(counts) != n:
        raise BitstreamError(f"{what} histogram counts {sum(counts)} symbols, the stream has {n}")
    words = _words(buf[off:], what)
    present = [i for i, c in enumerate(counts) if c]
    if len(present) <= 1:
        if words.size:
            raise BitstreamError(f"{what}: {words.size} words after a one-symbol histogram")
        return np.full(n, present[0] if present else 0, dtype=np.int32)
    hist = np.array(counts, dtype=np.int64)
    sym = decode_exact(words, hist.astype(np.float64), n, what)
    if not (np.bincount(sym, minlength=alphabet) == hist).all():  # symbols lie in [0, alphabet)
        raise BitstreamError(f"{what}: decoded symbols do not match the histogram")
    return sym


class Float32Codec(Codec):
    """IEEE float32, little-endian: the raw reference (lossless)."""

    name, lossless = "fp32", True

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        flat = _concat(tensors)
        return Body(b"", flat.astype(_F32).tobytes(), 32.0 * flat.size)

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        n = sum(sizes)
        if params or len(payload) != 4 * n:
            raise BitstreamError(f"fp32 payload of {len(payload)} bytes (params {len(params)}), expected {4 * n} (0)")
        return np.frombuffer(payload, dtype=_F32).astype(np.float32)

    def max_payload_bytes(self, n_params: int) -> int:
        return 4 * int(n_params)


class Float16Codec(Codec):
    """IEEE float16 (round to nearest even); values beyond +-65504 are refused at encode."""

    name, lossless = "fp16", False

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        flat = _concat(tensors)
        if flat.size and float(np.abs(flat).max()) > _FP16_MAX:
            raise ValueError(f"fp16 holds magnitudes up to {_FP16_MAX}, got {float(np.abs(flat).max())}")
        return Body(b"", flat.astype("<f2").tobytes(), 16.0 * flat.size)

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        n = sum(sizes)
        if params or len(payload) != 2 * n:
            raise BitstreamError(f"fp16 payload of {len(payload)} bytes (params {len(params)}), expected {2 * n} (0)")
        return np.frombuffer(payload, dtype="<f2").astype(np.float32)

    def max_payload_bytes(self, n_params: int) -> int:
        return 2 * int(n_params)

    def error_bound(self, arrays) -> float:  # noqa: ANN001 - Mapping[str, np.ndarray]
        """Half a float16 ulp: ``max(max|x| 2^-11, 2^-25)`` (2^-25: half the subnormal step)."""
        m = max((float(np.abs(np.asarray(a, np.float32)).max()) for a in arrays.values() if np.size(a)), default=0.0)
        return max(m * 2.0**-11, 2.0**-25)


class UniformCodec(Codec):
    """Uniform ``bits``-bit quantizer per tensor, scale and offset (float32) per tensor.

    ``q = clip(rint((x - lo) / s), 0, 2^b - 1)``, ``s = float32((hi - lo) / (2^b - 1))``;
    the receiver computes ``float32(lo) + float32(q) * float32(s)``. Subclasses fix ``bits``.
    """

    bits: int

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        qmax = (1 << self.bits) - 1
        side, codes = [], []
        for t in tensors:
            lo, hi = (float(t.min()), float(t.max())) if t.size else (0.0, 0.0)
            s = np.float32((hi - lo) / qmax)
            if not np.isfinite(s):
                raise ValueError(f"{self.name}: range {hi - lo} of a tensor overflows float32")
            q = np.zeros(t.size, np.int64) if s == 0 else np.clip(np.rint((t.astype(np.float64) - lo) / float(s)), 0, qmax).astype(np.int64)
            side.append(struct.pack("<ff", lo, s))
            codes.append(q)
        return Body(b"", b"".join(side) + self._pack(np.concatenate(codes) if codes else np.zeros(0, np.int64)), self.bits * sum(t.size for t in tensors) + 64.0 * len(tensors))

    def _pack(self, q: np.ndarray) -> bytes:
        if self.bits == 8:
            return q.astype(np.uint8).tobytes()
        q = np.concatenate([q, np.zeros(q.size % 2, np.int64)]).astype(np.uint8)
        return (q[0::2] | (q[1::2] << 4)).astype(np.uint8).tobytes()

    def _unpack(self, raw: bytes, n: int) -> np.ndarray:
        b = np.frombuffer(raw, dtype=np.uint8)
        if self.bits == 8:
            return b.astype(np.int64)
        q = np.empty(2 * b.size, np.int64)
        q[0::2], q[1::2] = b & 0x0F, b >> 4
        if q.size > n and q[n:].any():
            raise BitstreamError(f"{self.name}: padding nibble is not zero")
        return q[:n]

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        n, T = sum(sizes), len(sizes)
        code_bytes = n if self.bits == 8 else (n + 1) // 2
        if params or len(payload) != 8 * T + code_bytes:
            raise BitstreamError(f"{self.name} payload of {len(payload)} bytes, expected {8 * T + code_bytes}")
        side = np.frombuffer(payload[: 8 * T], dtype=_F32).reshape(T, 2) if T else np.zeros((0, 2), np.float32)
        if not np.all(np.isfinite(side)) or np.any(side[:, 1] < 0):
            raise BitstreamError(f"{self.name}: offsets and scales must be finite, scales >= 0")
        q = self._unpack(payload[8 * T :], n).astype(np.float32)
        return [np.float32(lo) + qi * np.float32(s) for (lo, s), qi in zip(side, _split(q, sizes))]

    def max_payload_bytes(self, n_params: int) -> int:
        return int(n_params) + 8 * 65535

    def error_bound(self, arrays) -> float:  # noqa: ANN001
        """``max_T s_T / 2`` plus float32 rounding of ``lo + q s`` (``2^-22 max|x|``)."""
        qmax = (1 << self.bits) - 1
        b = 0.0
        for a in arrays.values():
            a = np.asarray(a, np.float32)
            if a.size:
                s = float(np.float32((float(a.max()) - float(a.min())) / qmax))
                b = max(b, s / 2 * (1 + 2.0**-14) + 2.0**-22 * float(np.abs(a).max()))
        return b


class Int8Codec(UniformCodec):
    """Uniform 8-bit per tensor."""

    name, lossless, bits = "int8", False, 8


class Int4Codec(UniformCodec):
    """Uniform 4-bit per tensor, two codes a byte (low nibble first)."""

    name, lossless, bits = "int4", False, 4


class QSGDCodec(Codec):
    """QSGD (Alistarh et al., NeurIPS 2017, eq. 2): unbiased stochastic quantization to ``levels``.

    Per tensor ``v``: ``l_i = floor(s |v_i| / ||v||_2 + u_i)``, ``u_i ~ U[0, 1)``, and the
    receiver decodes ``float32(||v||) * sgn(v_i) l_i / s``, so ``E[decoded] = v`` and the
    error is below ``||v|| / s``. The signed levels of all tensors are range coded with
    their empirical histogram (sent as LEB128 counts) in place of the paper's Elias code.

    Parameters
    ----------
    levels : int, default 16
        ``s``, in ``[1, 32767]``.
    seed : int, default 0
        Seeds the dither together with the CRC of the input: the same seed and input give
        the same bits.
    """

    name, lossless = "qsgd", False

    def __init__(self, *, levels: int = 16, seed: int = 0, **kw: int) -> None:
        super().__init__(**kw)
        if not 1 <= int(levels) <= 32767:
            raise ValueError(f"qsgd levels must lie in [1, 32767], got {levels!r}")
        if int(seed) < 0:
            raise ValueError(f"qsgd seed must be non-negative, got {seed!r}")
        self.levels, self.seed = int(levels), int(seed)

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        s = self.levels
        crc = 0
        for t in tensors:
            crc = zlib.crc32(t.astype(_F32).tobytes(), crc)
        rng = np.random.default_rng([self.seed, crc])
        norms, syms = [], []
        for t in tensors:
            norm = np.float32(np.linalg.norm(t.astype(np.float64))) if t.size else np.float32(0.0)
            if norm == 0:
                lv = np.zeros(t.size, np.int64)
            else:
                r = np.minimum(np.abs(t.astype(np.float64)) / float(norm), 1.0) * s
                lv = np.minimum(np.floor(r + rng.random(t.size)), s).astype(np.int64)  # eq. (2)
            norms.append(norm)
            syms.append(np.where(t < 0, -lv, lv) + s)
        sym = np.concatenate(syms) if syms else np.zeros(0, np.int64)
        hist, words, bits = _code_with_histogram(sym, 2 * s + 1)
        return Body(struct.pack("<H", s), np.asarray(norms, _F32).tobytes() + hist + words, bits + 32.0 * len(tensors))

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        s, T = self.levels, len(sizes)
        if params != struct.pack("<H", s):
            raise BitstreamError(f"qsgd stream params {params.hex()}, this decoder has levels={s}")
        norms = np.frombuffer(read_exact(payload, 0, 4 * T, "qsgd norms"), dtype=_F32)
        if not all(0 <= x < math.inf for x in norms.tolist()):  # nan fails both
            raise BitstreamError("qsgd norms must be finite and >= 0")
        sym = _decode_with_histogram(payload, 4 * T, 2 * s + 1, sum(sizes), "qsgd levels")
        q = (sym - s).astype(np.float32)
        # per element float32(norm) * level / s: the same float32 operations as tensor by tensor
        return (np.repeat(norms, sizes) * q) / np.float32(s)

    def error_bound(self, arrays) -> float:  # noqa: ANN001
        """``max_T ||v_T|| / s`` (one level step), plus float32 rounding."""
        m = max((float(np.linalg.norm(np.asarray(a, np.float64))) for a in arrays.values() if np.size(a)), default=0.0)
        return m / self.levels * (1 + 2.0**-20) + 2.0**-126


class TopKCodec(Codec):
    """Top-k sparsification with error feedback (Stich et al., NeurIPS 2018, "Sparsified SGD with memory").

    Of ``acc = x + residual`` over all tensors, the ``k = min(n, ceil(fraction n))``
    largest magnitudes are sent (ties: lowest index first); the rest stays in the residual.
    Positions go as an occupancy mask range coded with ``Bernoulli(k / n)`` (about
    ``log2 C(n, k)`` bits, never 32 bits an index); values as float32 in index order.

    Parameters
    ----------
    fraction : float, default 0.01
        In ``(0, 1]``.
    """

    name, lossless, stateful = "topk", False, True

    def __init__(self, *, fraction: float = 0.01, **kw: int) -> None:
        super().__init__(**kw)
        if not 0 < float(fraction) <= 1:
            raise ValueError(f"topk fraction must lie in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)

    def k_of(self, n: int) -> int:
        """Entries sent of ``n``."""
        return min(n, math.ceil(self.fraction * n - 1e-9)) if n else 0

    @staticmethod
    def select(acc: np.ndarray, k: int) -> np.ndarray:
        """Sorted indices of the ``k`` largest ``|acc|``, ties to the lowest index (O(n))."""
        n = acc.size
        if k >= n:
            return np.arange(n)
        if k <= 0:
            return np.zeros(0, np.int64)
        a = np.abs(acc)
        thr = np.partition(a, n - k)[n - k]  # the k-th largest magnitude
        above = np.flatnonzero(a > thr)
        ties = np.flatnonzero(a == thr)[: k - above.size]
        return np.sort(np.concatenate([above, ties]))

    @staticmethod
    def _mask_pmf(n: int, k: int) -> np.ndarray:
        return np.array([n - k, k], dtype=np.float64)

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        acc = _concat(tensors)
        n = acc.size
        k = self.k_of(n)
        idx = self.select(acc, k)
        words = b""
        if 0 < k < n:
            mask = np.zeros(n, np.int32)
            mask[idx] = 1
            w = RangeWriter()
            w.write(mask, self._mask_pmf(n, k))
            words = w.words().astype("<u4").tobytes()
        dec = np.zeros(n, np.float32)
        dec[idx] = acc[idx]
        bits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2) + 32.0 * k
        return Body(struct.pack("<I", k), acc[idx].astype(_F32).tobytes() + words, bits, _split(dec, [t.size for t in tensors]))

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        n = sum(sizes)
        k = self.k_of(n)
        if params != struct.pack("<I", k):
            raise BitstreamError(f"topk stream params {params.hex()}, this decoder sends k={k} of {n}")
        vals = np.frombuffer(read_exact(payload, 0, 4 * k, "topk values"), dtype=_F32)
        words = _words(payload[4 * k :], "topk positions")
        if 0 < k < n:
            mask = decode_exact(words, self._mask_pmf(n, k), n, "topk positions")
            if int(mask.sum()) != k:
                raise BitstreamError(f"topk mask marks {int(mask.sum())} positions, the stream sends {k}")
            idx = np.flatnonzero(mask)
        else:
            if words.size:
                raise BitstreamError(f"topk: {words.size} position words where none are coded")
            idx = np.arange(k)
        dec = np.zeros(n, np.float32)
        dec[idx] = vals
        return dec


class SignCodec(Codec):
    """Scaled sign with error feedback (EF-SignSGD, Karimireddy et al., ICML 2019, Alg. 2).

    Per tensor of ``acc = x + residual``: ``float32(mean |acc|) * sgn(acc)`` (``sgn(0) = +1``),
    one bit an element (packed, most significant bit first) and a float32 scale.
    """

    name, lossless, stateful = "sign", False, True

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        scales = np.array([np.abs(t.astype(np.float64)).mean() if t.size else 0.0 for t in tensors], dtype=_F32)
        acc = _concat(tensors)
        pos = acc >= 0
        dec = [np.where(p, sc, -sc).astype(np.float32) for p, sc in zip(_split(pos, [t.size for t in tensors]), scales)]
        return Body(b"", scales.tobytes() + np.packbits(pos).tobytes(), float(acc.size) + 32.0 * len(tensors), dec)

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        n, T = sum(sizes), len(sizes)
        if params or len(payload) != 4 * T + (n + 7) // 8:
            raise BitstreamError(f"sign payload of {len(payload)} bytes, expected {4 * T + (n + 7) // 8}")
        scales = np.frombuffer(payload[: 4 * T], dtype=_F32)
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise BitstreamError("sign scales must be finite and >= 0")
        bits = np.unpackbits(np.frombuffer(payload[4 * T :], dtype=np.uint8))
        if bits[n:].any():
            raise BitstreamError("sign: padding bits are not zero")
        return [np.where(b.astype(bool), sc, -sc).astype(np.float32) for b, sc in zip(_split(bits[:n], sizes), scales)]

    def max_payload_bytes(self, n_params: int) -> int:
        return int(n_params) // 8 + 1 + 4 * 65535


class SpikeSlabCodec(Codec):
    """The CSI decoder-update coder (``common.coding.update_codec``, eq. 12-19) as a registry codec.

    ``k = clip(round(x / t), k_min, k_max)`` over all tensors in order (eq. 13-14), range
    coded with the prior's push-forward PMF (eq. 15-18); the payload is exactly the frame
    :func:`~common.coding.update_codec.pack_update` writes and is parsed by
    :func:`~common.coding.update_codec.unpack_update` (``common.csi.config.update_codec``
    builds the one a ``csi_feedback`` table and a decoder state call for).
    The receiver decodes ``float32(t) * k``: bit-exact for inputs on that grid.

    Parameters
    ----------
    step : float, default 1e-3
        Bin width ``t`` (the CSI stage's default).
    n_bins : int, default 256
    sigma : float, default 5e-2
        Slab standard deviation (eq. 17).
    alpha : float, default 1000.0
        Spike weight (eq. 16).
    prior : str, default "spike_slab"
        Or ``"uniform"`` (the FM-UP ablation).
    base_tag : int, default 0
        The CSI stage's binding of an update to the decoder it applies to (the CRC-32 of
        that decoder, ``update_codec``): a stream made against another tag is refused.
        0 for a plain delta.
    """

    name, lossless = "spike_slab", False

    def __init__(
        self,
        *,
        step: float = 1e-3,
        n_bins: int = 256,
        sigma: float = 5e-2,
        alpha: float = 1000.0,
        prior: str = "spike_slab",
        base_tag: int = 0,
        **kw: int,
    ) -> None:
        super().__init__(**kw)
        self.prior = make_prior(prior, UpdateQuantizer(float(step), int(n_bins)), float(sigma), float(alpha))
        self.quantizer = self.prior.quantizer
        # the prior is fixed: compute its PMF (eq. 15) once, not twice a stream
        pmf = self.prior.pmf()
        pmf.setflags(write=False)
        self.prior.pmf = lambda: pmf  # type: ignore[method-assign]
        if not 0 <= int(base_tag) <= 0xFFFFFFFF:
            raise ValueError(f"base_tag must be a 32-bit unsigned integer, got {base_tag!r}")
        self.base_tag = int(base_tag)

    def quantize(self, tensors: list[np.ndarray]) -> np.ndarray:
        """``int32 [n]``: ``k`` of eq. (13-14) over all tensors in order."""
        q = self.quantizer
        return np.clip(np.rint(_concat(tensors).astype(np.float64) / q.t), q.k_min, q.k_max).astype(np.int32)

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        k = self.quantize(tensors)
        return Body(b"", pack_update(k, self.prior, self.base_tag), update_ideal_bits(k, self.prior))

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray] | np.ndarray:
        if params:
            raise BitstreamError(f"spike_slab stream carries {len(params)} bytes of params, expected none")
        n = sum(sizes)
        k = unpack_update(payload, self.prior, n, self.base_tag)
        return dequantize_update(k, self.quantizer)  # apply_update on a zero base

    def max_payload_bytes(self, n_params: int) -> int:
        return 4 * int(n_params) + 256

    def error_bound(self, arrays) -> float:  # noqa: ANN001
        """``t/2`` inside the clip range ``[t (k_min - 1/2), t (k_max + 1/2)]``; beyond it, the distance to the edge bin."""
        q = self.quantizer
        vals = [np.asarray(a, np.float64) for a in arrays.values() if np.size(a)]
        hi = max((float(v.max()) for v in vals), default=0.0)
        lo = min((float(v.min()) for v in vals), default=0.0)
        edge = max(hi - q.t * q.k_max, q.t * q.k_min - lo, q.t / 2)
        return edge * (1 + 2.0**-20) + 2.0**-24 * q.t * max(abs(q.k_min), q.k_max)
