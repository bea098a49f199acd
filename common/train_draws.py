"""The settings of a ``train_draws`` key: how an SDNet training set's samples are drawn.

A torch-free home, so that the scenario schema (``common.scenario``) and the trainers
(``common.learngene.training.Redraw``) name the same choices. "fixed": the samples drawn
once and reused every epoch (the learngene paper's Table III). "per-epoch": fresh symbols,
pilots and noise every epoch over the same channels (``docs/sdnet_fidelity.md``,
"Redrawn noise").
"""

from __future__ import annotations

__all__ = ["TRAIN_DRAWS"]

#: the ``train_draws`` settings, the paper's first
TRAIN_DRAWS: tuple[str, ...] = ("fixed", "per-epoch")
