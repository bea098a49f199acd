"""Studies: paper experiments that a scenario file can ask for instead of a fleet run.

A scenario with a ``[study]`` table whose ``kind`` names a module here runs that study.
Every study module provides:

- ``SCHEMA: dict[str, common.schema.Field]`` for the keys of its ``[study]`` table
  (``kind`` excluded), validated before anything runs;
- ``run(cfg: dict, seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict``:
  writes Arrow/Parquet tables (and JSON) under ``out_dir`` and returns a small JSON-able
  summary; all randomness derives from ``seed`` via ``common.seeding``;
- ``report(out_dir: pathlib.Path) -> list[pathlib.Path]``: redraws every PNG from the
  tables alone (``airfleet report RUN_DIR``).

``ProgressFn = Callable[[str, int, int], None]``: ``progress(label, done, total)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

ProgressFn = Callable[[str, int, int], None]

#: study kind -> module path
STUDIES: dict[str, str] = {
    "learngene_paper": "server.studies.learngene_paper",
    "csi_feedback_paper": "server.studies.csi_feedback_paper",
    "influence_paper": "server.studies.influence_paper",
    "xrefine": "server.studies.xrefine",
}


def load_study(kind: str) -> ModuleType:
    """The study module for ``kind``; ``ValueError`` naming the known kinds otherwise."""
    if kind not in STUDIES:
        raise ValueError(f"unknown study kind {kind!r}; expected one of {sorted(STUDIES)}")
    return importlib.import_module(STUDIES[kind])


def no_progress(label: str, done: int, total: int) -> None:
    """A ProgressFn that shows nothing (tests)."""
