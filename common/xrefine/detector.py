"""Relevance pruning of a device's SDNet detector to its FLOP budget, retrained on its data.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation", applied to the fleet's MIMO detector (SDNet, Zhang
et al., "Efficient Deployment of Deep MIMO Detection Using Learngene"). The procedure
strings together (X1)-(X4) (relevance of the detector's input rows and conv channels on
the device's training data), (X7) (the tight keep set under the budget) and the
retraining of the pruned architecture; equations numbered in ``common.xrefine``'s
docstring. It is the method body of the fleet stage ``prune``; its device half
(``clients.stages.prune``) only unpacks a device's round onto :func:`prune_detector`.

FLOP convention: relevance costs a forward pass plus an LRP backward pass (about 2 x
forward) per sample, ``3 * forward_flops * relevance_samples``; retraining costs what
``common.learngene.training.finetune`` reports; evaluation is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from common.learngene.training import evaluate_ser, finetune
from common.models.complexity import count_parameters
from common.models.sdnet import SDNet
from common.phy.dataset import DetectionBatch
from common.schema import validate_section
from common.seeding import derive_seed, torch_generator
from common.xrefine.budget import model_flops, prune_sdnet_to_budget
from common.xrefine.config import STAGE_SCHEMA

__all__ = ["DetectorPruning", "prune_detector"]


@dataclass
class DetectorPruning:
    """What :func:`prune_detector` did.

    Attributes
    ----------
    metrics : dict[str, float]
        ``flops_before``, ``flops_after`` (forward FLOPs per sample), ``params_before``,
        ``params_after``, ``ser_before``, ``ser_after`` (symbol error rate on ``val``),
        ``input_rows``, ``channels`` (of the detector after the stage).
    flops : int
        FLOPs run: relevance (``3 x forward`` per relevance sample, criterion
        ``relevance`` only) plus retraining; 0 when the detector already fits.
    model : SDNet or None
        The pruned, retrained detector in eval mode; None when the detector already fits.
    architecture : dict[str, np.ndarray]
        ``widths`` and ``input_rows`` (int64) of the pruned detector, from which it is
        rebuilt; empty when the detector already fits.
    """

    metrics: dict[str, float]
    flops: int = 0
    model: SDNet | None = None
    architecture: dict[str, np.ndarray] = field(default_factory=dict)


def prune_detector(
    model: nn.Module | None, train: DetectionBatch | None, val: DetectionBatch | None, cfg: dict[str, Any], seed: int
) -> DetectorPruning:
    """Fit an SDNet to ``cfg["budget_flops"]``, retrain it, report SER before and after.

    Computes the criterion (LRP relevance by default) of ``model`` on ``train``, prunes
    conv channels and input rows to the budget (``prune_sdnet_to_budget``), retrains
    briefly on ``train`` (``common.learngene.training.finetune``) and evaluates SER on
    ``val`` before and after. A detector that already fits is left as it is.

    Parameters
    ----------
    model : SDNet
        The device's detector (not modified); anything else raises ``ValueError``.
    train, val : DetectionBatch
        The device's local training and validation data.
    cfg : dict
        The ``prune`` table (``common.xrefine.config.STAGE_SCHEMA``); validated here,
        missing keys take their defaults.
    seed : int
        Seed root of the device's round; the random criterion draws from
        ``derive_seed(seed, "prune-random")``, retraining from
        ``torch_generator(seed, "prune-retrain")``.

    Returns
    -------
    DetectorPruning

    Raises
    ------
    ScenarioError
        If ``cfg`` does not fit the schema.
    ValueError
        If ``model`` is not an SDNet, or ``train`` or ``val`` is None.
    """
    cfg = validate_section(cfg, STAGE_SCHEMA, "prune")
    if not isinstance(model, SDNet):
        raise ValueError(f"the prune stage needs the device's model to be an SDNet, got {type(model).__name__}")
    if train is None or val is None:
        raise ValueError("the prune stage needs the device's train and val data")
    flops_before, params_before = model_flops(model), count_parameters(model)
    ser_before = float(evaluate_ser(model, val))
    metrics = {"flops_before": float(flops_before), "params_before": float(params_before), "ser_before": ser_before}
    if flops_before <= cfg["budget_flops"]:
        metrics.update(flops_after=float(flops_before), params_after=float(params_before), ser_after=ser_before,
                       input_rows=float(len(model.input_rows)), channels=float(sum(model.widths)))
        return DetectorPruning(metrics=metrics, flops=0, model=None)
    n_rel = min(int(cfg["relevance_samples"]), len(train))
    pruned = prune_sdnet_to_budget(
        model, train, cfg["budget_flops"], cfg["method"], seed=derive_seed(seed, "prune-random"),
        epsilon=cfg["epsilon"], n_samples=n_rel,
    )
    assert isinstance(pruned, SDNet)
    train_flops = 0
    if cfg["retrain_epochs"] > 0:
        res = finetune(pruned, train, epochs=cfg["retrain_epochs"], batch_size=cfg["batch_size"], lr=cfg["retrain_lr"],
                       generator=torch_generator(seed, "prune-retrain"))
        train_flops = int(res.flops)
    pruned.eval()
    relevance_flops = 3 * flops_before * n_rel if cfg["method"] == "relevance" else 0  # forward + LRP backward (~2x)
    metrics.update(
        flops_after=float(model_flops(pruned)), params_after=float(count_parameters(pruned)),
        ser_after=float(evaluate_ser(pruned, val)), input_rows=float(len(pruned.input_rows)),
        channels=float(sum(pruned.widths)),
    )
    architecture = {"widths": np.asarray(pruned.widths, dtype=np.int64), "input_rows": np.asarray(pruned.input_rows, dtype=np.int64)}
    return DetectorPruning(metrics=metrics, flops=int(relevance_flops + train_flops), model=pruned, architecture=architecture)
