"""Study ``learngene_paper``: Sec. V of Zhang et al. 2025 (SDNet with learngene), reduced.

1. Collective model (``common.learngene.collective``): ``collective_tasks`` sequential tasks,
   gradient significance per task and layer (eq. 19-20), the learngene unit.
2. Held-out target tasks (task ids after the collective ones). Per target task, trained
   on ``individual_samples`` at ``snr_db`` for ``individual_epochs`` epochs:
   train-from-scratch; transfer learning (an individual-size SDNet pre-trained on one
   randomly chosen collective task, then fine-tuned); learngene with each of the six
   expansion strategies (``X-embed``: the selected unit placed at segment X of the
   individual model; ``X-inherit``: segment X of the collective model placed at the
   bottom; one definition with the fleet, ``common.learngene.expansion`` and
   ``collective.unit_for_strategy``), plus ``learngene`` = the unit the selection rule
   chose, at the bottom. All schemes of one target share the random
   initialisation of the layers they do not inherit. L2 to the inherited weights with
   ``lam`` (eq. 21).
3. SER per epoch on a validation set, SER on a test set at 20..30 dB (step 2.5) with
   ZF / MMSE / genie-LMMSE baselines, Table I (SDNet trained on one target task, tested
   on every target task), Table IV (layers, parameters, FLOPs, transferred ratio) at the
   paper's (32, 8) and at the run's antenna configuration, and the antenna-scaling
   experiment (unit learnt at ``n_t`` serving ``n_t / 2`` through the upsampling adaptor).

Tables (Parquet): ``significance``, ``collective_history``, ``ser_epoch``, ``ser_snr``,
``ser_table``, ``table1``, ``complexity``, ``scaling``; ``report`` draws the PNGs and
``complexity.md`` from them alone.

``scale = "paper"`` replaces the sizes with Table III (50 + 5 tasks, 8,100 training
samples, 50 epochs per collective task, 200 individual epochs, batch 500, 32 x 8,
lambda 2e-15): a GPU job (``device = "cuda"``), not a laptop one. ``scale =
"paper-per-task"`` keeps Table III's per-task recipe (32 x 8, 8,100 samples, batch 500, 50
epochs per collective task) with fewer tasks and individual epochs (PER_TASK_SCALE: 3
collective tasks, 2 target tasks (Table I's mismatched rows need two), 20 individual
epochs, Table I from the 8-deep scratch models): every model trains at the paper's batch
and samples, the study is smaller, sized so that three seeds run side by side on two CPU
cores in under two hours (issue #21). The collective is checkpointed per task and every
trained model is a unit of work, so a stopped study resumes where it stopped
(``airfleet run --resume RUN_DIR``).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from common.learngene.training import evaluate_ser, finetune, predict_indices
from common.channels import ChannelTask
from common.channels.gbsm import model_of
from common.learngene import STRATEGIES, LearngeneUnit, expand, individual_sdnet, segment_layer_ids, unit_source_layers
from common.models.complexity import count_flops, count_parameters
from common.models.sdnet import SDNet
from common.phy.dataset import DetectionBatch
from common.phy.detection import hard_qpsk, lmmse_genie, mmse, zf
from common.phy.metrics import binomial_ci, ser_with_ci
from common.runtime import DEVICE_CHOICES, resolve_device
from common.schema import Field
from common.seeding import derive_seed, numpy_rng, torch_generator
from common.learngene.collective import CollectiveConfig, load_or_train_collective, task_detection_batch, unit_for_strategy
from studies.work_units import WorkUnits, load_model_arrays, model_arrays
from studies import ProgressFn

__all__ = ["SCHEMA", "PAPER_SCALE", "PER_TASK_SCALE", "run", "report"]

SCHEMA: dict[str, Field] = {
    "scale": Field(str, "reduced", choices=("reduced", "paper-per-task", "paper"), doc="'paper' applies Table III sizes (PAPER_SCALE) over the keys below; 'paper-per-task' Table III's per-task recipe with fewer tasks (PER_TASK_SCALE)"),
    "source": Field(str, "gbsm", doc="channel source of every task (gbsm built-in; umi = Sionna 38.901 UMi, slow, cached)"),
    "source_options": Field(dict, {}, doc="source options shared by every task"),
    "n_r": Field(int, 16, min=1, doc="BS antennas"),
    "n_t": Field(int, 4, min=1, doc="UE antennas"),
    "snr_db": Field(float, 25.0, doc="training SNR per receive antenna, dB"),
    "n_pilots": Field(int, 16, min=1, doc="orthogonal pilots N_p"),
    "collective_tasks": Field(int, 10, min=1, doc="sequential tasks of the collective model (paper 50)"),
    "target_tasks": Field(int, 3, min=1, doc="held-out target tasks (paper 5)"),
    "n_conv_collective": Field(int, 12, min=1, doc="collective depth (paper 12)"),
    "n_conv_individual": Field(int, 8, min=1, doc="individual depth (paper 8)"),
    "unit_layers": Field(int, 4, min=1, doc="layers in the learngene unit"),
    "table1_n_conv": Field(int, 12, min=1, doc="depth of the Table I models (paper 12); equal to n_conv_individual reuses the scratch models"),
    "collective_samples": Field(int, 1000, min=1, doc="training samples per collective task (paper 8,100)"),
    "collective_epochs": Field(int, 3, min=1, doc="epochs per collective task (paper 50)"),
    "individual_samples": Field(int, 1000, min=1, doc="training samples of a target task (paper 8,100)"),
    "individual_epochs": Field(int, 12, min=1, doc="epochs on a target task (paper 200); also the transfer pre-training epochs"),
    "val_samples": Field(int, 1000, min=1, doc="validation samples per target task (SER per epoch)"),
    "test_samples": Field(int, 2000, min=1, doc="test samples per target task and SNR"),
    "batch_size": Field(int, 50, min=1, doc="mini-batch (paper 500)"),
    "lr": Field(float, 1e-3, min=0.0, doc="Adam learning rate"),
    "lam": Field(float, 2e-15, min=0.0, doc="lambda of eq. (21) (paper 2e-15)"),
    "epsilon": Field(float, 1e-4, min=0.0, doc="gradient-significance threshold tau of eq. (20)"),
    "eval_snr_db": Field(list, [20.0, 22.5, 25.0, 27.5, 30.0], item=float, doc="SER-vs-SNR grid"),
    "scaling": Field(bool, True, doc="antenna-scaling experiment (n_t/2 through the upsampling adaptor) on the first target"),
    "device": Field(str, "cpu", choices=DEVICE_CHOICES, doc="torch device for training: cpu, cuda, or auto (CUDA when present)"),
    "cache_dir": Field(str, "", doc="collective-model cache directory shared between runs ('' = the run directory's collective/)"),
}

#: Table III sizes applied by ``scale = "paper"``
PAPER_SCALE: dict[str, Any] = {
    "n_r": 32,
    "n_t": 8,
    "collective_tasks": 50,
    "target_tasks": 5,
    "collective_samples": 8100,
    "collective_epochs": 50,
    "individual_samples": 8100,
    "individual_epochs": 200,
    "val_samples": 900,
    "test_samples": 1000,
    "batch_size": 500,
    "lam": 2e-15,
    "epsilon": 1e-4,
}

#: Table III's per-task recipe, fewer tasks and individual epochs: ``scale = "paper-per-task"``
#: (per seed about 50 epoch-trainings of 8,100 samples at depth 12 and 16 x 20 at depth 8)
PER_TASK_SCALE: dict[str, Any] = {
    **PAPER_SCALE,
    "collective_tasks": 3,
    "target_tasks": 2,
    "individual_epochs": 20,
    "table1_n_conv": 8,
}

BASELINES = ("zf", "mmse", "lmmse_genie")


def _resolve(cfg: dict[str, Any]) -> dict[str, Any]:
    c = {k: (f.default if k not in cfg else cfg[k]) for k, f in SCHEMA.items()}
    if c["scale"] == "paper":
        c.update(PAPER_SCALE)
    elif c["scale"] == "paper-per-task":
        c.update(PER_TASK_SCALE)
    if c["unit_layers"] > min(c["n_conv_collective"], c["n_conv_individual"]):
        raise ValueError("unit_layers must not exceed either depth")
    return c


def _task(c: dict[str, Any], task_id: int, seed: int, n_t: int | None = None) -> ChannelTask:
    return ChannelTask.make(c["source"], c["n_r"], n_t or c["n_t"], task_id, seed, **dict(c["source_options"]))


def _init_model(c: dict[str, Any], seed: int, key: str, build: Callable[[], SDNet] | None = None, n_t: int | None = None) -> SDNet:
    """A model whose random weights derive from ``(seed, "init", key)``: ``build()`` (or a
    plain individual SDNet) is called inside the seeded block, so every scheme that passes
    the same ``key`` starts from the same weights (Fig. 13: scratch and learngene)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", key))
        return build() if build is not None else SDNet(c["n_r"], n_t or c["n_t"], c["n_conv_individual"])


