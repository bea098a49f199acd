"""Table I of the learngene paper at the paper's per-task recipe (issue #21, item 2).

Zhang et al. 2025, Table I: an SDNet trained on one channel task is far below ZF and MMSE
on that task's held-out samples, and above them on another task's (the mismatched rows).
Table III's per-task budget: MSE loss (eq. 13), Adam 1e-3, batch 500, 8,100 training
samples, 25 dB, 16 pilots, 32x8 QPSK, 50 epochs.

Each listed task is one unit of work: an individual SDNet trained from scratch on it,
checkpointed every ``chunk_epochs`` (weights, Adam state, shuffling generator) under
``RUN_DIR/work`` (``studies.work_units``), so ``airfleet run --resume RUN_DIR`` continues a
stopped task at its last chunk and gives the same numbers as an uninterrupted run. A run
can be extended the same way: raise ``epochs`` in ``RUN_DIR/scenario.toml`` and resume
(``RESUME_MAY_CHANGE``); every task goes on from its last checkpoint. Tasks run as
``jobs`` parallel single-thread processes.

Which tasks (``select_tasks``): the ``tasks`` listed, or else the rule of the paper's
Table I range: the first ``n_tasks`` task ids from ``first_task_id`` on whose ZF SER on
their held-out samples lies in ``zf_range`` (Table I's 0.065-0.126), at the run's seed
(the seed draws each task's environment, so every seed has its own tasks). With
``task_kind = "learner"`` the rule also asks that the task be of the kind SDNet learns at
this recipe (``docs/sdnet_fidelity.md``, Experiment 11): the fitted H-blind detector
(``common.phy.metrics.hblind_fit_indices``, no ``H`` of any sample), fitted and measured on
the task's own training samples, at most ``learner_bound`` x their MMSE SER. SDNet at this
recipe reads ``x_ZF`` alone and ends at or above that detector's bound, so a task above
the line cannot show Table I's factor. This test reads the training samples only.
Every model is also tested on the other tasks (Table I's mismatched rows).

``train_draws = "per-epoch"`` leaves the paper's recipe in one named way: every epoch trains
on fresh symbols, pilots and noise over the same ``train_samples`` channels
(``common.learngene.training.Redraw``), which stops SDNet from memorising its samples on
the learner tasks (``docs/sdnet_fidelity.md``, "Redrawn noise"). The redraw generator is
checkpointed with the rest, so a resumed task gives the numbers of an uninterrupted one.

Tables: ``screen.parquet`` (the tasks the rule looked at), ``table1.parquet`` (train task
x test task: SDNet, ZF and MMSE SER on the test task's held-out samples),
``ser_epoch.parquet`` (held-out SER after every chunk). ``summary.json``'s ``per_task`` adds
``ser_train``, SDNet's SER on the very samples it was trained on: with ``ser`` (held out)
it tells a model that memorised its samples from one that did not fit them. With
``train_draws = "per-epoch"`` the model never trains on that first draw of symbols and
noise, only on its channels, so ``ser_train`` then measures what it memorised of the
channels alone.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pathlib
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from common.channels import ChannelTask
from common.channels.gbsm import model_of
from common.learngene.collective import task_detection_batch
from common.learngene.training import TRAIN_DRAWS, Redraw, evaluate_ser, finetune
from common.models.sdnet import SDNet
from common.phy.detection import ML_MAX_CANDIDATES
from common.phy.metrics import baseline_sers, ser_ratio
from common.progress import ProgressFn
from common.runtime import torch_threads
from common.schema import Field
from common.seeding import derive_seed, torch_generator
from studies.reproduction import LEARNER_BOUND
from studies.work_units import WorkUnits, load_model_arrays, model_arrays

__all__ = ["SCHEMA", "RESUME_MAY_CHANGE", "check", "run", "report", "train_task"]

SCHEMA: dict[str, Field] = {
    "scale": Field(str, "paper-per-task", doc="the name the reproduction page gives this budget"),
    "source": Field(str, "gbsm", doc="channel source of every task"),
    "source_options": Field(dict, {}, doc="source options shared by every task"),
    "n_r": Field(int, 32, min=1, doc="BS antennas (paper 32)"),
    "n_t": Field(int, 8, min=1, doc="UE antennas (paper 8)"),
    "n_conv": Field(int, 8, min=1, doc="SDNet depth N_conv (the paper's individual model: 8)"),
    "snr_db": Field(float, 25.0, doc="training and test SNR per receive antenna, dB"),
    "n_pilots": Field(int, 16, min=1, doc="orthogonal pilots of the LS estimate"),
    "tasks": Field(list, [], item=int, min=0, doc="task ids, each trained on and tested on (Table I's rows); [] = the ZF-range rule below"),
    "n_tasks": Field(int, 5, min=1, max=100, doc="tasks the rule picks (paper: 5)"),
    "first_task_id": Field(int, 100, min=0, doc="the rule looks at task ids from here on (the fleet's collective uses 0..49)"),
    "zf_range": Field(list, [0.065, 0.126], item=float, doc="ZF SER range of the rule's tasks on their held-out samples (Table I's)"),
    "task_kind": Field(str, "any", choices=("any", "learner"), doc="'learner': the rule keeps only tasks whose fitted H-blind detector is at most learner_bound x MMSE on their training samples (the kind SDNet learns)"),
    "learner_bound": Field(float, LEARNER_BOUND, min=0.0, max=1.0, doc="the learner rule's line: fitted H-blind SER over MMSE SER (docs/sdnet_fidelity.md, Experiment 11)"),
    "max_screened": Field(int, 400, min=1, doc="task ids the rule may look at before it gives up"),
    "train_samples": Field(int, 8100, min=1, doc="training samples per task (paper 8,100)"),
    "test_samples": Field(int, 1000, min=1, doc="held-out samples per task"),
    "epochs": Field(int, 50, min=1, doc="epochs per task (paper: 50 per collective task)"),
    "batch_size": Field(int, 500, min=1, doc="mini-batch (paper 500)"),
    "train_draws": Field(str, "fixed", choices=TRAIN_DRAWS, doc="'fixed': the train_samples samples drawn once (the paper's); 'per-epoch': fresh symbols, pilots and noise every epoch over the same train_samples channels (common.learngene.training.Redraw; not the paper's)"),
    "lr": Field(float, 1e-3, min=0.0, doc="Adam learning rate (paper 1e-3)"),
    "chunk_epochs": Field(int, 5, min=1, doc="held-out SER recorded and the task checkpointed every this many epochs"),
    "jobs": Field(int, 2, min=1, max=256, doc="tasks trained at once, each a single-thread process (1: in this process)"),
}

#: keys that ``airfleet run --resume RUN_DIR`` accepts changed in ``RUN_DIR/scenario.toml``
#: (``cli.main.run_study``): ``epochs`` may grow (each task goes on from its last checkpoint,
#: the same computation as one longer run); ``jobs`` and ``scale`` do not touch the numbers
RESUME_MAY_CHANGE: dict[str, str] = {"epochs": "grow", "jobs": "any", "scale": "any"}


#: the keys ``select_tasks`` reads (with the seed): the key of its unit of work
RULE_KEYS = ("source", "source_options", "n_r", "n_t", "snr_db", "n_pilots", "tasks", "n_tasks", "first_task_id", "zf_range",
             "task_kind", "learner_bound", "max_screened", "train_samples", "test_samples")


def check(cfg: dict[str, Any]) -> None:
    """The study's own checks beyond types and ranges."""
    lo_hi = cfg["zf_range"]
    if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0:
        raise ValueError(f"study.zf_range: expected [low, high] with 0 <= low < high <= 1, got {lo_hi}")
    if len(set(cfg["tasks"])) != len(cfg["tasks"]):
        raise ValueError(f"study.tasks: task ids must be distinct, got {cfg['tasks']}")
    if cfg["task_kind"] == "learner" and 4 ** cfg["n_t"] > ML_MAX_CANDIDATES:
        raise ValueError(f"study.task_kind: 'learner' needs the exact H-blind search, n_t <= 8, got n_t = {cfg['n_t']}")


