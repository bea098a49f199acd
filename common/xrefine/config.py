"""The ``prune`` stage's table: what a device class sets for relevance pruning (X-REFINE).

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation". No equation here: the keys parameterise the
procedure of ``common.xrefine.detector`` (the budget of (X7), the relevance of (X1)-(X4),
numbered in ``common.xrefine``'s docstring).
"""

from __future__ import annotations

from common.schema import Field
from common.stage_spec import StageSpec
from common.xrefine.scores import METHODS

__all__ = ["STAGE_SCHEMA", "SPEC"]

#: keys, defaults and ranges of a device class's ``[fleet.prune]`` table
STAGE_SCHEMA: dict[str, Field] = {
    "budget_flops": Field(int, min=1, doc="FLOPs of one forward pass the device's detector may cost"),
    "method": Field(str, "relevance", choices=METHODS, doc="pruning criterion"),
    "retrain_epochs": Field(int, 2, min=0, doc="retraining epochs on the device's data after pruning"),
    "retrain_lr": Field(float, 1e-3, min=0.0, max=1.0, doc="retraining learning rate"),
    "batch_size": Field(int, 250, min=1, doc="retraining batch size"),
    "relevance_samples": Field(int, 512, min=1, doc="training samples the relevance is aggregated over"),
    "epsilon": Field(float, 1e-3, min=1e-12, doc="LRP-epsilon stabilizer"),
}

SPEC = StageSpec("prune", STAGE_SCHEMA)
