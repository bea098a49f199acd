"""The run directory: where a fleet run or a study writes what it computed.

Layout of ``runs/<scenario>-<timestamp>/``::

    scenario.toml            the file as given (when it came from a file)
    scenario.resolved.json   every default filled in: what actually ran
    setup.parquet            registration exchange, one row per device
    rounds.parquet           one row per device per round (common.records)
    collective/              significance table and the learngene unit (fleet runs)
    summary.json             per-class summary and run totals
    *.png                    plots (redrawn by ``airfleet report RUN_DIR``)

Tables are rewritten atomically after every round, so a crash loses at most the round
in flight.
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

from common.scenario import Scenario

__all__ = ["new_run_dir", "write_table", "write_json", "read_table", "init_run_dir"]


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
    """Store the scenario as given and as resolved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    src = Path(scenario.path)
    if src.is_file():
        shutil.copyfile(src, run_dir / "scenario.toml")
    write_json(run_dir / "scenario.resolved.json", scenario.data)


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


def read_table(path: Path) -> pa.Table:
    """Read a Parquet table."""
    return pq.read_table(path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""

    def w(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    _atomic(path, w)
