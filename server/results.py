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

from common.npz_files import read_npz, write_npz
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
    "RunError",
    "RunInterrupted",
    "write_error_log",
    "save_checkpoint",
    "load_checkpoint",
    "discard_rounds_after",
]


class RunError(RuntimeError):
    """A run that cannot go on for a reason the user can act on (no device registered,
    too few devices, an unwritable run directory). Its message is the one line shown;
    no traceback is written for it."""


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
    src, dst = Path(scenario.path), run_dir / "scenario.toml"
    if src.is_file() and not (dst.exists() and src.samefile(dst)):  # --resume reads the run's own copy
        shutil.copyfile(src, dst)
    write_json(run_dir / "scenario.resolved.json", scenario.data)
    write_json(run_dir / "environment.json", numerics_environment())


class RunInterrupted(RunError):
    """Ctrl-C or SIGTERM stopped the run between two polls; completed rounds are kept."""


def _atomic(path: Path, write: Any) -> None:
    """Write ``path`` through a temporary file and a rename: a reader (or a run killed at any
    instant) sees the old file or the new one, never half of one.

    Raises
    ------
    RunError
        The directory is unwritable or the disk is full (one line naming the file); what
        was written before is untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e} (is the run directory writable, the disk full?); files already written are kept") from e
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"cannot write {path}: {e.strerror or e} (is the run directory writable, the disk full?); files already written are kept") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: the base station's checkpoint: everything the next round depends on, one file
CHECKPOINT = "checkpoint.npz"


def save_checkpoint(run_dir: Path, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Atomically write the checkpoint of a completed round (``meta``: JSON-able,
    must hold ``round``; ``arrays``: name -> numpy array). Written right after the round's
    table part, so the checkpoint's round is always a round whose rows are on disk.

    Raises
    ------
    RunError
        The run directory cannot take it (one line; files already written are kept).
    """
    path = Path(run_dir) / CHECKPOINT
    try:
        write_npz(path, arrays, meta)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e} (is the run directory writable, the disk full?); files already written are kept") from e


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(meta, arrays)`` of the run's checkpoint, or None if no round completed.

    Raises
    ------
    RunError
        The file exists but cannot be read (never unpickled).
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        arrays, meta = read_npz(path)
    except ValueError as e:
        raise RunError(f"{path}: unreadable checkpoint ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("round"), int):
        raise RunError(f"{path}: checkpoint names no completed round")
    return meta, arrays


def discard_rounds_after(run_dir: Path, rnd: int) -> list[int]:
    """Remove round parts (and rows of ``rounds.parquet``) after round ``rnd``: a round the
    run was in when it stopped, to be run again on resume. Returns the rounds removed."""
    run_dir = Path(run_dir)
    gone: list[int] = []
    parts_dir = run_dir / _PARTS
    for p in sorted(parts_dir.glob("round-*.parquet")) if parts_dir.is_dir() else []:
        r = int(p.stem.split("-")[1])
        if r > rnd:
            p.unlink()
            gone.append(r)
    target = run_dir / "rounds.parquet"
    if target.is_file():
        done = pq.read_table(target)
        rounds = done.column("round").to_pylist()
        keep = [i for i, r in enumerate(rounds) if r <= rnd]
        if len(keep) < len(rounds):
            gone.extend(sorted({r for r in rounds if r > rnd}))
            write_table(target, done.take(keep))
    return sorted(set(gone))


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


def write_error_log(run_dir: Path, exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback, the versions and the command line to ``run_dir/error.log``.

    Returns the path written, or None when the run directory cannot take it (then the
    caller's one-line message is all there is).
    """
    import platform
    import sys
    import traceback

    text = "".join(traceback.format_exception(exc))
    env = {"argv": sys.argv, "python": platform.python_version(), "platform": platform.platform()}
    for mod in ("flwr", "ray", "torch", "numpy", "pyarrow", "sionna"):
        try:
            from importlib.metadata import version

            env[mod] = version("sionna-no-rt" if mod == "sionna" else mod)
        except Exception:  # noqa: BLE001 - a missing distribution is not an error here
            env[mod] = "?"
    path = Path(run_dir) / "error.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n{json.dumps(env, indent=2)}\n{text}\n")
    except OSError:
        return None
    return path


def read_table(path: Path) -> pa.Table:
    """Read a Parquet table."""
    return pq.read_table(path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""

    def w(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    _atomic(path, w)
