"""Influence-guided targeted fine-tuning of an SDNet MIMO detector on a device's data.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025), applied to the fleet's SDNet detector instead of DeepRx:
targets by the relative BER gap to a genie LMMSE (``eq:relative_ber_gap``, Fig. 2),
influence scores on the capacity-like BCE on bits read from SDNet's tanh outputs,
fine-tuning of a copy on the most beneficial samples against copies tuned on random ones
(Fig. 3-4), reported as BER and relative gap reduction (Fig. 4 tables). The text at hand
keeps no equation numbers; the equations are those of :mod:`common.influence.selection`
and :mod:`common.influence.scores`.

:func:`targeted_finetune` is the body of the fleet's ``influence`` stage; its device half
(``clients.stages.influence``) only unpacks a device's round into its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from common.influence.config import STAGE_SCHEMA
from common.influence.finetune import finetune_copy
from common.influence.gradients import mean_grad
from common.influence.losses import bce_bits, tanh_to_bit_logits
from common.influence.scores import InfluenceEngine, influence_flops
from common.influence.selection import gap_reduction, instance_ber, select_samples, select_targets
from common.schema import validate_section
from common.seeding import derive_seed

__all__ = [
    "sdnet_bce_loss",
    "sdnet_bits",
    "detection_instances",
    "genie_lmmse_bits",
    "TargetedFinetuneResult",
    "targeted_finetune",
]


def sdnet_bce_loss(out: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per-sample BCE (bits) ``float [n]`` of SDNet outputs ``[n, 2 n_t]`` against ``bits [n, 2 n_t]``."""
    return bce_bits(tanh_to_bit_logits(out), bits)


