"""Thin wrapper over constriction's range coder (queue semantics: first in, first out).

Every model is a ``constriction.stream.model.Categorical(pmf, perfect=False)`` built from a
float64 PMF that both ends compute identically; symbols are ``int32`` indices into it.

A base station decodes many streams under the same few PMFs (a fixed prior, a top-k mask
of one fraction): the built models are kept in a small least-recently-used cache keyed by
the PMF's bytes, so each is validated and built once, not twice a stream.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import constriction
import numpy as np

from common.coding.bitstream import check_exact_coding

__all__ = ["RangeWriter", "RangeReader", "decode_exact", "ideal_bits"]

_MAX_UNIFORM = 1 << 16
#: PMFs whose models are kept (the least recently used goes first)
_CACHE_ENTRIES = 64
#: PMFs longer than this are built every time (a cached one could hold megabytes)
_CACHE_MAX_SYMBOLS = 1 << 12
_models: OrderedDict[bytes, object] = OrderedDict()
_models_lock = threading.Lock()


def _categorical(pmf: np.ndarray) -> object:
    """The constriction model of ``pmf`` (validated; cached for short PMFs)."""
    p = np.asarray(pmf, dtype=np.float64)
    key = p.tobytes() if p.ndim == 1 and p.size <= _CACHE_MAX_SYMBOLS else None
    if key is not None:
        with _models_lock:
            model = _models.get(key)
            if model is not None:
                _models.move_to_end(key)
                return model
    # nan or inf makes the sum non-finite; a negative entry the minimum
    if p.ndim != 1 or p.size < 1 or not p.min() >= 0 or not (math.isfinite(total := float(p.sum())) and total > 0):
        raise ValueError("pmf must be a non-empty finite non-negative float vector")
    model = constriction.stream.model.Categorical(p, perfect=False)
    if key is not None:
        with _models_lock:
            _models[key] = model
            if len(_models) > _CACHE_ENTRIES:
                _models.popitem(last=False)
    return model


def ideal_bits(symbols: np.ndarray, pmf: np.ndarray) -> float:
    """Information content ``-sum log2 p(s)`` of ``symbols`` under the normalized ``pmf``, bits."""
    p = np.asarray(pmf, dtype=np.float64)
    p = p / p.sum()
    s = np.asarray(symbols, dtype=np.int64).ravel()
    return float(-np.log2(p[s]).sum())


class RangeWriter:
    """Append symbols to one range-coded stream."""

    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def write(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Encode i.i.d. ``symbols`` (``int32 [n]``, each in ``[0, len(pmf))``) with ``pmf``."""
        s = np.asarray(symbols).ravel()
        if s.size == 0:
            return
        if s.min() < 0 or s.max() >= len(pmf):  # before the cast to int32, which could wrap
            raise ValueError(f"symbols must lie in [0, {len(pmf)}), got range [{s.min()}, {s.max()}]")
        self._enc.encode(np.ascontiguousarray(s, dtype=np.int32), _categorical(pmf))

    def write_uniform(self, values: np.ndarray, size: int) -> None:
        """Encode ``values`` (``int32``, in ``[0, size)``, ``size <= 65536``) at ``log2(size)`` bits each."""
        if not 1 <= size <= _MAX_UNIFORM:
            raise ValueError(f"uniform size must lie in [1, {_MAX_UNIFORM}], got {size}")
        v = np.ascontiguousarray(values, dtype=np.int32).ravel()
        if v.size == 0:
            return
        if v.min() < 0 or v.max() >= size:
            raise ValueError(f"values must lie in [0, {size})")
        self._enc.encode(v, constriction.stream.model.Uniform(size))

    def words(self) -> np.ndarray:
        """``uint32 [n_words]``: the compressed stream so far."""
        return np.asarray(self._enc.get_compressed(), dtype=np.uint32)


class RangeReader:
    """Read symbols back from words; any failure of the decoder becomes ``ValueError``."""

    def __init__(self, words: np.ndarray) -> None:
        self._dec = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))

    def read(self, pmf: np.ndarray, n: int) -> np.ndarray:
        """Decode ``n`` symbols coded with ``pmf``: ``int32 [n]``."""
        return self._read_model(_categorical(pmf), n)

    def _read_model(self, model: object, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            return np.asarray(self._dec.decode(model, int(n)), dtype=np.int32)
        except Exception as e:  # constriction signals invalid data with AssertionError / ValueError
            raise ValueError(f"range decoder rejected the data: {e}") from e

    def read_uniform(self, size: int, n: int) -> np.ndarray:
        """Decode ``n`` values written by :meth:`RangeWriter.write_uniform`."""
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        if not 1 <= size <= _MAX_UNIFORM:
            raise ValueError(f"uniform size must lie in [1, {_MAX_UNIFORM}], got {size}")
        try:
            return np.asarray(self._dec.decode(constriction.stream.model.Uniform(size), int(n)), dtype=np.int32)
        except Exception as e:
            raise ValueError(f"range decoder rejected the data: {e}") from e


def decode_exact(words: np.ndarray, pmf: np.ndarray, n: int, what: str) -> np.ndarray:
    """Decode ``n`` i.i.d. symbols that one :meth:`RangeWriter.write` coded with ``pmf``, and
    refuse ``words`` unless they are exactly that coding (``check_exact_coding``: nothing
    appended, replaced or missing).

    Parameters
    ----------
    words : np.ndarray
        ``uint32 [n_words]``, untrusted.
    pmf : np.ndarray
        ``float64 [n_symbols]``.
    n : int
        Symbols to decode.
    what : str
        The payload's name for messages.

    Returns
    -------
    np.ndarray
        ``int32 [n]``, each in ``[0, n_symbols)``.

    Raises
    ------
    ValueError
        The decoder rejects the words (or ``pmf`` is not a PMF).
    BitstreamError
        The words decode, but are not the coding of what they decode to.
    """
    model = _categorical(pmf)
    w = np.ascontiguousarray(words, dtype=np.uint32)
    sym = RangeReader(w)._read_model(model, n)
    enc = constriction.stream.queue.RangeEncoder()
    if n:
        enc.encode(sym, model)  # decoded symbols lie in the alphabet: nothing to check
    check_exact_coding(w, np.asarray(enc.get_compressed(), dtype=np.uint32), what)
    return sym