def _task(cfg: dict[str, Any], task_id: int, seed: int) -> ChannelTask:
    return ChannelTask.make(cfg["source"], cfg["n_r"], cfg["n_t"], task_id, seed, **dict(cfg["source_options"]))


def _batch(cfg: dict[str, Any], task_id: int, seed: int, purpose: str, n: int) -> Any:
    return task_detection_batch(_task(cfg, task_id, seed), n, cfg["snr_db"], cfg["n_pilots"], seed, purpose)


def select_tasks(cfg: dict[str, Any], seed: int) -> tuple[list[int], list[dict[str, Any]]]:
    """Table I's tasks at ``seed`` and the rows of the tasks the rule looked at.

    Returns the listed ``tasks`` when there are any, else the first ``n_tasks`` ids from
    ``first_task_id`` whose ZF SER on their ``test_samples`` held-out samples is in
    ``zf_range`` and, with ``task_kind = "learner"``, whose fitted H-blind SER on their
    ``train_samples`` training samples is at most ``learner_bound`` x MMSE's there (rows
    then add ``ser_mmse_train``, ``ser_hblind_fit_train`` and ``fit_over_mmse``).

    Raises
    ------
    ValueError
        Fewer than ``n_tasks`` found among ``max_screened`` ids.
    """
    if cfg["tasks"]:
        return [int(t) for t in cfg["tasks"]], []
    lo, hi = cfg["zf_range"]
    learner = cfg["task_kind"] == "learner"
    picked: list[int] = []
    rows: list[dict[str, Any]] = []
    with torch_threads(1):
        for tid in range(cfg["first_task_id"], cfg["first_task_id"] + cfg["max_screened"]):
            b = baseline_sers(_batch(cfg, tid, seed, "table1-test", cfg["test_samples"]))
            ok = lo <= b["ser_zf"] <= hi
            row = {"task_id": tid, "ser_zf": b["ser_zf"], "ser_mmse": b["ser_mmse"]}
            if learner:
                row |= {"ser_mmse_train": float("nan"), "ser_hblind_fit_train": float("nan"), "fit_over_mmse": float("nan")}
                if ok:
                    train = _batch(cfg, tid, seed, "table1-train", cfg["train_samples"])
                    t = baseline_sers(train, fit_from=train)
                    q = ser_ratio(t["ser_hblind_fit"], t["ser_mmse"], train.symbols.numel())
                    row |= {"ser_mmse_train": t["ser_mmse"], "ser_hblind_fit_train": t["ser_hblind_fit"], "fit_over_mmse": q}
                    ok = q <= cfg["learner_bound"]
            rows.append(row | {"picked": ok})
            picked += [tid] if ok else []
            if len(picked) == cfg["n_tasks"]:
                return picked, rows
    kind = f" and a fitted H-blind SER at most {cfg['learner_bound']} x MMSE" if learner else ""
    raise ValueError(f"study.zf_range: only {len(picked)} of {cfg['n_tasks']} task ids in {cfg['first_task_id']}.."
                     f"{cfg['first_task_id'] + cfg['max_screened'] - 1} have a ZF SER in [{lo}, {hi}]{kind}")