@torch.no_grad()
def sdnet_bits(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Hard decisions ``uint8 [n, 2 n_t]`` of SDNet (``b = (o < 0)``) on inputs ``X``;
    ``model`` is put in eval mode."""
    return (model.eval()(X) < 0).to(torch.uint8)


def detection_instances(H: torch.Tensor, instance_size: int) -> int:
    """Samples per instance of a detection batch.

    An *instance* is a run of consecutive samples that share one channel realisation
    (``H`` equal). When consecutive samples do not share channels (the fleet's device
    data: every sample its own draw of the device's task), an instance is a group of
    ``instance_size`` consecutive samples (the trailing remainder is dropped).

    Parameters
    ----------
    H : torch.Tensor
        ``complex64 [n, n_r, n_t]`` channels of the batch's samples.
    instance_size : int
        Samples per instance when runs do not share one length.

    Returns
    -------
    int
        The run length (if all runs share it), else ``instance_size``.
    """
    n = H.shape[0]
    same = (H[1:] == H[:-1]).flatten(1).all(1) if n > 1 else torch.zeros(0, dtype=torch.bool)
    breaks = torch.cat([torch.tensor([0]), torch.nonzero(~same).flatten() + 1, torch.tensor([n])])
    runs = breaks[1:] - breaks[:-1]
    if runs.numel() and bool((runs == runs[0]).all()) and int(runs[0]) > 1:
        return int(runs[0])
    return int(instance_size)


def genie_lmmse_bits(batch: Any) -> torch.Tensor:
    """Hard-decision bits ``uint8 [n, 2 n_t]`` of the genie LMMSE (true channel) on a
    ``common.phy.dataset.DetectionBatch``, in the layout of ``batch.bits``."""
    from common.phy.detection import lmmse_genie
    from common.phy.modulation import hard_qpsk, indices_to_bits

    return indices_to_bits(hard_qpsk(lmmse_genie(batch.y, batch.H, batch.noise_var)))


@dataclass
class TargetedFinetuneResult:
    """What :func:`targeted_finetune` gives back.

    Attributes
    ----------
    metrics : dict[str, float]
        ``n_targets``, ``n_instances``, ``instance_size`` and, when there was a target,
        ``ber_targets_{before,influence,random,genie}``,
        ``ber_others_{before,influence,random,genie}`` (fractions of bits in error),
        ``gap_reduction_targets_{influence,random}``,
        ``gap_reduction_others_{influence,random}`` (relative reduction of the BER gap,
        ``1 - gap_after / gap_before``) and ``mean_score_selected``.
    flops : int
        Floating-point operations run (evaluation, scoring, every fine-tuning run).
    model : nn.Module or None
        The influence-tuned copy if ``keep_model`` (and there was a target), else None.
    """

    metrics: dict[str, float]
    flops: int
    model: nn.Module | None = None


def targeted_finetune(model: nn.Module, train: Any, val: Any, cfg: dict[str, Any], seed: int) -> TargetedFinetuneResult:
    """Influence-guided target selection and fine-tuning of one SDNet detector.

    Instances of ``val`` (see :func:`detection_instances`) are ranked by relative BER gap
    to the genie LMMSE; the top ``n_targets`` (``BER_genie >= min_genie_ber``) are the
    targets; every ``train`` sample is scored by ``method``; a copy of ``model`` is
    fine-tuned on the ``budget`` most beneficial samples, and copies on ``budget`` random
    samples (``seeds`` draws) as the baseline.

    Parameters
    ----------
    model : nn.Module
        The SDNet detector (put in eval mode; its parameters are not changed).
    train, val : common.phy.dataset.DetectionBatch
        Training samples to score and tune on; validation samples the targets come from.
    cfg : dict
        An ``influence`` table; validated against :data:`common.influence.config.STAGE_SCHEMA`
        (missing keys take their defaults).
    seed : int
        Seed root of the Arnoldi start vector and the random selections.

    Returns
    -------
    TargetedFinetuneResult
    """
    from common.models.complexity import count_flops, count_parameters

    cfg = validate_section(cfg, STAGE_SCHEMA, "influence")
    model = model.eval()
    fwd = count_flops(model, (1, *train.sdnet_input.shape[1:]))
    P = count_parameters(model)
    m = detection_instances(val.H, cfg["instance_size"])
    n_inst = len(val) // m
    if n_inst < 1:
        raise ValueError(f"validation set of {len(val)} samples holds no instance of {m}")
    Xv, Bv = val.sdnet_input[: n_inst * m], val.bits[: n_inst * m]
    genie = genie_lmmse_bits(val.subset(slice(0, n_inst * m)))
    ber_genie = instance_ber(genie, Bv, m)
    before = sdnet_bits(model, Xv)
    ber_before = instance_ber(before, Bv, m)
    flops = fwd * n_inst * m
    targets = select_targets(ber_before, ber_genie, cfg["n_targets"], cfg["min_genie_ber"])
    metrics: dict[str, float] = {"n_targets": float(len(targets)), "n_instances": float(n_inst), "instance_size": float(m)}
    if len(targets) == 0:
        return TargetedFinetuneResult(metrics=metrics, flops=int(flops))
    tmask = np.zeros(n_inst, bool)
    tmask[targets] = True
    sample_t = torch.from_numpy(np.repeat(tmask, m))
    Xt, Bt = Xv[sample_t], Bv[sample_t]
    Xtr, Btr = train.sdnet_input, train.bits
    budget = min(cfg["budget"], len(train))
    need_h = cfg["method"] != "first_order" or cfg["update"] == "second_order"
    eng = InfluenceEngine.fit(
        model, sdnet_bce_loss, Xtr, Btr, need_hessian=need_h, k=cfg["k"], n_steps=cfg["arnoldi_steps"],
        damping=cfg["damping"], tol=cfg["arnoldi_tol"], hessian_samples=cfg["hessian_samples"],
        generator=torch.Generator().manual_seed(derive_seed(seed, "influence", "arnoldi")),
    )
    g_t = mean_grad(model, sdnet_bce_loss, Xt, Bt)
    s = eng.scores(cfg["method"], g_t)
    flops += influence_flops(fwd, P, len(train), eng.n_hessian, eng.n_hvp, int(sample_t.sum()))

    def tuned(idx: torch.Tensor) -> nn.Module:
        return finetune_copy(model, sdnet_bce_loss, Xtr[idx], Btr[idx], update=cfg["update"], steps=cfg["steps"],
                             lr=cfg["lr"], inv_hessian=eng.inv_hessian)

    def mean_bers(ber: np.ndarray) -> tuple[float, float]:
        """Mean instance BER on the targets and on the others (``nan`` if none)."""
        return float(ber[tmask].mean()), float(ber[~tmask].mean()) if (~tmask).any() else float("nan")

    def bers(mod: nn.Module) -> tuple[float, float]:
        return mean_bers(instance_ber(sdnet_bits(mod, Xv), Bv, m))

    sel = select_samples(s, budget, "beneficial")
    model_inf = tuned(sel)
    bt_inf, bo_inf = bers(model_inf)
    rnd = []
    for r in range(cfg["seeds"]):
        g = torch.Generator().manual_seed(derive_seed(seed, "influence", "random", r))
        rnd.append(bers(tuned(select_samples(s, budget, "random", g))))
    bt_rnd, bo_rnd = float(np.mean([r[0] for r in rnd])), float(np.mean([r[1] for r in rnd]))
    ft_runs = 1 + cfg["seeds"]
    flops += ft_runs * (3 * fwd * budget * cfg["steps"] + fwd * n_inst * m)
    gt, go = mean_bers(ber_genie)
    bt0, bo0 = mean_bers(ber_before)
    metrics.update({
        "ber_targets_before": bt0, "ber_targets_influence": bt_inf, "ber_targets_random": bt_rnd, "ber_targets_genie": gt,
        "ber_others_before": bo0, "ber_others_influence": bo_inf, "ber_others_random": bo_rnd, "ber_others_genie": go,
        "gap_reduction_targets_influence": gap_reduction(bt0, bt_inf, gt),
        "gap_reduction_targets_random": gap_reduction(bt0, bt_rnd, gt),
        "gap_reduction_others_influence": gap_reduction(bo0, bo_inf, go),
        "gap_reduction_others_random": gap_reduction(bo0, bo_rnd, go),
        "mean_score_selected": float(s[sel].mean()),
    })
    return TargetedFinetuneResult(metrics=metrics, flops=int(flops), model=model_inf if cfg["keep_model"] else None)
