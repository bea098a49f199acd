"""Study: influence-guided targeted fine-tuning of neural receivers (Tuononen et al. 2025).

For each receiver (``sdnet``: SDNet on MIMO detection, BCE on bits read from its tanh
outputs; ``deeprx``: the compact DeepRx on the Sionna OFDM slot of
:mod:`common.phy.ofdm_link`):

1. pre-train the receiver with BCE on bits on its training set (fixed per study);
2. fit the influence engine once (per-sample gradients, Arnoldi IHVP; the model and the
   training set do not change across seeds);
3. for every seed: draw a fresh validation set, rank its instances by the relative BER
   gap to the genie LMMSE (``BER_genie >= 1e-3``), and
   - *single*: for each of the top ``single_targets`` targets alone,
   - *multi*: for the top ``n_targets`` jointly,
   fine-tune copies on ``budget`` training samples chosen as most beneficial, most
   harmful (influence) or at random, with the first-order and the second-order update,
   logging the target BER after every step and the other instances' BER at the end.

Tables (Parquet, under ``out_dir``): ``baselines`` (per receiver and seed: BER of the
pre-trained receiver, the genie LMMSE and LS + LMMSE on the validation draw),
``curves`` (one row per run and step),
``runs`` (one row per run: BER before/after on targets and others, genie BER, gap
reductions) and ``gap_table`` (mean ± std over seeds of the relative BER-gap reduction,
per receiver / scenario / update / selection). ``report`` draws BER-over-steps curves
(mean ± std over seeds) from ``curves`` alone.

Each pre-trained receiver with its inverse Hessian, and each (receiver, seed)'s rows, is a
unit of work kept in ``out_dir/work`` (:mod:`studies.work_units`): run again into the same
directory (``airfleet run --resume``), the study computes only what it had not finished.

An *instance* (the unit targets are made of): for DeepRx one slot (one channel
realisation, 14 OFDM symbols); for SDNet ``instance_size`` consecutive samples that share
one channel realisation (each with its own noise and symbols).
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from common.influence.detector import genie_lmmse_bits, sdnet_bce_loss, sdnet_bits
from common.influence.finetune import UPDATES, finetune_copy
from common.influence.gradients import mean_grad
from common.influence.ihvp import LowRankInverseHessian
from common.influence.losses import LossFn, bce_bits
from common.influence.scores import METHODS, InfluenceEngine
from common.influence.selection import gap_reduction, instance_ber, select_samples, select_targets
from common.learngene.training import conv_fast_layout
from common.runtime import torch_threads
from common.schema import Field
from common.seeding import derive_seed, torch_generator
from studies import ProgressFn
from studies.work_units import WorkUnits, load_model_arrays, model_arrays

__all__ = ["SCHEMA", "run", "report", "ReceiverProblem", "ValSet"]

SCHEMA: dict[str, Field] = {
    "seeds": Field(int, 5, min=1, max=100, doc="seeds (fresh validation set, targets, random draws)"),
    "threads": Field(int, 1, min=1, max=256, doc="torch CPU threads while the study runs (restored after)"),
    "receivers": Field(list, ["sdnet", "deeprx"], item=str, choices=("sdnet", "deeprx"), doc="receivers studied"),
    "method": Field(str, "relatif", choices=METHODS, doc="influence score"),
    "updates": Field(list, ["first_order", "second_order"], item=str, choices=UPDATES, doc="updates compared"),
    "selections": Field(list, ["beneficial", "harmful", "random"], item=str, choices=("beneficial", "harmful", "random"), doc="sample selections"),
    "single_targets": Field(int, 2, min=0, max=20, doc="top targets each tuned alone"),
    "n_targets": Field(int, 5, min=0, max=50, doc="top targets tuned jointly (0: no multi-target runs)"),
    "single_steps": Field(int, 3, min=1, max=200, doc="fine-tuning steps, single target (paper: 3)"),
    "multi_steps": Field(int, 15, min=1, max=500, doc="fine-tuning steps, multi target (paper: 15)"),
    "budget": Field(int, 32, min=1, doc="training samples per fine-tuning run"),
    "lr": Field(float, 1e-3, min=0.0, doc="Adam learning rate of the first-order update"),
    "lr_second_order": Field(float, 0.5, min=0.0, doc="step size of the second-order update"),
    "k": Field(int, 40, min=1, doc="Arnoldi eigenvalues kept"),
    "arnoldi_steps": Field(int, 100, min=1, doc="Arnoldi iterations"),
    "damping": Field(float, 1e-3, min=0.0, doc="added to |eigenvalue| when inverting"),
    "hessian_samples": Field(int, 128, min=1, doc="training samples in the Hessian"),
    "min_genie_ber": Field(float, 1e-3, min=0.0, doc="targets need BER_genie >= this"),
    # SDNet problem
    "sdnet_channel": Field(str, "rayleigh", doc="channel source for SDNet"),
    "sdnet_n_r": Field(int, 8, min=1), "sdnet_n_t": Field(int, 4, min=1), "sdnet_n_conv": Field(int, 4, min=0),
    "sdnet_snr_db": Field(float, 6.0), "sdnet_instance_size": Field(int, 32, min=1),
    "sdnet_train_instances": Field(int, 256, min=1, doc="training channels (x 4 samples each)"),
    "sdnet_val_instances": Field(int, 64, min=2), "sdnet_pretrain_epochs": Field(int, 15, min=0),
    # DeepRx problem
    "deeprx_n_subcarriers": Field(int, 24, min=2), "deeprx_n_rx": Field(int, 2, min=1),
    "deeprx_train_slots": Field(int, 512, min=1), "deeprx_val_slots": Field(int, 96, min=2),
    "deeprx_pretrain_steps": Field(int, 800, min=0), "deeprx_width": Field(int, 16, min=1),
}


@dataclass
class ReceiverProblem:
    """A receiver with its data, in the form the influence machinery needs.

    Attributes
    ----------
    name : str
    model : nn.Module
        Pre-trained, in eval mode.
    loss_fn : LossFn
        Per-sample BCE in bits.
    X_train, Y_train : torch.Tensor
        ``[N, ...]`` inputs and loss targets.
    to_bits : callable
        ``(model, X) -> uint8 [n, n_bits]`` hard decisions, in the layout of ``val_bits``.
    """

    name: str
    model: nn.Module
    loss_fn: LossFn
    X_train: torch.Tensor
    Y_train: torch.Tensor
    to_bits: Any
    make_val: Any  # (seed) -> ValSet


@dataclass
class ValSet:
    """A validation draw: inputs ``X``, loss targets ``Y``, true ``bits`` ``uint8 [n, n_bits]``,
    hard decisions of the genie LMMSE and of LS + LMMSE (same layout), samples per instance."""

    X: torch.Tensor
    Y: torch.Tensor
    bits: torch.Tensor
    genie_bits: torch.Tensor
    ls_bits: torch.Tensor
    instance_size: int


# ----------------------------------------------------------------------------- SDNet
def _sdnet_problem(cfg: dict[str, Any], seed: int, state: dict[str, np.ndarray] | None = None) -> ReceiverProblem:
    from common.channels import ChannelTask, sample_channels
    from common.models.sdnet import SDNet
    from common.phy.dataset import make_detection_batch

    task = ChannelTask.make(cfg["sdnet_channel"], cfg["sdnet_n_r"], cfg["sdnet_n_t"], 0, derive_seed(seed, "sdnet", "task"))

    def batch(n_inst: int, per: int, *path: Any) -> Any:
        H = sample_channels(task, n_inst, derive_seed(seed, "sdnet", "channels", *path)).repeat_interleave(per, 0)
        return make_detection_batch(H, cfg["sdnet_snr_db"], generator=torch_generator(seed, "sdnet", "symbols", *path))

    train = batch(cfg["sdnet_train_instances"], 4, "train")
    torch.manual_seed(derive_seed(seed, "sdnet", "init"))
    model = SDNet(cfg["sdnet_n_r"], cfg["sdnet_n_t"], cfg["sdnet_n_conv"])
    if state is not None:  # pre-trained before (a resumed study)
        load_model_arrays(model, state)
    else:
        _pretrain(model, sdnet_bce_loss, train.sdnet_input, train.bits.float(), steps=cfg["sdnet_pretrain_epochs"] * math.ceil(len(train) / 64),
                  batch=64, lr=2e-3, gen=torch_generator(seed, "sdnet", "pretrain"), fast_layout=True)
    model.eval()

    def make_val(s: int) -> ValSet:
        from common.phy.detection import mmse
        from common.phy.modulation import hard_qpsk, indices_to_bits

        v = batch(cfg["sdnet_val_instances"], cfg["sdnet_instance_size"], "val", s)
        ls = indices_to_bits(hard_qpsk(mmse(v.y, v.H_ls, v.noise_var)))
        return ValSet(v.sdnet_input, v.bits.float(), v.bits, genie_lmmse_bits(v), ls, cfg["sdnet_instance_size"])

    return ReceiverProblem("sdnet", model, sdnet_bce_loss, train.sdnet_input, train.bits.float(), sdnet_bits, make_val)


# ----------------------------------------------------------------------------- DeepRx
def _deeprx_problem(cfg: dict[str, Any], seed: int, state: dict[str, np.ndarray] | None = None) -> ReceiverProblem:
    from common.models.deeprx import DeepRx
    from common.phy.ofdm_link import OfdmLink, OfdmLinkConfig, receiver_input_channels

    link = OfdmLink(OfdmLinkConfig(n_subcarriers=cfg["deeprx_n_subcarriers"], n_rx=cfg["deeprx_n_rx"]))
    train = link.simulate(cfg["deeprx_train_slots"], derive_seed(seed, "deeprx", "train"))
    mask = train.data_mask

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce_bits(out, y, mask=mask)

    torch.manual_seed(derive_seed(seed, "deeprx", "init"))
    model = DeepRx(receiver_input_channels(cfg["deeprx_n_rx"]), width=cfg["deeprx_width"])
    X, Y = train.receiver_input(), train.bits_grid()
    if state is not None:  # pre-trained before (a resumed study)
        load_model_arrays(model, state)
    else:
        _pretrain(model, loss_fn, X, Y, steps=cfg["deeprx_pretrain_steps"], batch=32, lr=3e-3, gen=torch_generator(seed, "deeprx", "pretrain"))
    model.eval()

    @torch.no_grad()
    def to_bits(m: nn.Module, Xv: torch.Tensor) -> torch.Tensor:
        return (train.grid_to_bits(m.eval()(Xv)) > 0).to(torch.uint8)

    def make_val(s: int) -> ValSet:
        v = link.simulate(cfg["deeprx_val_slots"], derive_seed(seed, "deeprx", "val", s))
        genie = (link.genie_lmmse_llrs(v) > 0).to(torch.uint8)
        ls = (link.ls_lmmse_llrs(v) > 0).to(torch.uint8)
        return ValSet(v.receiver_input(), v.bits_grid(), v.bits, genie, ls, 1)

    return ReceiverProblem("deeprx", model, loss_fn, X, Y, to_bits, make_val)


def _pretrain(model: nn.Module, loss_fn: LossFn, X: torch.Tensor, Y: torch.Tensor, *, steps: int, batch: int, lr: float,
              gen: torch.Generator, fast_layout: bool = False) -> None:
    """Adam with a cosine decay over ``steps`` mini-batches drawn with replacement.
    ``fast_layout``: train inside ``conv_fast_layout`` (SDNet's channels-last layout with
    batch norm and tanh fused, the path every other SDNet training takes; issue #21)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    with conv_fast_layout(model, X) if fast_layout else contextlib.nullcontext(X) as X:
        for _ in range(steps):
            idx = torch.randint(0, X.shape[0], (batch,), generator=gen)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), Y[idx]).mean().backward()
            opt.step()
            sched.step()


