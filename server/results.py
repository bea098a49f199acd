"""The run directory: where a fleet run or a study writes what it computed.

Layout of ``runs/<scenario>-<timestamp>/``::

    scenario.toml            the file as given (when it came from a file)
    scenario.resolved.json   every default filled in: what actually ran
    setup.parquet            registration exchange, one row per device
    rounds.parquet           one row per device per round (common.records)
    rounds.parts/            while running: one file per finished round (merged at the end)
    collective/              significance table and the learngene unit (fleet runs)
    summary.json             per-class summary and run totals
    *.png                    plots (redrawn by ``airfleet report RUN_DIR``)

Every finished round is written at once (``rounds.parts/round-NNNNN.parquet``, O(fleet)
per round), so a crash loses at most the round in flight; ``consolidate_rounds`` merges
the parts into ``rounds.parquet`` at the end, or later from ``airfleet report``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common.records import ROUND_CORE
from common.runtime import numerics_environment
from common.scenario import Scenario

__all__ = [
    "new_run_dir",
    "write_table",
    "write_json",
    "read_table",
    "init_run_dir",
    "write_round_part",
    "consolidate_rounds",
]

_PARTS = "rounds.parts"


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/<name>-<UTC timestamp>`` (suffixed if it exists) and return it."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{name}-{stamp}"
    path, i = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            i += 1
            path = base.with_name(f"{base.name}-{i}")


def init_run_dir(run_dir: Path, scenario: Scenario) -> None:
    """Store the scenario as given and as resolved, and what decides the run's numerics
    besides code and seed (``environment.json``: ``common.runtime.numerics_environment``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    src = Path(scenario.path)
    if src.is_file():
        shutil.copyfile(src, run_dir / "scenario.toml")
    write_json(run_dir / "scenario.resolved.json", scenario.data)
    write_json(run_dir / "environment.json", numerics_environment())


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pa.Table) -> None:
    """Write ``table`` as Parquet, atomically."""
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_round_part(run_dir: Path, rnd: int, table: pa.Table) -> None:
    """Write one finished round's rows."""
    write_table(run_dir / _PARTS / f"round-{rnd:05d}.parquet", table)


def consolidate_rounds(run_dir: Path) -> pa.Table:
    """Merge the round parts (if any) into ``rounds.parquet`` and return the table.

    Rounds may report different metric columns; missing values become nulls.
    """
    parts_dir = run_dir / _PARTS
    parts = sorted(parts_dir.glob("round-*.parquet")) if parts_dir.is_dir() else []
    target = run_dir / "rounds.parquet"
    if not parts:
        return pq.read_table(target)
    tables = [pq.read_table(p) for p in parts]
    if target.is_file():
        done = pq.read_table(target)
        new_rounds = {r for t in tables for r in t.column("round").to_pylist()}
        keep = [i for i, r in enumerate(done.column("round").to_pylist()) if r not in new_rounds]
        tables.insert(0, done.take(keep))
    table = pa.concat_tables(tables, promote_options="default")
    core = [f.name for f in table.schema if f.name in ROUND_CORE.names]
    table = table.select(core + sorted(c for c in table.column_names if c not in core))
    write_table(target, table)
    for p in parts:
        p.unlink()
    parts_dir.rmdir()
    return table


def read_table(path: Path) -> pa.Table:
    """Read a Parquet table."""
    return pq.read_table(path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""

    def w(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    _atomic(path, w)