# ------------------------------------------------------------------ checkpointed training
def _adam_arrays(opt: torch.optim.Adam, model: SDNet) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(model.parameters()):
        st = opt.state.get(p)
        if st:
            for k in ("step", "exp_avg", "exp_avg_sq"):
                out[f"adam.{i}.{k}"] = torch.as_tensor(st[k]).detach().cpu().numpy()
    return out


def _load_adam(opt: torch.optim.Adam, model: SDNet, arrays: dict[str, np.ndarray]) -> None:
    for i, p in enumerate(model.parameters()):
        if f"adam.{i}.step" in arrays:
            opt.state[p] = {
                "step": torch.tensor(float(np.asarray(arrays[f"adam.{i}.step"]).reshape(-1)[0])),  # npz keeps 0-d arrays as 1-d
                "exp_avg": torch.from_numpy(np.array(arrays[f"adam.{i}.exp_avg"])),
                "exp_avg_sq": torch.from_numpy(np.array(arrays[f"adam.{i}.exp_avg_sq"])),
            }


def task_training_state(cfg: dict[str, Any], seed: int, task_id: int, checkpoint: dict[str, np.ndarray] | None = None) -> tuple[SDNet, torch.optim.Adam, torch.Generator, Redraw | None]:
    """Task ``task_id``'s SDNet, its Adam (at ``cfg["lr"]``), its shuffling generator and its
    ``Redraw`` (None for fixed draws): fresh from the seed, or as a chunk's ``checkpoint``
    arrays (``train_task``'s ``{key}-partial`` unit) left them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "table1-init", task_id))
        model = SDNet(cfg["n_r"], cfg["n_t"], cfg["n_conv"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch_generator(seed, "table1-shuffle", task_id)
    redraw = Redraw.per(cfg["train_draws"], cfg["n_pilots"], torch_generator(seed, "table1-redraw", task_id))
    if checkpoint is not None:
        load_model_arrays(model, {k[6:]: v for k, v in checkpoint.items() if k.startswith("model.")})
        _load_adam(opt, model, checkpoint)
        gen.set_state(torch.from_numpy(np.array(checkpoint["gen"])))
        if redraw is not None:
            redraw.generator.set_state(torch.from_numpy(np.array(checkpoint["redraw_gen"])))
    return model, opt, gen, redraw


def train_task(cfg: dict[str, Any], seed: int, task_id: int, run_dir: str) -> dict[str, Any]:
    """Train one task's SDNet (a unit of work), resuming from its last saved chunk.

    Returns ``{"task_id", "history": [{"epoch", "ser"}], "seconds", "state": {name: array}}``;
    ``ser`` is the held-out SER after ``epoch`` epochs (epoch 0: the initial weights).
    """
    work = WorkUnits(run_dir)
    key = f"task{task_id}"
    if (done := work.load(key)) is not None and done[0]["history"][-1]["epoch"] >= cfg["epochs"]:
        head, arrays = done
        return {**head, "state": arrays, "from_work": True}
    # not done, or done at fewer epochs than asked (a resumed run whose epochs grew): go on
    # from the last chunk's checkpoint, which the completed unit leaves in place
    with torch_threads(1):
        train = _batch(cfg, task_id, seed, "table1-train", cfg["train_samples"])
        test = _batch(cfg, task_id, seed, "table1-test", cfg["test_samples"])
        fresh: tuple[dict[str, Any], None] = ({"task_id": task_id, "history": [], "seconds": 0.0}, None)
        head, checkpoint = work.load(f"{key}-partial") or fresh
        model, opt, gen, redraw = task_training_state(cfg, seed, task_id, checkpoint)
        if checkpoint is None:
            head["history"].append({"epoch": 0, "ser": evaluate_ser(model, test)})
        while (ep := head["history"][-1]["epoch"]) < cfg["epochs"]:
            n = min(cfg["chunk_epochs"], cfg["epochs"] - ep)
            r = finetune(model, train, epochs=n, batch_size=cfg["batch_size"], lr=cfg["lr"], generator=gen, optimizer=opt, redraw=redraw)
            head["seconds"] += r.seconds
            head["history"].append({"epoch": ep + n, "ser": evaluate_ser(model, test)})
            state = {f"model.{k}": v for k, v in model_arrays(model).items()}
            arrays = {**state, **_adam_arrays(opt, model), "gen": gen.get_state().numpy()}
            if redraw is not None:
                arrays["redraw_gen"] = redraw.generator.get_state().numpy()
            work.save(f"{key}-partial", head, arrays)
        state = model_arrays(model)
    work.save(key, head, state)
    return {**head, "state": state, "from_work": False}


def _train_task_job(args: tuple[dict[str, Any], int, int, str]) -> dict[str, Any]:
    return train_task(*args)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate ``pool``'s worker processes and drop its queued jobs (Python 3.11's executor
    has no public way to stop a running worker: 3.14 adds ``terminate_workers``). Not
    ``multiprocessing.Pool``, whose ``terminate`` is public: a worker of a Pool that dies
    (killed for memory) leaves ``imap`` waiting for ever, where the executor raises
    ``BrokenProcessPool``."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.join(timeout=10)


# ----------------------------------------------------------------------------------- run
def run(cfg: dict[str, Any], seed: int, out_dir: pathlib.Path, progress: ProgressFn) -> dict[str, Any]:
    """Train every task (``jobs`` at once), test each model on every task; see the module docstring."""
    check(cfg)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress("table1 task rule", 0, 1)
    # a unit of work too, keyed by what the rule reads: a resumed run does not screen again
    # (about a minute at the paper's size)
    rule = json.dumps([seed, *(cfg[k] for k in RULE_KEYS)], sort_keys=True)
    key = "screen-" + hashlib.blake2b(rule.encode(), digest_size=8).hexdigest()
    tasks, screened = WorkUnits(out_dir).rows(key, lambda: select_tasks(cfg, seed))
    if screened:
        pq.write_table(pa.Table.from_pylist(screened), out_dir / "screen.parquet")
    progress("table1 tasks", 0, len(tasks))
    results: dict[int, dict[str, Any]] = {}
    jobs = [(cfg, seed, t, str(out_dir)) for t in tasks]
    if cfg["jobs"] == 1 or len(tasks) == 1:
        for j in jobs:
            results[j[2]] = _train_task_job(j)
            progress("table1 tasks", len(results), len(tasks))
    else:
        # spawn: a fresh interpreter per worker (no forked torch / Ray state), one thread each
        pool = ProcessPoolExecutor(max_workers=min(cfg["jobs"], len(tasks)), mp_context=multiprocessing.get_context("spawn"))
        try:
            for res in pool.map(_train_task_job, jobs):
                results[res["task_id"]] = res
                progress("table1 tasks", len(results), len(tasks))
        except BaseException:
            # stopped (Ctrl-C, SIGTERM) or failed: stop the workers now, not after their task
            # (a worker left training would race a resumed run for the same checkpoint)
            _stop_workers(pool)
            raise
        pool.shutdown()

    rows: list[dict[str, Any]] = []
    per_task: list[dict[str, Any]] = []
    with torch_threads(1):
        tests = {t: _batch(cfg, t, seed, "table1-test", cfg["test_samples"]) for t in tasks}
        trains = {t: _batch(cfg, t, seed, "table1-train", cfg["train_samples"]) for t in tasks}
        # the fitted H-blind detector beside ZF and MMSE: fitted on the task's training samples
        base = {t: baseline_sers(b, fit_from=trains[t]) for t, b in tests.items()}
        for i in tasks:
            model = SDNet(cfg["n_r"], cfg["n_t"], cfg["n_conv"])
            load_model_arrays(model, results[i]["state"])
            ser_train = evaluate_ser(model, trains[i])  # on the samples it was trained on: the generalisation gap
            for j in tasks:
                s = evaluate_ser(model, tests[j])
                rows.append({"train_task": i, "test_task": j, "matched": i == j, "ser": s, "ser_zf": base[j]["ser_zf"], "ser_mmse": base[j]["ser_mmse"]})
            m = next(r for r in rows if r["train_task"] == i and r["matched"])
            per_task.append({"task_id": i, "epochs": results[i]["history"][-1]["epoch"], "ser_zf": m["ser_zf"], "ser_mmse": m["ser_mmse"], "ser": m["ser"], "ser_train": ser_train,
                             "ser_hblind_fit": base[i].get("ser_hblind_fit", float("nan")),
                             "ratio_mmse": m["ser"] / m["ser_mmse"] if m["ser_mmse"] > 0 else float("nan"), "train_s": results[i]["seconds"]})
    pq.write_table(pa.Table.from_pylist(rows), out_dir / "table1.parquet")
    epoch_rows = [{"task_id": t, "epoch": h["epoch"], "ser": h["ser"], "ser_mmse": base[t]["ser_mmse"], "ser_zf": base[t]["ser_zf"]} for t in tasks for h in results[t]["history"]]
    pq.write_table(pa.Table.from_pylist(epoch_rows), out_dir / "ser_epoch.parquet")
    matched = [r["ser"] for r in rows if r["matched"]]
    mismatched = [r["ser"] for r in rows if not r["matched"]]
    ratios = [p["ratio_mmse"] for p in per_task]
    return {
        "scale": cfg["scale"],
        "config": {k: cfg[k] for k in ("source", "n_r", "n_t", "n_conv", "snr_db", "n_pilots", "train_samples", "test_samples", "epochs", "batch_size", "lr", "task_kind", "learner_bound", "train_draws")},
        "channel_model": model_of(_task(cfg, tasks[0], seed)) if cfg["source"] == "gbsm" else cfg["source"],
        "tasks": tasks,
        "per_task": per_task,
        "tasks_below_half_mmse": sum(q <= 0.5 for q in ratios),
        "tasks_below_fifth_mmse": sum(q <= 0.2 for q in ratios),
        "tasks_below_zf_and_mmse": sum(p["ser"] < min(p["ser_zf"], p["ser_mmse"]) for p in per_task),
        "table1_matched_mean": float(np.mean(matched)),
        "table1_mismatched_mean": float(np.mean(mismatched)) if mismatched else float("nan"),
        "tasks_from_work": sum(bool(results[t]["from_work"]) for t in tasks),
    }


# -------------------------------------------------------------------------------- report
def report(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Held-out SER against epochs per task, with its ZF and MMSE levels (``ser_epoch.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    rows = pq.read_table(out_dir / "ser_epoch.parquet").to_pylist()
    tasks = sorted({r["task_id"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for k, t in enumerate(tasks):
        mine = [r for r in rows if r["task_id"] == t]
        color = f"C{k % 10}"
        ax.semilogy([r["epoch"] for r in mine], [max(r["ser"], 1e-5) for r in mine], "-o", color=color, ms=3, label=f"task {t} SDNet")
        ax.axhline(mine[0]["ser_mmse"], color=color, ls="--", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out SER (dashed: MMSE)")
    ax.set_title("Table I at the paper's per-task recipe")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "ser_epoch.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return [p]