# ----------------------------------------------------------------------------- run
def run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    """Run the study; write ``curves``, ``runs`` and ``gap_table`` Parquet tables and
    ``summary.json`` under ``out_dir``; return the summary (see module docstring)."""
    with torch_threads(cfg["threads"]):
        return _run(cfg, seed, pathlib.Path(out_dir), progress)


def _run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    curves: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    timing: dict[str, float] = {}
    work = WorkUnits(out_dir)  # completed units of work: a resumed study skips them (issue #22)
    total = len(cfg["receivers"]) * cfg["seeds"]
    done = 0
    for rx in cfg["receivers"]:
        fitted: list[tuple[ReceiverProblem, InfluenceEngine]] = []  # on the first seed that needs them

        def seed_rows(s: int, rx: str = rx, fitted: list[tuple[ReceiverProblem, InfluenceEngine]] = fitted) -> dict[str, list[dict[str, Any]]]:
            if not fitted:
                fitted.append(_fitted_receiver(cfg, seed, rx, work, timing))
            out: dict[str, list[dict[str, Any]]] = {"curves": [], "runs": [], "baselines": []}
            _one_seed(cfg, seed, s, *fitted[0], out["curves"], out["runs"], out["baselines"])
            return out

        for s in range(cfg["seeds"]):
            rows = work.rows(f"{rx}-seed-{s}", lambda: seed_rows(s))
            curves += rows["curves"]
            runs += rows["runs"]
            baselines += rows["baselines"]
            done += 1
            progress(f"influence_paper {rx}", done, total)
    tables = {"curves": _table(curves), "runs": _table(runs), "baselines": _table(baselines)}
    tables["gap_table"] = _gap_table(tables["runs"])
    for name, t in tables.items():
        pq.write_table(t, out_dir / f"{name}.parquet")
    summary = {"gap_table": tables["gap_table"].to_pylist(), "baselines": baselines, "timing_s": timing, "n_runs": len(runs)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    report(out_dir)
    return summary


def _fitted_receiver(cfg: dict[str, Any], seed: int, rx: str, work: WorkUnits, timing: dict[str, float]) -> tuple[ReceiverProblem, InfluenceEngine]:
    """Receiver ``rx`` pre-trained and its influence engine fitted: a unit of work
    (``<rx>-receiver``: the weights and the inverse Hessian's eigenpairs; the per-sample
    gradients are recomputed, they follow from the weights). Adds the seconds each step
    took when it was computed to ``timing``."""
    builders = {"sdnet": _sdnet_problem, "deeprx": _deeprx_problem}
    kept = work.load(f"{rx}-receiver")
    state = None if kept is None else {k.removeprefix("model."): v for k, v in kept[1].items() if k.startswith("model.")}
    t0 = time.perf_counter()
    prob = builders[rx](cfg, seed, state)
    t_pretrain = time.perf_counter() - t0
    t0 = time.perf_counter()
    need_h = cfg["method"] != "first_order" or "second_order" in cfg["updates"]
    inverse = None
    if kept is not None and need_h:
        inverse = (LowRankInverseHessian(torch.from_numpy(kept[1]["eigvals"]), torch.from_numpy(kept[1]["eigvecs"]), cfg["damping"]), int(kept[0]["n_hvp"]))
    eng = InfluenceEngine.fit(prob.model, prob.loss_fn, prob.X_train, prob.Y_train, need_hessian=need_h, k=cfg["k"],
                              n_steps=cfg["arnoldi_steps"], damping=cfg["damping"], hessian_samples=cfg["hessian_samples"],
                              generator=torch_generator(seed, rx, "arnoldi"), inverse=inverse)
    if kept is None:
        kept_timing = {f"{rx}_pretrain_s": t_pretrain, f"{rx}_influence_fit_s": time.perf_counter() - t0}
        arrays = {f"model.{k}": v for k, v in model_arrays(prob.model).items()}
        if eng.inv_hessian is not None:
            arrays |= {"eigvals": eng.inv_hessian.eigvals.detach().cpu().numpy(), "eigvecs": eng.inv_hessian.eigvecs.detach().cpu().numpy()}
        work.save(f"{rx}-receiver", {"timing": kept_timing, "n_hvp": eng.n_hvp}, arrays)
    else:
        kept_timing = kept[0]["timing"]
    timing.update(kept_timing)
    return prob, eng


def _one_seed(cfg: dict[str, Any], root: int, s: int, prob: ReceiverProblem, eng: InfluenceEngine,
              curves: list[dict[str, Any]], runs: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> None:
    val = prob.make_val(s)
    Xv, Yv, bits, m = val.X, val.Y, val.bits, val.instance_size
    n_inst = bits.shape[0] // m
    ber0 = instance_ber(prob.to_bits(prob.model, Xv), bits, m)
    ber_g = instance_ber(val.genie_bits, bits, m)
    baselines.append({"receiver": prob.name, "seed": s, "ber_receiver": float(ber0.mean()), "ber_genie_lmmse": float(ber_g.mean()),
                      "ber_ls_lmmse": float(instance_ber(val.ls_bits, bits, m).mean()),
                      "instances_with_genie_errors": int((ber_g >= cfg["min_genie_ber"]).sum()), "instances": n_inst})
    ranked = select_targets(ber0, ber_g, max(cfg["single_targets"], cfg["n_targets"], 1), cfg["min_genie_ber"])
    scenarios: list[tuple[str, int, np.ndarray, int]] = [("single", r, ranked[r : r + 1], cfg["single_steps"])
                                                         for r in range(min(cfg["single_targets"], len(ranked)))]
    if cfg["n_targets"] > 0 and len(ranked) > 0:
        scenarios.append(("multi", 0, ranked[: cfg["n_targets"]], cfg["multi_steps"]))
    for scen, rank, tgt, steps in scenarios:
        tmask = np.zeros(n_inst, bool)
        tmask[tgt] = True
        smask = torch.from_numpy(np.repeat(tmask, m))
        g_t = mean_grad(prob.model, prob.loss_fn, Xv[smask], Yv[smask])
        scores = eng.scores(cfg["method"], g_t)
        for sel_mode in cfg["selections"]:
            gen = torch_generator(root, prob.name, "random", s, scen, rank)
            idx = select_samples(scores, min(cfg["budget"], scores.shape[0]), sel_mode, gen)
            for upd in cfg["updates"]:
                key = dict(receiver=prob.name, seed=s, scenario=scen, target_rank=rank, selection=sel_mode, update=upd)

                def log(step: int, model: nn.Module) -> None:
                    b = instance_ber(prob.to_bits(model, Xv[smask]), bits[smask], m)
                    curves.append({**key, "step": step, "ber_targets": float(b.mean())})

                curves.append({**key, "step": 0, "ber_targets": float(ber0[tmask].mean())})
                lr = cfg["lr"] if upd == "first_order" else cfg["lr_second_order"]
                tuned = finetune_copy(prob.model, prob.loss_fn, prob.X_train[idx], prob.Y_train[idx], update=upd, steps=steps,
                                      lr=lr, inv_hessian=eng.inv_hessian, callback=log)
                ber1 = instance_ber(prob.to_bits(tuned, Xv), bits, m)
                bt0, bt1, gt = float(ber0[tmask].mean()), float(ber1[tmask].mean()), float(ber_g[tmask].mean())
                other = ~tmask
                bo0, bo1, go = float(ber0[other].mean()), float(ber1[other].mean()), float(ber_g[other].mean())
                runs.append({**key, "n_targets": int(tmask.sum()), "steps": steps, "budget": int(idx.numel()),
                             "mean_score": float(scores[idx].mean()),
                             "ber_targets_before": bt0, "ber_targets_after": bt1, "ber_targets_genie": gt,
                             "ber_others_before": bo0, "ber_others_after": bo1, "ber_others_genie": go,
                             "gap_reduction_targets": gap_reduction(bt0, bt1, gt),
                             "gap_reduction_others": gap_reduction(bo0, bo1, go)})


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def _gap_table(runs: pa.Table) -> pa.Table:
    """Mean ± std over seeds (single-target runs first averaged over their targets)."""
    if runs.num_rows == 0:
        return pa.table({})
    d = runs.to_pydict()
    groups: dict[tuple, dict[int, list[tuple[float, ...]]]] = {}
    for i in range(runs.num_rows):
        k = (d["receiver"][i], d["scenario"][i], d["update"][i], d["selection"][i])
        vals = (d["gap_reduction_targets"][i], d["gap_reduction_others"][i], d["ber_targets_before"][i], d["ber_targets_after"][i],
                d["ber_targets_genie"][i], d["ber_others_before"][i], d["ber_others_after"][i], d["ber_others_genie"][i])
        groups.setdefault(k, {}).setdefault(d["seed"][i], []).append(vals)
    names = ["gap_reduction_targets", "gap_reduction_others", "ber_targets_before", "ber_targets_after", "ber_targets_genie",
             "ber_others_before", "ber_others_after", "ber_others_genie"]
    rows = []
    for k, per_seed in sorted(groups.items()):
        seed_means = np.array([np.nanmean(np.array(v, dtype=float), axis=0) for v in per_seed.values()])
        row = dict(receiver=k[0], scenario=k[1], update=k[2], selection=k[3], n_seeds=len(per_seed))
        for j, nme in enumerate(names):
            col = seed_means[:, j]
            row[f"{nme}_mean"] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
            row[f"{nme}_std"] = float(np.nanstd(col)) if np.isfinite(col).any() else float("nan")
        rows.append(row)
    return pa.Table.from_pylist(rows)


# ----------------------------------------------------------------------------- report
def report(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Draw ``ber_over_steps_<receiver>.png`` (mean ± std over seeds) from ``curves.parquet``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    t = pq.read_table(out_dir / "curves.parquet")
    if t.num_rows == 0:
        return []
    d = t.to_pydict()
    paths = []
    for rx in sorted(set(d["receiver"])):
        scen_list = sorted(set(sc for sc, r in zip(d["scenario"], d["receiver"]) if r == rx))
        upds = sorted(set(u for u, r in zip(d["update"], d["receiver"]) if r == rx))
        fig, axes = plt.subplots(len(scen_list), len(upds), figsize=(5 * len(upds), 3.6 * len(scen_list)), squeeze=False)
        for i, sc in enumerate(scen_list):
            for j, up in enumerate(upds):
                ax = axes[i][j]
                for sel, style in (("beneficial", "-"), ("harmful", "--"), ("random", ":")):
                    per: dict[int, dict[int, list[float]]] = {}
                    for n in range(t.num_rows):
                        if (d["receiver"][n], d["scenario"][n], d["update"][n], d["selection"][n]) == (rx, sc, up, sel):
                            per.setdefault(d["step"][n], {}).setdefault(d["seed"][n], []).append(d["ber_targets"][n])
                    if not per:
                        continue
                    steps = sorted(per)
                    mat = np.array([[np.mean(v) for _, v in sorted(per[st].items())] for st in steps])
                    mu, sd = mat.mean(1), mat.std(1)
                    ax.plot(steps, mu, style, label=f"{sel}")
                    ax.fill_between(steps, mu - sd, mu + sd, alpha=0.2)
                ax.set_title(f"{rx}: {sc} target, {up.replace('_', '-')} update")
                ax.set_xlabel("fine-tuning step")
                ax.set_ylabel("target BER")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"ber_over_steps_{rx}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
