"""The ``influence`` stage's table: what a device class sets for influence-guided fine-tuning.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025). The defaults follow it where it gives them: targets need
``BER_genie >= 1e-3`` (Fig. 2), ``k = 40`` Arnoldi eigenvalues (Fig. 5), 3 fine-tuning
steps for a single target (Fig. 4), loss-relative (``relatif``) scores with first-order
updates (abstract). It implements no equation itself.
"""

from __future__ import annotations

from common.influence.finetune import UPDATES
from common.influence.scores import METHODS
from common.schema import Field
from common.stage_spec import StageSpec

__all__ = ["STAGE_SCHEMA", "SPEC"]

#: keys of a device class's ``influence`` table
STAGE_SCHEMA: dict[str, Field] = {
    "method": Field(str, "relatif", choices=METHODS, doc="influence score (negative = beneficial)"),
    "update": Field(str, "first_order", choices=UPDATES, doc="fine-tuning update"),
    "n_targets": Field(int, 1, min=1, max=64, doc="top-k relative-BER-gap instances (1 = single target; >1 = one joint multi-target set)"),
    "min_genie_ber": Field(float, 1e-3, min=0.0, max=0.5, doc="targets need BER_genie >= this"),
    "instance_size": Field(int, 16, min=1, doc="consecutive samples per instance when samples do not share channels"),
    "k": Field(int, 40, min=1, max=1000, doc="eigenvalues kept by Arnoldi"),
    "arnoldi_steps": Field(int, 100, min=1, max=5000, doc="Arnoldi iterations (>= 2.5 k advised)"),
    "arnoldi_tol": Field(float, 1e-6, min=0.0, max=1.0, doc="relative stopping tolerance"),
    "damping": Field(float, 1e-3, min=0.0, doc="added to |eigenvalue| when inverting"),
    "hessian_samples": Field(int, 512, min=1, doc="training samples in the Hessian"),
    "budget": Field(int, 64, min=1, doc="training samples selected (influence and random alike)"),
    "steps": Field(int, 3, min=0, max=1000, doc="fine-tuning steps (paper: 3 single, 15 multi)"),
    "lr": Field(float, 1e-3, min=0.0, doc="learning rate of the fine-tuning steps"),
    "loss": Field(str, "bce", choices=("bce",), doc="BCE on bits (SDNet tanh outputs read as soft signs)"),
    "seeds": Field(int, 1, min=1, max=100, doc="random-selection baselines averaged"),
    "keep_model": Field(bool, False, doc="replace the device model with the influence-tuned one"),
}

#: what the device half (``clients.stages.influence``) and the scenario agree on
SPEC = StageSpec("influence", STAGE_SCHEMA)