def _baseline_indices(b: DetectionBatch) -> dict[str, torch.Tensor]:
    return {
        "zf": hard_qpsk(zf(b.y, b.H_ls)),
        "mmse": hard_qpsk(mmse(b.y, b.H_ls, b.noise_var)),
        "lmmse_genie": hard_qpsk(lmmse_genie(b.y, b.H, b.noise_var)),
    }


def _write(out_dir: pathlib.Path, name: str, rows: list[dict[str, Any]] | pa.Table) -> None:
    t = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    pq.write_table(t, out_dir / f"{name}.parquet")


def _complexity_rows(n_r: int, n_t: int, n_conv_col: int, n_conv_ind: int, m: int, config: str) -> list[dict[str, Any]]:
    shape = (1, 1, 2 * n_r + 1, 2 * n_t)
    ind = SDNet(n_r, n_t, n_conv_ind)
    col = SDNet(n_r, n_t, n_conv_col)
    p_ind, f_ind = count_parameters(ind), count_flops(ind, shape)
    unit_model = torch.nn.Sequential(*[col.convs[i] for i in segment_layer_ids(n_conv_col, m, "bottom")])
    p_unit = count_parameters(unit_model)
    f_unit = count_flops(unit_model, (1, 8, 2 * n_r + 1, 2 * n_t))
    ind_layers = f"{n_conv_ind + 2} Conv+BN, 1 FC"
    return [
        {"config": config, "scheme": "train-from-scratch", "model": "target", "layers": ind_layers, "params": p_ind, "flops": f_ind, "transferred_params": 0, "transferred_ratio": 0.0},
        {"config": config, "scheme": "transfer learning", "model": "target", "layers": ind_layers, "params": p_ind, "flops": f_ind, "transferred_params": p_ind, "transferred_ratio": 1.0},
        {"config": config, "scheme": "learngene", "model": "collective", "layers": f"{n_conv_col + 2} Conv+BN, 1 FC", "params": count_parameters(col), "flops": count_flops(col, shape), "transferred_params": p_unit, "transferred_ratio": p_unit / p_ind},
        {"config": config, "scheme": "learngene", "model": "learngene unit", "layers": f"{m} Conv", "params": p_unit, "flops": f_unit, "transferred_params": p_unit, "transferred_ratio": p_unit / p_ind},
        {"config": config, "scheme": "learngene", "model": "individual", "layers": ind_layers, "params": p_ind, "flops": f_ind, "transferred_params": p_unit, "transferred_ratio": p_unit / p_ind},
    ]


