"""Does more training move a Table I task? (issue #21, items 1 and 2).

Continues tasks of a finished ``sdnet_table1`` run from their last checkpoint (weights,
Adam state, shuffling and redraw generators; ``studies.sdnet_table1.train_task``) for
``--epochs`` more epochs at a learning rate and batch size of your choice, with the run's
own ``train_draws``, and prints the held-out SER every 5 epochs: on the run's own 1,000
test samples and on ``--fresh`` further held-out samples of the same task (their binomial
standard error is printed, so a change can be told from noise). The run is read, never
written. Typical use: the learning-rate tail a schedule would add after Table III's 200
constant-rate epochs (``--lr 1e-4``), or more steps per epoch (``--batch 100``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sdnet_table1_tail.py \\
        docs/evidence/sdnet_table1/sdnet_table1_redraw200-seed2 --run-dir runs/sdnet_table1_redraw200-seed2 \\
        --tasks 183 206 --lr 1e-4 --epochs 30

``run_dir`` holds the run's tables; ``--run-dir`` (default: the same) its ``work/``
checkpoints, which the evidence copies under ``docs/evidence`` do not keep. One
single-thread process per task, ``--jobs`` at once; about 50 s per 5 epochs of one task
at the paper's size on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.learngene.training import evaluate_ser, finetune  # noqa: E402
from common.phy.metrics import baseline_sers  # noqa: E402
from common.runtime import torch_threads  # noqa: E402
from studies.sdnet_table1 import _batch, task_training_state  # noqa: E402
from studies.work_units import WorkUnits  # noqa: E402

CHUNK = 5  # epochs between held-out evaluations


def continue_task(args: tuple[dict[str, Any], int, str, int, float, int, int, int]) -> dict[str, Any]:
    """Train task ``tid``'s checkpointed SDNet ``epochs`` more epochs; its held-out SERs.

    Returns ``{"task_id", "start_epoch", "mmse_fresh", "rows": [{"extra", "ser", "ser_fresh"}]}``
    (``extra = 0``: the checkpoint as saved; ``mmse_fresh``: MMSE's SER on the fresh samples).
    """
    cfg, seed, work_dir, tid, lr, batch, epochs, fresh = args
    unit = WorkUnits(work_dir).load(f"task{tid}-partial")
    if unit is None:
        raise SystemExit(f"sdnet_table1_tail: {work_dir}/work has no checkpoint of task {tid} (task{tid}-partial)")
    head, arrays = unit
    with torch_threads(1):
        train = _batch(cfg, tid, seed, "table1-train", cfg["train_samples"])
        test = _batch(cfg, tid, seed, "table1-test", cfg["test_samples"])
        test_fresh = _batch(cfg, tid, seed, "table1-tail-fresh", fresh)
        mmse_fresh = baseline_sers(test_fresh)["ser_mmse"]
        model, opt, gen, redraw = task_training_state(cfg, seed, tid, arrays)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = [{"extra": 0, "ser": evaluate_ser(model, test), "ser_fresh": evaluate_ser(model, test_fresh)}]
        for extra in range(CHUNK, epochs + 1, CHUNK):
            finetune(model, train, epochs=CHUNK, batch_size=batch, lr=lr, generator=gen, optimizer=opt, redraw=redraw)
            rows.append({"extra": extra, "ser": evaluate_ser(model, test), "ser_fresh": evaluate_ser(model, test_fresh)})
    return {"task_id": tid, "start_epoch": head["history"][-1]["epoch"], "mmse_fresh": mmse_fresh, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", default=None, help="a sdnet_table1 run (scenario.resolved.json, ser_epoch.parquet)")
    ap.add_argument("--run-dir", dest="work_dir", type=Path, default=None, help="where its work/ checkpoints are (default: run_dir)")
    ap.add_argument("--tasks", type=int, nargs="+", default=None, help="default: the run's tasks")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the extra epochs (Table III: 1e-3)")
    ap.add_argument("--batch", type=int, default=500, help="mini-batch of the extra epochs (Table III: 500)")
    ap.add_argument("--epochs", type=int, default=30, help="extra epochs, a multiple of 5")
    ap.add_argument("--fresh", type=int, default=3000, help="further held-out samples of each task")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    if a.run_dir is None:  # what `make bench` runs: this one trains for minutes, on a run you name
        print("sdnet_table1_tail: name a finished sdnet_table1 run whose work/ checkpoints you kept, e.g. "
              "benchmarks/sdnet_table1_tail.py runs/sdnet_table1-seed1 --lr 1e-4 --epochs 30 (minutes a task)")
        return
    if a.epochs <= 0 or a.epochs % CHUNK:
        raise SystemExit(f"sdnet_table1_tail: --epochs must be a positive multiple of {CHUNK}, got {a.epochs}")
    for f in ("scenario.resolved.json", "ser_epoch.parquet"):
        if not (a.run_dir / f).is_file():
            raise SystemExit(f"sdnet_table1_tail: {a.run_dir} has no {f}: not a finished sdnet_table1 run")
    resolved = json.loads((a.run_dir / "scenario.resolved.json").read_text())
    if resolved.get("study", {}).get("kind") != "sdnet_table1":
        raise SystemExit(f"sdnet_table1_tail: {a.run_dir} is not a sdnet_table1 run (study kind {resolved.get('study', {}).get('kind')!r})")
    cfg, seed = resolved["study"], int(resolved["seed"])
    mmse = {r["task_id"]: r["ser_mmse"] for r in pq.read_table(a.run_dir / "ser_epoch.parquet").to_pylist()}
    a.tasks = a.tasks or sorted(mmse)
    missing = [t for t in a.tasks if t not in mmse]
    if missing:
        raise SystemExit(f"sdnet_table1_tail: tasks {missing} are not in {a.run_dir} (its tasks: {sorted(mmse)})")
    jobs = [(cfg, seed, str(a.work_dir or a.run_dir), t, a.lr, a.batch, a.epochs, a.fresh) for t in a.tasks]
    print(f"# {a.run_dir.name} (seed {seed}, train_draws {cfg['train_draws']}): {a.epochs} more epochs at lr {a.lr:g}, batch {a.batch}")
    with ProcessPoolExecutor(max_workers=max(1, min(a.jobs, len(jobs))), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(continue_task, jobs))
    symbols_fresh = a.fresh * cfg["n_t"]
    print(f"| task | epoch | SER (run's {cfg['test_samples']:,}) | / MMSE | SER ({a.fresh:,} fresh) | +- 1 s.e. | / MMSE there |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        m, mf = mmse[res["task_id"]], res["mmse_fresh"]
        for r in res["rows"]:
            se = math.sqrt(r["ser_fresh"] * (1 - r["ser_fresh"]) / symbols_fresh)
            print(f"| {res['task_id']} | {res['start_epoch']}+{r['extra']} | {r['ser']:.4f} | {r['ser'] / m:.2f} | {r['ser_fresh']:.4f} | {se:.4f} | {r['ser_fresh'] / mf:.2f} |")


if __name__ == "__main__":
    main()
