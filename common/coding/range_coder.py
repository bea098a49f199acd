"""Thin wrapper over constriction's range coder (queue semantics: first in, first out).

Every model is a ``constriction.stream.model.Categorical(pmf, perfect=False)`` built from a
float64 PMF that both ends compute identically; symbols are ``int32`` indices into it.
"""

from __future__ import annotations

import constriction
import numpy as np

__all__ = ["RangeWriter", "RangeReader", "ideal_bits"]

_MAX_UNIFORM = 1 << 16


def _categorical(pmf: np.ndarray) -> object:
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size < 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("pmf must be a non-empty finite non-negative float vector")
    return constriction.stream.model.Categorical(p, perfect=False)


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
        s = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if s.size == 0:
            return
        if s.min() < 0 or s.max() >= len(pmf):
            raise ValueError(f"symbols must lie in [0, {len(pmf)}), got range [{s.min()}, {s.max()}]")
        self._enc.encode(s, _categorical(pmf))

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
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            return np.asarray(self._dec.decode(_categorical(pmf), int(n)), dtype=np.int32)
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
