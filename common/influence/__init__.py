"""Influence-guided target selection and fine-tuning of neural receivers (Tuononen,
Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via Influence
Functions", 2025), with inverse-Hessian-vector products by Arnoldi iteration (Schioppa et
al., "Scaling Up Influence Functions", AAAI 2022) and the classical influence of Koh &
Liang (ICML 2017).

Pipeline (one device, one round): targets are the validation instances with the largest
relative BER gap to a genie LMMSE; every training sample is scored by its influence on the
targets' loss (negative = beneficial); a copy of the receiver is fine-tuned on the most
beneficial samples.

Modules: ``losses`` (capacity-like BCE on bits, tanh outputs as bit logits),
``selection`` (relative BER gap and targets, sample selection, gap reduction),
``gradients`` (parameter vectors, per-sample gradients, Hessian-vector products),
``ihvp`` (Arnoldi iteration and the low-rank inverse Hessian), ``scores`` (the influence
scores, their sign convention, the engine and its FLOPs), ``finetune`` (first-order and
influence-aligned second-order updates), ``detector`` (SDNet glue and
:func:`targeted_finetune`, the body of the fleet's ``influence`` stage), ``config`` (the
stage's table and :class:`common.stage.StageSpec`).
"""

from common.influence.config import SPEC, STAGE_SCHEMA
from common.influence.detector import (
    TargetedFinetuneResult,
    detection_instances,
    genie_lmmse_bits,
    sdnet_bce_loss,
    sdnet_bits,
    targeted_finetune,
)
from common.influence.finetune import UPDATES, finetune_copy, first_order_finetune, second_order_update
from common.influence.gradients import exact_hessian, flat_params, hvp_operator, mean_grad, per_sample_grads, set_flat_params
from common.influence.ihvp import ArnoldiResult, LowRankInverseHessian, arnoldi
from common.influence.losses import LossFn, bce_bits, bits_from_logits, tanh_to_bit_logits
from common.influence.scores import METHODS, InfluenceEngine, influence_flops, influence_scores
from common.influence.selection import gap_reduction, instance_ber, relative_ber_gap, select_samples, select_targets

__all__ = [
    "LossFn",
    "bce_bits",
    "bits_from_logits",
    "tanh_to_bit_logits",
    "relative_ber_gap",
    "select_targets",
    "instance_ber",
    "gap_reduction",
    "select_samples",
    "flat_params",
    "set_flat_params",
    "per_sample_grads",
    "mean_grad",
    "hvp_operator",
    "exact_hessian",
    "ArnoldiResult",
    "arnoldi",
    "LowRankInverseHessian",
    "METHODS",
    "influence_scores",
    "InfluenceEngine",
    "influence_flops",
    "UPDATES",
    "first_order_finetune",
    "second_order_update",
    "finetune_copy",
    "sdnet_bce_loss",
    "sdnet_bits",
    "detection_instances",
    "genie_lmmse_bits",
    "TargetedFinetuneResult",
    "targeted_finetune",
    "STAGE_SCHEMA",
    "SPEC",
]
