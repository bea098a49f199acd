"""Studies: paper experiments that a scenario file can ask for instead of a fleet run.

They run in-process, on neither end of the link: they call the papers' methods in
``common/`` directly (the base station's decoder, a device's fine-tuning) and import
neither ``server`` nor ``clients``.

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
from pathlib import Path
from types import ModuleType
from typing import Any

from common.progress import ProgressFn
from common.scenario import STUDY_TOP_SCHEMA, Scenario, read_scenario_file
from common.schema import ScenarioError, validate_section

__all__ = ["STUDIES", "ProgressFn", "load_study", "parse_study", "load_study_scenario", "no_progress"]

#: study kind -> module path
STUDIES: dict[str, str] = {
    "learngene_paper": "studies.learngene_paper",
    "csi_feedback_paper": "studies.csi_feedback_paper",
    "influence_paper": "studies.influence_paper",
    "xrefine": "studies.xrefine",
    "sdnet_table1": "studies.sdnet_table1",
}


def load_study(kind: str) -> ModuleType:
    """The study module for ``kind``; ``ValueError`` naming the known kinds otherwise."""
    if kind not in STUDIES:
        raise ValueError(f"unknown study kind {kind!r}; expected one of {sorted(STUDIES)}")
    return importlib.import_module(STUDIES[kind])


def no_progress(label: str, done: int, total: int) -> None:
    """A ProgressFn that shows nothing (tests)."""


def parse_study(raw: dict[str, Any], file: str = "<memory>") -> Scenario:
    """Validate a study scenario's raw mapping (``name``, ``seed`` and a ``[study]`` table).

    The table goes through the study module's ``SCHEMA``, then through its ``check(cfg)``
    if it has one (its own checks beyond types and ranges; it raises ``ScenarioError``
    naming a key, or ``ValueError``, reported against ``study``), so that a table the study
    would refuse fails here, before a run directory exists.

    Raises
    ------
    ScenarioError
        Naming ``file`` and the dotted key of the first problem found.
    """
    try:
        top = {k: v for k, v in raw.items() if k != "study"}
        data = validate_section(top, STUDY_TOP_SCHEMA, "")
        study = raw.get("study")
        if not isinstance(study, dict):
            raise ScenarioError("study", f"expected a table, got {type(study).__name__} {study!r}")
        if "kind" not in study:
            raise ScenarioError("study.kind", f"required key is missing; expected one of {sorted(STUDIES)}")
        kind = study["kind"]
        if not isinstance(kind, str) or kind not in STUDIES:
            raise ScenarioError("study.kind", f"{kind!r} is not one of {sorted(STUDIES)}")
        module = load_study(kind)
        cfg = validate_section({k: v for k, v in study.items() if k != "kind"}, module.SCHEMA, "study")
        check = getattr(module, "check", None)
        if check is not None:
            try:
                check(cfg)
            except ScenarioError:
                raise
            except ValueError as e:
                raise ScenarioError("study", str(e)) from None
        data["study"] = {"kind": kind, **cfg}
        return Scenario(data, file)
    except ScenarioError as e:
        raise e.in_file(file) from None


def load_study_scenario(path: str | Path) -> Scenario:
    """Read and validate a study scenario file (``ScenarioError`` naming file and key)."""
    return parse_study(read_scenario_file(path), str(Path(path)))