def _twin(scheme: str, selected: list[int], n_conv_col: int) -> str | None:
    """An earlier scheme that is the same computation: a strategy whose unit is the selected
    one placed at the bottom is the learngene scheme (``bottom-embed`` always, ``X-inherit``
    when the rule selected segment ``X``; ``common.learngene.expansion``)."""
    if scheme not in STRATEGIES:
        return None
    seg, mode = scheme.split("-")
    at_bottom = mode == "inherit" or seg == "bottom"
    if at_bottom and unit_source_layers(scheme, selected, n_conv_col) == list(selected):
        return "learngene"
    return None


def run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    """Run the study; see the module docstring. Returns a JSON-able summary."""
    c = _resolve(cfg)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(c["device"])
    K, T = c["collective_tasks"], c["target_tasks"]
    bs, lr, E = c["batch_size"], c["lr"], c["individual_epochs"]

    # 1. collective model and its significance table
    ccfg = CollectiveConfig(
        tasks=tuple(_task(c, k, seed) for k in range(K)),
        n_conv=c["n_conv_collective"],
        samples_per_task=c["collective_samples"],
        epochs_per_task=c["collective_epochs"],
        batch_size=bs,
        lr=lr,
        snr_db=c["snr_db"],
        epsilon=c["epsilon"],
        unit_layers=c["unit_layers"],
        n_pilots=c["n_pilots"],
        seed=seed,
    )
    # without a shared cache the collective is kept in the run directory, checkpointed per
    # task: a resumed study (--resume) picks it up where it stopped
    cache = pathlib.Path(c["cache_dir"]).expanduser() if c["cache_dir"] else out_dir / "collective"
    col = load_or_train_collective(ccfg, cache, progress=progress, device=dev)
    _write(out_dir, "significance", col.significance)
    _write(out_dir, "collective_history", col.history)
    col.unit.save(out_dir / "learngene_unit.bin")
    M = c["unit_layers"]
    strategy_units: dict[str, LearngeneUnit] = {s: unit_for_strategy(col, s) for s in STRATEGIES}  # one definition with the fleet

    # transfer-learning source: one random collective task, an individual-size model
    src_k = int(numpy_rng(seed, "transfer-source").integers(K))
    src_train = task_detection_batch(ccfg.tasks[src_k], c["individual_samples"], c["snr_db"], c["n_pilots"], seed, "transfer-pretrain")
    work = WorkUnits(out_dir)  # completed units of work: a resumed study skips them (issue #22)
    pre = _init_model(c, seed, "transfer-pretrain").to(dev)
    if (done := work.load("transfer-pretrain")) is not None:
        load_model_arrays(pre, done[1])
    else:
        finetune(pre, src_train, epochs=E, batch_size=bs, lr=lr, generator=torch_generator(seed, "shuffle", "pretrain"))
        work.save("transfer-pretrain", [], model_arrays(pre))
    pre_state = {k: v.detach().clone() for k, v in pre.state_dict().items()}

    schemes = ["scratch", "transfer", "learngene", *STRATEGIES]
    epoch_rows: list[dict[str, Any]] = []
    snr_rows: list[dict[str, Any]] = []
    models: dict[tuple[int, str], SDNet] = {}
    tests: dict[int, dict[float, DetectionBatch]] = {}
    steps_total = T * len(schemes) + (1 if c["scaling"] else 0)
    step = 0
    for j in range(T):
        tid = K + j
        task = _task(c, tid, seed)
        train = task_detection_batch(task, c["individual_samples"], c["snr_db"], c["n_pilots"], seed, "target-train")
        val = task_detection_batch(task, c["val_samples"], c["snr_db"], c["n_pilots"], seed, "target-val")
        tests[j] = {s: task_detection_batch(task, c["test_samples"], float(s), c["n_pilots"], seed, f"target-test-{s}") for s in c["eval_snr_db"]}
        for scheme in schemes:
            twin = _twin(scheme, col.selected_layers, c["n_conv_collective"])
            if twin is not None and (j, twin) in models:
                # identical by construction (same init, same tensors in the same layers, same
                # data and shuffling): reuse instead of retraining
                models[(j, scheme)] = models[(j, twin)]
                epoch_rows += [dict(r, scheme=scheme) for r in epoch_rows if r["target"] == tid and r["scheme"] == twin]
                snr_rows += [dict(r, scheme=scheme) for r in snr_rows if r["target"] == tid and r["scheme"] == twin]
                step += 1
                progress("targets", step, steps_total)
                continue
            model = _init_model(c, seed, f"target-{j}")
            if (done := work.load(f"target-{j}-{scheme}")) is not None:
                load_model_arrays(model, done[1])
                model.to(dev)
                epoch_rows += done[0]["epoch"]
                snr_rows += done[0]["snr"]
                models[(j, scheme)] = model
                step += 1
                progress("targets", step, steps_total)
                continue
            n_epoch, n_snr = len(epoch_rows), len(snr_rows)
            anchors = None
            if scheme == "transfer":
                model.load_state_dict(pre_state)
            elif scheme == "learngene":
                anchors = expand(col.unit, model, "bottom-inherit")
            elif scheme in STRATEGIES:
                anchors = expand(strategy_units[scheme], model, scheme)
            model.to(dev)
            v0 = evaluate_ser(model, val)
            res = finetune(model, train, epochs=E, batch_size=bs, lr=lr, anchors=anchors, lam=c["lam"],
                           generator=torch_generator(seed, "shuffle", "target", j), val=val)
            for e, (loss, v) in enumerate(zip([float("nan"), *res.loss_per_epoch], [v0, *res.val_ser_per_epoch])):
                epoch_rows.append({"target": tid, "scheme": scheme, "epoch": e, "loss": loss, "val_ser": v})
            models[(j, scheme)] = model
            for s, tb in tests[j].items():
                p, lo, hi = ser_with_ci(predict_indices(model, tb), tb.symbols)
                snr_rows.append({"target": tid, "scheme": scheme, "snr_db": float(s), "ser": p, "ser_lo": lo, "ser_hi": hi, "symbols": int(tb.symbols.numel())})
            work.save(f"target-{j}-{scheme}", {"epoch": epoch_rows[n_epoch:], "snr": snr_rows[n_snr:]}, model_arrays(model))
            step += 1
            progress("targets", step, steps_total)
        for s, tb in tests[j].items():
            for name, idx in _baseline_indices(tb).items():
                p, lo, hi = ser_with_ci(idx, tb.symbols)
                snr_rows.append({"target": tid, "scheme": name, "snr_db": float(s), "ser": p, "ser_lo": lo, "ser_hi": hi, "symbols": int(tb.symbols.numel())})
    _write(out_dir, "ser_epoch", epoch_rows)
    _write(out_dir, "ser_snr", snr_rows)

    # SER table at the training SNR, averaged over target tasks (symbols pooled)
    table_rows = []
    for scheme in [*BASELINES, *schemes]:
        rows = [r for r in snr_rows if r["scheme"] == scheme and r["snr_db"] == float(c["snr_db"])]
        if not rows:
            continue
        n = sum(r["symbols"] for r in rows)
        err = sum(round(r["ser"] * r["symbols"]) for r in rows)
        lo, hi = binomial_ci(err, n)
        table_rows.append({"scheme": scheme, "snr_db": float(c["snr_db"]), "ser": err / n, "ser_lo": lo, "ser_hi": hi, "symbols": n, "targets": len(rows)})
    _write(out_dir, "ser_table", table_rows)

    # Table I: scratch model trained on target i, tested on target j
    s0 = float(c["snr_db"]) if float(c["snr_db"]) in tests[0] else next(iter(tests[0]))
    n1 = c["table1_n_conv"]
    t1_models: dict[int, SDNet] = {}
    for i in range(T):
        if n1 == c["n_conv_individual"]:
            t1_models[i] = models[(i, "scratch")]
            continue
        train = task_detection_batch(_task(c, K + i, seed), c["individual_samples"], c["snr_db"], c["n_pilots"], seed, "target-train")
        m1 = _init_model(c, seed, f"table1-{i}", build=lambda: SDNet(c["n_r"], c["n_t"], n1)).to(dev)
        if (done := work.load(f"table1-{i}")) is not None:
            load_model_arrays(m1, done[1])
        else:
            finetune(m1, train, epochs=E, batch_size=bs, lr=lr, generator=torch_generator(seed, "shuffle", "table1", i))
            work.save(f"table1-{i}", [], model_arrays(m1))
        t1_models[i] = m1
    t1 = []
    for i in range(T):
        for j in range(T):
            tb = tests[j][s0]
            t1.append({"train_target": K + i, "test_target": K + j, "matched": i == j, "n_conv": n1, "ser": float(evaluate_ser(t1_models[i], tb))})
    _write(out_dir, "table1", t1)

    # Table IV at the paper's configuration and at this run's
    comp = _complexity_rows(32, 8, 12, 8, 4, "paper (32x8)")
    comp += _complexity_rows(c["n_r"], c["n_t"], c["n_conv_collective"], c["n_conv_individual"], M, f"run ({c['n_r']}x{c['n_t']})")
    _write(out_dir, "complexity", comp)

    # antenna scaling: the unit learnt at n_t serves n_t/2 via the upsampling adaptor
    scale_rows: list[dict[str, Any]] = []
    if c["scaling"] and c["n_t"] % 2 == 0:
        n_t2 = c["n_t"] // 2
        task = _task(c, K, seed, n_t=n_t2)
        train = task_detection_batch(task, c["individual_samples"], c["snr_db"], c["n_pilots"], seed, "scaling-train")
        val = task_detection_batch(task, c["val_samples"], c["snr_db"], c["n_pilots"], seed, "scaling-val")
        for scheme in ("scratch", "learngene"):
            model = _init_model(c, seed, "scaling", build=lambda: individual_sdnet(col.unit, c["n_r"], n_t2, c["n_conv_individual"]))
            if (done := work.load(f"scaling-{scheme}")) is not None:
                scale_rows += done[0]
                continue
            anchors = expand(col.unit, model, "bottom-inherit") if scheme == "learngene" else None
            model.to(dev)
            v0 = evaluate_ser(model, val)
            res = finetune(model, train, epochs=E, batch_size=bs, lr=lr, anchors=anchors, lam=c["lam"],
                           generator=torch_generator(seed, "shuffle", "scaling"), val=val)
            rows = [{"n_t": n_t2, "n_r": c["n_r"], "col_upsample": model.col_upsample, "scheme": scheme, "epoch": e, "val_ser": v} for e, v in enumerate([v0, *res.val_ser_per_epoch])]
            work.save(f"scaling-{scheme}", rows, {})
            scale_rows += rows
        progress("targets", steps_total, steps_total)
    _write(out_dir, "scaling", scale_rows)

    ser_at = {r["scheme"]: r["ser"] for r in table_rows}
    strat = {s: ser_at[s] for s in STRATEGIES}
    summary = {
        "scale": c["scale"],
        "config": {k: c[k] for k in ("source", "n_r", "n_t", "snr_db", "collective_tasks", "target_tasks", "collective_samples", "collective_epochs", "individual_samples", "individual_epochs", "batch_size")},
        "channel_model": model_of(ccfg.tasks[0]) if c["source"] == "gbsm" else c["source"],
        "selected_layers": col.selected_layers,
        "unit_params": col.unit.n_params,
        "transfer_source_task": src_k,
        "ser_at_train_snr": ser_at,
        "best_strategy": min(strat, key=strat.get),
        "bottom_inherit_beats_other_five": all(strat["bottom-inherit"] < v for k, v in strat.items() if k not in ("bottom-inherit", "bottom-embed")),
        "table1_matched_mean": float(np.mean([r["ser"] for r in t1 if r["matched"]])),
        "table1_mismatched_mean": float(np.mean([r["ser"] for r in t1 if not r["matched"]])) if T > 1 else float("nan"),
    }
    (out_dir / "learngene_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# --------------------------------------------------------------------------------- report
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Redraw every figure and ``complexity.md`` from the Parquet tables in ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    plt = _plt()
    paths: list[pathlib.Path] = []

    sig = pq.read_table(out_dir / "significance.parquet").to_pylist()
    tasks = sorted({r["task"] for r in sig})
    layers = sorted({r["layer"] for r in sig})
    names = {r["layer"]: r["layer_name"] for r in sig}
    grid = np.full((len(layers), len(tasks)), np.nan)
    for r in sig:
        grid[layers.index(r["layer"]), tasks.index(r["task"])] = r["significance"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(layers)), [names[l] for l in layers])
    ax.set_xlabel("task (sequential order)")
    ax.set_ylabel("layer")
    ax.set_title("Gradient significance, eq. (20)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    p = out_dir / "significance_heatmap.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    ep = pq.read_table(out_dir / "ser_epoch.parquet").to_pylist()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, group in zip(axes, (("scratch", "transfer", "learngene"), ("scratch", *STRATEGIES))):
        for scheme in group:
            rows = [r for r in ep if r["scheme"] == scheme]
            es = sorted({r["epoch"] for r in rows})
            ax.semilogy(es, [max(np.mean([r["val_ser"] for r in rows if r["epoch"] == e]), 1e-6) for e in es], marker=".", label=scheme)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation SER (mean over targets)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("Schemes (Fig. 11)")
    axes[1].set_title("Expansion strategies (Fig. 10)")
    fig.tight_layout()
    p = out_dir / "ser_vs_epoch.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    sn = pq.read_table(out_dir / "ser_snr.parquet").to_pylist()
    fig, ax = plt.subplots(figsize=(6.4, 4.5))
    for scheme in ("zf", "mmse", "lmmse_genie", "scratch", "transfer", "learngene"):
        rows = [r for r in sn if r["scheme"] == scheme]
        ss = sorted({r["snr_db"] for r in rows})
        ys = []
        for s in ss:
            rs = [r for r in rows if r["snr_db"] == s]
            ys.append(max(sum(r["ser"] * r["symbols"] for r in rs) / sum(r["symbols"] for r in rs), 1e-6))
        ax.semilogy(ss, ys, marker="o", label=scheme)
    ax.set_xlabel("SNR per receive antenna (dB)")
    ax.set_ylabel("test SER")
    ax.set_title("SER vs SNR (Fig. 12)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "ser_vs_snr.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    sc = pq.read_table(out_dir / "scaling.parquet").to_pylist() if (out_dir / "scaling.parquet").exists() else []
    if sc:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for scheme in ("scratch", "learngene"):
            rows = sorted((r for r in sc if r["scheme"] == scheme), key=lambda r: r["epoch"])
            ax.semilogy([r["epoch"] for r in rows], [max(r["val_ser"], 1e-6) for r in rows], marker=".", label=scheme)
        ax.set_title(f"n_t = {sc[0]['n_t']} through the upsampling adaptor (Fig. 13)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation SER")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        p = out_dir / "scaling.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)

    comp = pq.read_table(out_dir / "complexity.parquet").to_pylist()
    lines = ["| config | scheme | model | layers | trainable parameters | FLOPs (Conv + FC) | transferred ratio |", "|---|---|---|---|---|---|---|"]
    for r in comp:
        lines.append(f"| {r['config']} | {r['scheme']} | {r['model']} | {r['layers']} | {r['params']:,} | {r['flops']:,} | {100 * r['transferred_ratio']:.1f}% |")
    tab = pq.read_table(out_dir / "ser_table.parquet").to_pylist()
    lines += ["", "| scheme | SER | 95% CI | symbols |", "|---|---|---|---|"]
    for r in tab:
        lines.append(f"| {r['scheme']} | {r['ser']:.3e} | [{r['ser_lo']:.2e}, {r['ser_hi']:.2e}] | {r['symbols']} |")
    t1 = pq.read_table(out_dir / "table1.parquet").to_pylist()
    depth = t1[0].get("n_conv", "?") if t1 else "?"
    lines += ["", f"Table I (SDNet, N_conv = {depth}, trained on row task, tested on column task):", ""]
    tt = sorted({r["test_target"] for r in t1})
    lines.append("| train \\ test | " + " | ".join(str(t) for t in tt) + " |")
    lines.append("|---" * (len(tt) + 1) + "|")
    for a in sorted({r["train_target"] for r in t1}):
        vals = {r["test_target"]: r["ser"] for r in t1 if r["train_target"] == a}
        lines.append(f"| {a} | " + " | ".join(f"{vals[t]:.3e}" for t in tt) + " |")
    p = out_dir / "complexity.md"
    p.write_text("\n".join(lines) + "\n")
    paths.append(p)
    return paths
