"""The ``influence`` stage's table: what a device class sets for influence-guided fine-tuning."""

from __future__ import annotations

from common.influence.core import STAGE_SCHEMA
from common.stage import StageSpec

__all__ = ["SPEC"]

SPEC = StageSpec("influence", STAGE_SCHEMA)
