"""The ``prune`` stage's table: what a device class sets for relevance pruning (X-REFINE)."""

from __future__ import annotations

from common.stage import StageSpec
from common.xrefine.core import STAGE_SCHEMA

__all__ = ["SPEC"]

SPEC = StageSpec("prune", STAGE_SCHEMA)
