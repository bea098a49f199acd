"""Helpers of the studies' resume tests (issue #22): stop a study after its first units of
work, count the units a resumed run computes, compare its tables with an uninterrupted run's."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest

__all__ = ["StudyStopped", "count_calls", "tables"]


class StudyStopped(Exception):
    """Raised in place of a unit of work: the study stops there, as if killed."""


def count_calls(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, stop_after: int | None = None) -> list[Any]:
    """Count the calls of ``module.name`` (one entry per call: its positional arguments); with
    ``stop_after = n`` the call after ``n`` completed ones raises :class:`StudyStopped`."""
    real = getattr(module, name)
    calls: list[Any] = []

    def counted(*a: Any, **k: Any) -> Any:
        if stop_after is not None and len(calls) >= stop_after:
            raise StudyStopped(name)
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(module, name, counted)
    return calls


def tables(run_dir: Path, names: tuple[str, ...], wall_columns: tuple[str, ...] = ()) -> dict[str, str]:
    """Each table's rows as JSON (exact floats, NaN included), ``wall_columns`` left out."""
    out = {}
    for n in names:
        rows = pq.read_table(run_dir / f"{n}.parquet").to_pylist()
        out[n] = json.dumps([{k: v for k, v in r.items() if k not in wall_columns} for r in rows])
    return out
