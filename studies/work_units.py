"""Completed units of a study's work, kept in its run directory so that a stopped study
resumes where it stopped (issue #22).

A unit of work is one independently seeded piece of a study (one model trained for one
target task and scheme, say) whose outcome is some table rows and some arrays (the trained
weights). Each is written to ``RUN_DIR/work/<key>.npz`` when it completes, atomically
(a temporary file and a rename; NumPy arrays and one JSON blob, never pickled). Running
the study again into the same directory (``airfleet run --resume RUN_DIR``) loads the
completed units instead of computing them; the tables then equal an uninterrupted run's,
since every unit derives its random draws from (seed, key) alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common.npz_files import load_model_arrays, model_arrays, read_npz, write_npz

__all__ = ["WorkUnits", "model_arrays", "load_model_arrays"]


class WorkUnits:
    """The completed units under ``run_dir/work``.

    Parameters
    ----------
    run_dir : path-like
        The study's run directory.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir) / "work"
        self.loaded = 0  # units taken from disk in this run (for the summary)

    def _path(self, key: str) -> Path:
        if not key or any(ch in key for ch in "/\\\0") or key.startswith("."):
            raise ValueError(f"a work unit key must be a plain file name, got {key!r}")
        return self.dir / f"{key}.npz"

    def load(self, key: str) -> tuple[Any, dict[str, np.ndarray]] | None:
        """``(rows, arrays)`` of a completed unit, or None (not done, or its file is damaged:
        then it is computed again)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            arrays, rows = read_npz(path)
        except ValueError:  # a damaged unit is recomputed, never half-loaded
            return None
        self.loaded += 1
        return rows, arrays

    def save(self, key: str, rows: Any, arrays: dict[str, np.ndarray]) -> None:
        """Record a completed unit: JSON-able ``rows`` (NaN allowed) and named ``arrays``."""
        write_npz(self._path(key), arrays, rows)

    def rows(self, key: str, compute: Callable[[], Any]) -> Any:
        """The rows of a unit whose outcome is rows alone: loaded when it completed before,
        else ``compute()``d and saved. JSON round trip: tuples come back as lists, floats
        (NaN and infinities included) and ints exactly."""
        if (done := self.load(key)) is not None:
            return done[0]
        rows = compute()
        self.save(key, rows, {})
        return rows
