"""The ``csi_feedback`` stage's table and the keys both halves use."""

from __future__ import annotations

from typing import Any

from common.csi.core import DECODER_TAG_KEY, LATENT_KEY, STAGE_SCHEMA, UPDATE_KEY, compressor_config
from common.stage import StageSpec

__all__ = ["SPEC", "DECODER_TAG_KEY"]


def _check(cfg: dict[str, Any]) -> None:
    compressor_config(cfg)  # the compressor's own shape checks


SPEC = StageSpec("csi_feedback", STAGE_SCHEMA, payload_keys=(UPDATE_KEY, LATENT_KEY), check=_check)
