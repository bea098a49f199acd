"""X-REFINE (Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and
Architecture Fine-tuning for Channel Estimation"): sign-stabilized LRP-epsilon relevance
of input units and hidden units, the subcarrier classes, relevance-guided input filtering
and structured pruning (thresholds or a FLOP budget), and the baselines compared with it.

The paper's text on file is its abstract, which numbers no equation; the equations this
package implements are numbered here, and its modules cite these numbers:

- (X1) LRP-epsilon rule: ``R_{l-1,j} = a_{l-1,j} sum_k w_jk R_{l,k} / (z_{l,k} + eps sign(z_{l,k}))``,
  ``sign(0) = +1``;
- (X2) per-layer conservation: ``sum_j R_{l-1,j} = sum_k R_{l,k} (z_k - b_k) / (z_k + eps sign z_k)``;
- (X3) output relevance of a regression network: ``R_out = |y|`` (the sign-aligned sum
  of every output's decomposition);
- (X4) unit relevance: ``r_u = (1/n) sum_i sum_{p in u} R_{i,p}`` (subcarrier: re + im;
  conv channel: all positions);
- (X5) input classes from ``s = r / max|r|``: harmful ``s <= -nu``, neutral ``|s| < nu``,
  reliable ``s >= rho``, else contributing;
- (X6) a threshold ``q`` keeps a layer's units but the ``round(q n)`` lowest scored;
- (X7) budget ranking ``s_u / mean_{layer(u)} |s|``, lowest removed until
  ``FLOPs <= B``, best re-admitted where they still fit.

Modules: ``lrp`` (the rule, (X1)-(X3)), ``relevance`` (dataset aggregation and classes,
(X4)-(X5)), ``surgery`` (exact structural copies of an estimator or SDNet holding the kept
units), ``scores`` (relevance, magnitude and random criteria), ``thresholds`` (quantile
pruning, the threshold grid and its cheapest point, (X6)), ``budget`` (forward FLOPs and
pruning an SDNet to a FLOP budget, (X7)), ``detector`` (the fleet's procedure: prune a
device's SDNet to its budget, retrain, report), ``config`` (the ``prune`` stage's table
and ``SPEC``).
"""

from common.xrefine.budget import budget_keep, model_flops, prune_sdnet_to_budget
from common.xrefine.config import SPEC, STAGE_SCHEMA
from common.xrefine.detector import DetectorPruning, prune_detector
from common.xrefine.lrp import LrpStage, lrp_epsilon, lrp_stages
from common.xrefine.relevance import SUBCARRIER_CLASSES, RelevanceProfile, classify_units, relevance_profile
from common.xrefine.scores import METHODS, UnitScores, unit_scores
from common.xrefine.surgery import prune_estimator, prune_model, prune_sdnet, unit_counts
from common.xrefine.thresholds import cheapest_meeting, keep_lowest_dropped, prune_by_fraction, threshold_grid

__all__ = [
    "LrpStage",
    "lrp_stages",
    "lrp_epsilon",
    "SUBCARRIER_CLASSES",
    "RelevanceProfile",
    "relevance_profile",
    "classify_units",
    "METHODS",
    "UnitScores",
    "unit_scores",
    "unit_counts",
    "prune_estimator",
    "prune_sdnet",
    "prune_model",
    "keep_lowest_dropped",
    "prune_by_fraction",
    "threshold_grid",
    "cheapest_meeting",
    "model_flops",
    "budget_keep",
    "prune_sdnet_to_budget",
    "DetectorPruning",
    "prune_detector",
    "STAGE_SCHEMA",
    "SPEC",
]
