"""Study ``xrefine``: relevance-based input filtering and pruning of an OFDM channel estimator.

Gizzini & Medjahdi, "X-REFINE: XAI-based RElevance input-Filtering and archItecture
fiNe-tuning for channel Estimation". For each frequency selectivity (low / high, from
the channel source's delay spread and subcarrier spacing):

1. draw SISO-OFDM channels, simulate comb-pilot frames, train the FC estimator
   (``common.models.channel_estimator``) on interpolated LS -> true channel;
2. BER vs SNR (QPSK and 64-QAM, one-tap equalization) and NMSE of LS, LMMSE (with the
   training channels' frequency correlation), the DNN and perfect CSI;
3. LRP-epsilon relevance of subcarriers and hidden neurons (``common.xrefine``),
   subcarrier classes;
4. a grid over (input filtering threshold, neuron pruning threshold) for relevance,
   magnitude and random criteria at equal FLOPs, each pruned model retrained;
5. the cheapest model whose BER at the target SNR stays within ``target_ber_ratio`` of
   the full network's, per criterion: the FLOP reduction at the target BER (after
   retraining, and, as one-shot pruning, before it).

Tables (Parquet): ``baselines``, ``relevance``, ``grid``, ``summary``; ``summary.json``.
``report`` redraws the PNGs from the tables alone.

The full estimator of each selectivity and every grid point (a pruned, retrained model's
row) are units of work kept in ``out_dir/work`` (:mod:`studies.work_units`): run again
into the same directory (``airfleet run --resume``), the study trains only what it had
not finished.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from common.channels import ChannelTask, sample_channels
from common.models.channel_estimator import ChannelEstimator, fit_estimator, predict
from common.models.complexity import count_parameters
from common.phy.metrics import nmse_db
from common.phy.ofdm import (
    MODULATION_ORDERS,
    OfdmBatch,
    features_to_channel,
    frequency_correlation,
    lmmse_estimate,
    pilot_indices,
    simulate_ofdm,
)
from common.runtime import torch_threads
from common.schema import Field, ScenarioError
from common.seeding import derive_seed, torch_generator
from common.xrefine.budget import model_flops
from common.xrefine.relevance import SUBCARRIER_CLASSES, classify_units, relevance_profile
from common.xrefine.scores import METHODS, unit_scores
from common.xrefine.thresholds import cheapest_meeting, threshold_grid
from studies import ProgressFn
from studies.work_units import WorkUnits, load_model_arrays, model_arrays

__all__ = ["SCHEMA", "SELECTIVITIES", "check", "run", "report"]

#: the two channel conditions of the paper
SELECTIVITIES: tuple[str, ...] = ("low", "high")

SCHEMA: dict[str, Field] = {
    "source": Field(str, "gbsm", doc="channel source (SISO, wideband)"),
    "low_options": Field(dict, {"subcarrier_spacing_hz": 30e3, "delay_decay_ns": 100.0, "model": "legacy"}, doc="source options, low frequency selectivity"),
    "high_options": Field(dict, {"subcarrier_spacing_hz": 120e3, "delay_decay_ns": 200.0, "model": "legacy"}, doc="source options, high frequency selectivity"),
    "n_subcarriers": Field(int, 64, min=8, max=1024, doc="K subcarriers"),
    "pilot_spacing": Field(int, 4, min=1, max=64, doc="comb pilot spacing, subcarriers"),
    "n_data_symbols": Field(int, 2, min=1, max=64, doc="data OFDM symbols per frame"),
    "hidden": Field(list, [128, 128, 128], min=1, item=int, doc="widths of the 3 hidden layers"),
    "n_train": Field(int, 16000, min=64, doc="training frames per selectivity"),
    "n_test": Field(int, 2000, min=64, doc="test frames per selectivity and SNR"),
    "train_snr_db": Field(list, [0.0, 35.0], item=float, doc="training SNR range [lo, hi] dB (uniform per frame)"),
    "eval_snr_db": Field(list, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0], item=float, doc="SNRs of the BER curves, dB"),
    "modulations": Field(list, ["qpsk", "qam64"], item=str, doc="data modulations"),
    "target_snr_qpsk_db": Field(float, 15.0, doc="SNR where QPSK BER targets are checked, dB"),
    "target_snr_qam64_db": Field(float, 25.0, doc="SNR where 64-QAM BER targets are checked, dB"),
    "target_snr_qam16_db": Field(float, 20.0, doc="SNR where 16-QAM BER targets are checked, dB"),
    "target_ber_ratio": Field(float, 1.1, min=1.0, doc="target BER = ratio x the full network's BER"),
    "epochs": Field(int, 30, min=1, doc="training epochs of the full estimator"),
    "retrain_epochs": Field(int, 6, min=0, doc="retraining epochs after pruning"),
    "batch_size": Field(int, 128, min=1),
    "lr": Field(float, 1e-3, min=0.0),
    "retrain_lr": Field(float, 5e-4, min=0.0),
    "epsilon": Field(float, 1e-3, min=0.0, doc="LRP stabilizer"),
    "n_relevance": Field(int, 2000, min=1, doc="frames the relevance is aggregated over"),
    "input_drops": Field(list, [0.0, 0.25, 0.5, 0.625, 0.75], min=0.0, max=1.0, item=float, doc="input filtering thresholds (fraction of subcarriers dropped)"),
    "hidden_drops": Field(list, [0.0, 0.25, 0.5, 0.75], min=0.0, max=1.0, item=float, doc="neuron pruning thresholds (fraction of each hidden layer pruned)"),
    "methods": Field(list, list(METHODS), item=str, doc="pruning criteria compared"),
}


def _target_snr(cfg: dict[str, Any], mod: str) -> float:
    return float(cfg[f"target_snr_{mod}_db"])


def check(cfg: dict[str, Any]) -> None:
    """The study's own checks of a schema-valid ``[study]`` table (``ScenarioError``);
    ``studies.parse_study`` runs them at validation, before anything is created."""
    for m in cfg["modulations"]:
        if m not in MODULATION_ORDERS:
            raise ScenarioError("study.modulations", f"{m!r} is not one of {sorted(MODULATION_ORDERS)}")
    for m in cfg["methods"]:
        if m not in METHODS:
            raise ScenarioError("study.methods", f"{m!r} is not one of {list(METHODS)}")
    if len(cfg["train_snr_db"]) != 2 or cfg["train_snr_db"][0] > cfg["train_snr_db"][1]:
        raise ScenarioError("study.train_snr_db", f"expected [lo, hi] with lo <= hi, got {cfg['train_snr_db']}")
    if len(cfg["hidden"]) != 3:
        raise ScenarioError("study.hidden", f"expected 3 widths, got {cfg['hidden']}")


def _channels(cfg: dict[str, Any], seed: int, sel: str, split: str, n: int) -> torch.Tensor:
    task = ChannelTask.make(cfg["source"], 1, 1, 0, derive_seed(seed, "xrefine-task", sel), **cfg[f"{sel}_options"])
    return sample_channels(task, n, derive_seed(seed, "xrefine-channels", sel, split), n_subcarriers=cfg["n_subcarriers"])


def _frames(H: torch.Tensor, snr: float | torch.Tensor, pilots: torch.Tensor, mod: str, cfg: dict[str, Any], seed: int, *path: str | int) -> OfdmBatch:
    return simulate_ofdm(H, snr, pilots, mod, cfg["n_data_symbols"], generator=torch_generator(seed, "xrefine-frames", *path))


def _baseline_ber(rows: list[dict[str, Any]], sel: str, mod: str, estimator: str, snr_db: float) -> float:
    for r in rows:
        if (r["selectivity"], r["modulation"], r["estimator"], r["snr_db"]) == (sel, mod, estimator, snr_db):
            return float(r["ber"])
    return float("nan")


def run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    """Run the study on one torch thread; write tables under ``out_dir``; return the summary (JSON-able)."""
    check(cfg)
    with torch_threads(1):
        return _run(cfg, seed, out_dir, progress)


def _run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    """The study's body (``run``'s docstring), on the caller's torch threads."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    K = cfg["n_subcarriers"]
    pilots = pilot_indices(K, "comb", cfg["pilot_spacing"])
    pilot_set = set(pilots.tolist())
    base_rows: list[dict[str, Any]] = []
    rel_rows: list[dict[str, Any]] = []
    grid_rows: list[dict[str, Any]] = []
    sum_rows: list[dict[str, Any]] = []
    mods = list(cfg["modulations"])
    work = WorkUnits(out_dir)  # completed units of work: a resumed study skips them (issue #22)
    for si, sel in enumerate(SELECTIVITIES):
        progress(f"xrefine {sel}: data", si, len(SELECTIVITIES))
        H_tr = _channels(cfg, seed, sel, "train", cfg["n_train"])
        H_te = _channels(cfg, seed, sel, "test", cfg["n_test"])
        R = frequency_correlation(H_tr)
        lo, hi = cfg["train_snr_db"]
        g = torch_generator(seed, "xrefine-train-snr", sel)
        snr_tr = lo + (hi - lo) * torch.rand(cfg["n_train"], generator=g)
        train = _frames(H_tr, snr_tr, pilots, "qpsk", cfg, seed, sel, "train")
        x_tr, y_tr = train.features(), train.targets()

        torch.manual_seed(derive_seed(seed, "xrefine-init", sel))
        full = ChannelEstimator(K, cfg["hidden"])
        if (done := work.load(f"full-{sel}")) is not None:
            load_model_arrays(full, done[1])
        else:
            fit_estimator(full, x_tr, y_tr, cfg["epochs"], cfg["batch_size"], cfg["lr"], torch_generator(seed, "xrefine-fit", sel))
            work.save(f"full-{sel}", [], model_arrays(full))

        # ---- baselines: BER vs SNR and NMSE
        for mod in mods:
            for snr in cfg["eval_snr_db"]:
                b = _frames(H_te, float(snr), pilots, mod, cfg, seed, sel, "test", mod, float(snr))
                ests = {
                    "ls": b.h_ls,
                    "lmmse": lmmse_estimate(b.h_ls_pilots, pilots, R, b.noise_var),
                    "dnn": features_to_channel(predict(full, b.features())),
                    "perfect": b.h,
                }
                for name, h_hat in ests.items():
                    base_rows.append({
                        "selectivity": sel, "modulation": mod, "snr_db": float(snr), "estimator": name,
                        "ber": b.ber_with(h_hat), "nmse_db": nmse_db(h_hat, b.h, reduction="sum") if name != "perfect" else float("-inf"),
                    })

        # ---- relevance of subcarriers and neurons
        rel_x = x_tr[: cfg["n_relevance"]]
        prof = relevance_profile(full, rel_x, cfg["epsilon"])
        classes = classify_units(prof.inputs)
        for k in range(K):
            rel_rows.append({
                "selectivity": sel, "layer": "input", "unit": k, "relevance": float(prof.inputs[k]),
                "relevance_abs": float(prof.inputs_abs[k]), "class": classes[k], "is_pilot": k in pilot_set,
            })
        for li, (h, ha) in enumerate(zip(prof.hidden, prof.hidden_abs)):
            for j in range(h.numel()):
                rel_rows.append({
                    "selectivity": sel, "layer": f"hidden{li + 1}", "unit": j, "relevance": float(h[j]),
                    "relevance_abs": float(ha[j]), "class": "", "is_pilot": False,
                })

        # ---- threshold grid, three criteria at equal FLOPs
        evals = {mod: _frames(H_te, _target_snr(cfg, mod), pilots, mod, cfg, seed, sel, "target", mod) for mod in mods}

        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            out: dict[str, float] = {}
            for mod, b in evals.items():
                h_hat = features_to_channel(predict(model, b.features()))
                out[f"ber_{mod}"] = b.ber_with(h_hat)
                out[f"nmse_db_{mod}"] = nmse_db(h_hat, b.h, reduction="sum")
            return out

        def retrain(model: torch.nn.Module) -> None:
            fit_estimator(model, x_tr, y_tr, cfg["retrain_epochs"], cfg["batch_size"], cfg["retrain_lr"], torch_generator(seed, "xrefine-retrain", sel))

        scores = {m: unit_scores(full, m, rel_x, derive_seed(seed, "xrefine-random", sel), cfg["epsilon"]) for m in cfg["methods"]}
        base = si * len(cfg["methods"]) * len(cfg["input_drops"]) * len(cfg["hidden_drops"])
        total = len(SELECTIVITIES) * len(cfg["methods"]) * len(cfg["input_drops"]) * len(cfg["hidden_drops"])
        rows = threshold_grid(
            full, scores, cfg["input_drops"], cfg["hidden_drops"], retrain, evaluate,
            progress=lambda label, done, _t: progress(f"xrefine {sel}: grid", base + done, total),
            cell=lambda key, compute: work.rows(f"grid-{sel}-{key}", compute),
        )
        full_flops = model_flops(full)
        full_metrics = evaluate(full)
        for r in rows:
            r["selectivity"] = sel
            r["flop_reduction"] = 1.0 - r["flops"] / full_flops
        grid_rows.extend(rows)
        ls_ber = {m: _baseline_ber(base_rows, sel, m, "ls", _target_snr(cfg, m)) for m in mods}
        for mod in mods:
            target = cfg["target_ber_ratio"] * full_metrics[f"ber_{mod}"]
            for method in cfg["methods"]:
                best = cheapest_meeting(rows, f"ber_{mod}", target, method)
                best_pre = cheapest_meeting(rows, f"ber_{mod}_pre", target, method)
                sum_rows.append({
                    "selectivity": sel, "modulation": mod, "method": method, "target_snr_db": _target_snr(cfg, mod),
                    "full_ber": full_metrics[f"ber_{mod}"], "ls_ber": ls_ber[mod], "target_ber": target,
                    "full_flops": full_flops, "full_params": count_parameters(full),
                    "met": best is not None,
                    "flops": best["flops"] if best else full_flops,
                    "params": best["params"] if best else count_parameters(full),
                    "flop_reduction": (1.0 - best["flops"] / full_flops) if best else 0.0,
                    "input_drop": best["input_drop"] if best else float("nan"),
                    "hidden_drop": best["hidden_drop"] if best else float("nan"),
                    "ber": best[f"ber_{mod}"] if best else float("nan"),
                    "flop_reduction_no_retrain": (1.0 - best_pre["flops"] / full_flops) if best_pre else 0.0,
                })

    pq.write_table(pa.Table.from_pylist(base_rows), out_dir / "baselines.parquet")
    pq.write_table(pa.Table.from_pylist(rel_rows), out_dir / "relevance.parquet")
    pq.write_table(pa.Table.from_pylist(grid_rows), out_dir / "grid.parquet")
    pq.write_table(pa.Table.from_pylist(sum_rows), out_dir / "summary.parquet")
    summary = {
        "flop_reduction_at_target": {
            f"{r['selectivity']}/{r['modulation']}/{r['method']}": round(r["flop_reduction"], 4) for r in sum_rows
        },
        "flop_reduction_at_target_no_retrain": {
            f"{r['selectivity']}/{r['modulation']}/{r['method']}": round(r["flop_reduction_no_retrain"], 4) for r in sum_rows
        },
        "target_ber_ratio": cfg["target_ber_ratio"],
        "full_flops": sum_rows[0]["full_flops"] if sum_rows else None,
        "subcarrier_classes": {
            sel: {c: sum(1 for r in rel_rows if r["selectivity"] == sel and r["layer"] == "input" and r["class"] == c) for c in SUBCARRIER_CLASSES}
            for sel in SELECTIVITIES
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# ============================================================================ report


def report(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Redraw every PNG from the Parquet tables under ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    out_dir = pathlib.Path(out_dir)
    base = pq.read_table(out_dir / "baselines.parquet").to_pylist()
    grid = pq.read_table(out_dir / "grid.parquet").to_pylist()
    rel = pq.read_table(out_dir / "relevance.parquet").to_pylist()
    summ = pq.read_table(out_dir / "summary.parquet").to_pylist()
    sels = sorted({r["selectivity"] for r in base}, key=lambda s: SELECTIVITIES.index(s) if s in SELECTIVITIES else 9)
    mods = sorted({r["modulation"] for r in base})
    paths: list[pathlib.Path] = []
    styles = {"relevance": ("tab:blue", "o"), "magnitude": ("tab:orange", "s"), "random": ("tab:gray", "^")}

    # BER vs SNR of the baselines
    fig, axes = plt.subplots(len(sels), len(mods), figsize=(5 * len(mods), 3.8 * len(sels)), squeeze=False)
    for i, sel in enumerate(sels):
        for j, mod in enumerate(mods):
            ax = axes[i][j]
            for est in ("ls", "lmmse", "dnn", "perfect"):
                pts = sorted((r["snr_db"], r["ber"]) for r in base if r["selectivity"] == sel and r["modulation"] == mod and r["estimator"] == est)
                if pts:
                    ax.semilogy([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], marker=".", label=est)
            ax.set(title=f"{sel} selectivity, {mod}", xlabel="SNR [dB]", ylabel="BER")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "ber_vs_snr.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # BER vs FLOPs and vs parameters: the three criteria
    for xkey, suffix, fname in (("flops", "", "ber_vs_flops.png"), ("params", "", "ber_vs_params.png"),
                                ("flops", "_pre", "ber_vs_flops_no_retrain.png")):
        fig, axes = plt.subplots(len(sels), len(mods), figsize=(5 * len(mods), 3.8 * len(sels)), squeeze=False)
        for i, sel in enumerate(sels):
            for j, mod in enumerate(mods):
                ax = axes[i][j]
                key = f"ber_{mod}{suffix}"
                for method, (c, mk) in styles.items():
                    pts = [(r[xkey], r[key]) for r in grid if r["selectivity"] == sel and r["method"] == method and key in r]
                    if not pts:
                        continue
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=c, marker=mk, s=16, alpha=0.8, label=method)
                    front = _pareto(pts)
                    ax.plot([p[0] for p in front], [p[1] for p in front], color=c, lw=1)
                s = [r for r in summ if r["selectivity"] == sel and r["modulation"] == mod]
                if s:
                    ax.axhline(s[0]["target_ber"], color="k", ls="--", lw=0.8, label="target")
                    if not math.isnan(s[0]["ls_ber"]):
                        ax.axhline(s[0]["ls_ber"], color="tab:red", ls=":", lw=0.8, label="LS")
                ax.set_yscale("log")
                when = "before retraining" if suffix else "retrained"
                ax.set(title=f"{sel}, {mod} @ {s[0]['target_snr_db'] if s else '?'} dB, {when}", xlabel=xkey, ylabel="BER")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / fname)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # subcarrier relevance and classes
    fig, axes = plt.subplots(len(sels), 1, figsize=(9, 3 * len(sels)), squeeze=False)
    colors = {"reliable": "tab:green", "contributing": "tab:blue", "neutral": "tab:gray", "harmful": "tab:red"}
    for i, sel in enumerate(sels):
        ax = axes[i][0]
        pts = sorted((r["unit"], r["relevance"], r["class"], r["is_pilot"]) for r in rel if r["selectivity"] == sel and r["layer"] == "input")
        ax.bar([p[0] for p in pts], [p[1] for p in pts], color=[colors.get(p[2], "k") for p in pts],
               edgecolor=["k" if p[3] else "none" for p in pts])
        ax.set(title=f"subcarrier relevance ({sel} selectivity; outlined: pilots)", xlabel="subcarrier", ylabel="mean LRP-eps relevance")
        ax.legend(handles=[Patch(color=c, label=name) for name, c in colors.items()], fontsize=7, ncol=4)
    fig.tight_layout()
    paths.append(out_dir / "subcarrier_relevance.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _pareto(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower-left front of (cost, error) points, in increasing cost."""
    front: list[tuple[float, float]] = []
    best = np.inf
    for c, e in sorted(pts):
        if e < best:
            front.append((c, e))
            best = e
    return front
