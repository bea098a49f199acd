"""Fig. 10 over initialisation draws: is "bottom converges fastest" a property of the place
of the learngene, or of one draw? (issue #21, item 4)

Paper: Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene", 2025,
Sec. V-B, Fig. 10 (validation SER per epoch of the six expansion strategies of Fig. 5).

A learngene study (``studies.learngene_paper``) trains each strategy once per target task,
every strategy from the same random initialisation of the layers the unit does not fill and
the same shuffling, so its Fig. 10 ranking rests on one draw of those. :func:`train_draws`
takes a finished study run and trains, for draws ``r = 1 .. R-1`` (initialisation seeded by
``target-<j>-r<r>``, shuffling by ``(target, j, repeat, r)``), scratch and every distinct
strategy on each target task for ``E`` epochs, with the run's own data, collective model and
unit. Draw 0 is the run's own rows (its first ``E`` epochs: training has no schedule, so
they equal a shorter run's). Each training is a work unit in the run directory
(``RUN_DIR/work/positions-*.npz``), so a stopped experiment resumes;
``RUN_DIR/positions.parquet`` holds every epoch's row (``repeat, target, scheme, epoch,
val_ser``) and is rewritten after every whole block.

The speed of one training is Fig. 10's statistic, as on the reproduction page: its mean
validation SER over epochs ``1..E``. A *block* is one (run, draw, target): within it the
schemes share everything but the unit and its place. :func:`analyse` counts how often each
strategy is the fastest, runs the Friedman test of the strategies' speeds over the blocks
(``scipy.stats.friedmanchisquare``: does the place of the unit change the speed at all),
and gives the paired differences "learngene (the unit at the bottom) - mean of the other
strategies" and "learngene - scratch" per block with 95 % t intervals.

``benchmarks/learngene_positions.py`` is the command line; the reproduction page's Fig. 10
verdict reads a kept run's ``positions.parquet``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.learngene import STRATEGIES, expand
from common.learngene.collective import read_collective, task_detection_batch, unit_for_strategy
from common.learngene.training import evaluate_ser, finetune
from common.seeding import torch_generator
from studies.learngene_paper import _init_model, _resolve, _task, _twin
from studies.work_units import WorkUnits, model_arrays

__all__ = ["TABLE", "distinct_schemes", "train_draws", "speeds", "analyse", "load_rows"]

TABLE = "positions.parquet"


def distinct_schemes(selected: list[int], n_conv_collective: int) -> list[str]:
    """scratch, learngene and each strategy that is not the learngene scheme itself."""
    return ["scratch", "learngene", *[s for s in STRATEGIES if _twin(s, selected, n_conv_collective) is None]]


def _run_rows(run_dir: Path, epochs: int) -> list[dict[str, Any]]:
    """Draw 0: the run's own ``ser_epoch`` rows up to ``epochs`` (every scheme, twins included)."""
    rows = pq.read_table(run_dir / "ser_epoch.parquet").to_pylist()
    return [dict(r, repeat=0) for r in rows if r["epoch"] <= epochs]


def train_draws(run_dir: Path, repeats: int, epochs: int, log: Callable[[str], None] = print) -> None:
    """Train draws ``1..repeats-1`` of every distinct scheme on every target of the finished
    learngene study run in ``run_dir`` (module docstring); ``SystemExit`` with one line when
    the run lacks its collective model or this code does not rebuild its data."""
    missing = [n for n in ("scenario.resolved.json", "ser_epoch.parquet", "collective") if not (run_dir / n).exists()]
    if missing:
        raise SystemExit(f"{run_dir}: not a finished learngene_paper run (no {', '.join(missing)})")
    cfg = json.loads((run_dir / "scenario.resolved.json").read_text())
    if cfg.get("study", {}).get("kind", "learngene_paper") != "learngene_paper":
        raise SystemExit(f"{run_dir}: a {cfg['study']['kind']} run, not a learngene_paper one")
    c, seed = _resolve(cfg["study"]), int(cfg["seed"])
    cols = sorted((run_dir / "collective").glob("collective-*"))
    cols = [d for d in cols if d.is_dir() and not d.name.endswith(".tasks")]
    if len(cols) != 1:
        raise SystemExit(f"{run_dir}: expected one finished collective model in collective/, found {len(cols)}")
    col = read_collective(cols[0])
    units = {s: unit_for_strategy(col, s) for s in STRATEGIES}
    K, T = c["collective_tasks"], c["target_tasks"]
    schemes = distinct_schemes(col.selected_layers, c["n_conv_collective"])
    work = WorkUnits(run_dir)
    own = _run_rows(run_dir, epochs)
    rows: list[dict[str, Any]] = [r for r in own if r["scheme"] in schemes]
    total, done, t0 = (repeats - 1) * T * len(schemes), 0, time.time()
    data = {j: tuple(task_detection_batch(_task(c, K + j, seed), n, c["snr_db"], c["n_pilots"], seed, purpose)
                     for n, purpose in ((c["individual_samples"], "target-train"), (c["val_samples"], "target-val"))) for j in range(T)}
    for r in range(1, repeats):
        for j in range(T):
            trn, val = data[j]
            if r == 1 and j == 0:  # the run's data, init and unit are what this script rebuilds
                m0 = _init_model(c, seed, f"target-{j}")
                expand(col.unit, m0, "bottom-inherit")
                v0 = float(evaluate_ser(m0, val))
                ref = next(x["val_ser"] for x in own if x["target"] == K and x["scheme"] == "learngene" and x["epoch"] == 0)
                if not math.isclose(v0, ref, rel_tol=0, abs_tol=1e-12):
                    raise SystemExit(f"{run_dir}: rebuilt learngene start has val SER {v0}, the run recorded {ref}: not the run's data or unit")
            for scheme in schemes:
                key = f"positions-e{epochs}-{j}-r{r}-{scheme}"
                if (hit := work.load(key)) is None:
                    model = _init_model(c, seed, f"target-{j}-r{r}")
                    anchors = None
                    if scheme == "learngene":
                        anchors = expand(col.unit, model, "bottom-inherit")
                    elif scheme != "scratch":
                        anchors = expand(units[scheme], model, scheme)
                    v0 = float(evaluate_ser(model, val))
                    res = finetune(model, trn, epochs=epochs, batch_size=c["batch_size"], lr=c["lr"], anchors=anchors, lam=c["lam"],
                                   generator=torch_generator(seed, "shuffle", "target", j, "repeat", r), val=val)
                    new = [{"target": K + j, "scheme": scheme, "epoch": e, "val_ser": float(v), "repeat": r} for e, v in enumerate([v0, *res.val_ser_per_epoch])]
                    work.save(key, new, model_arrays(model))
                else:
                    new = hit[0]
                rows += new
                done += 1
                log(f"{run_dir.name}: {done}/{total} {key} speed {np.mean([x['val_ser'] for x in new[1:]]):.4f} ({time.time() - t0:.0f} s)")
            _write_table(run_dir, rows)  # after every block: a stopped experiment leaves whole blocks
    if repeats < 2:  # no block trained: the table is the run's own draw
        _write_table(run_dir, rows)


def _write_table(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    keep = ("repeat", "target", "scheme", "epoch", "val_ser")
    tmp = run_dir / (TABLE + ".tmp")
    pq.write_table(pa.Table.from_pylist([{k: x[k] for k in keep} for x in rows]), tmp)
    tmp.replace(run_dir / TABLE)


def speeds(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, float]]:
    """Per block ``(run, repeat, target)``: each scheme's mean validation SER over epochs
    ``1..E`` (Fig. 10's statistic). Rows carry a ``run`` key; epoch 0 is the untrained start."""
    acc: dict[tuple[Any, ...], dict[str, list[float]]] = {}
    for x in rows:
        if x["epoch"] >= 1:
            acc.setdefault((x["run"], x["repeat"], x["target"]), {}).setdefault(x["scheme"], []).append(float(x["val_ser"]))
    return {b: {s: float(np.mean(v)) for s, v in per.items()} for b, per in acc.items()}


def _t_interval(d: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    m = float(np.mean(d))
    if len(d) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d)))
    return m, m - h, m + h


def analyse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fig. 10's ranking over initialisation draws (module docstring); rows carry ``run``.

    Returns the number of whole ``blocks`` (a block missing a scheme is dropped), the
    distinct ``strategies``, how often each is the ``fastest``, the Friedman statistic and
    p-value over the strategies, ``bottom_fastest`` (blocks whose fastest strategy puts
    the unit at the bottom: learngene, and ``bottom-inherit`` when it is not learngene) and
    ``bottom_fastest_p`` (one-sided binomial test of "more often than their share of the
    strategies", the null of no position effect), ``learngene_minus_others`` (learngene's speed minus the mean of the
    other strategies' in its block) and ``learngene_minus_scratch`` as (mean, lo, hi) 95 %
    t intervals, the ``draw_sd`` (spread of one scheme's speed over draws of the same run
    and target, root mean square) against the ``place_sd`` (spread of the strategies'
    speeds within a block, root mean square), and on how many (run, target) pairs the
    fastest strategy changes with the draw.
    """
    from scipy import stats

    sp = speeds(rows)
    strategies = sorted({s for per in sp.values() for s in per} - {"scratch"})
    whole = {b: per for b, per in sp.items() if all(s in per for s in [*strategies, "scratch"])}
    blocks = list(whole.values())
    fastest = {s: 0 for s in strategies}
    for per in blocks:
        fastest[min(strategies, key=per.get)] += 1
    k = len(strategies)
    friedman = stats.friedmanchisquare(*[[per[s] for per in blocks] for s in strategies]) if len(blocks) >= 2 and k >= 3 else None
    bottom = [s for s in strategies if s == "learngene" or s.startswith("bottom-")]  # the unit at the bottom
    n_bottom = sum(fastest[s] for s in bottom)
    bottom_p = stats.binomtest(n_bottom, len(blocks), len(bottom) / k, alternative="greater").pvalue if blocks and bottom else float("nan")
    others = [s for s in strategies if s != "learngene"]
    vs_others = [per["learngene"] - float(np.mean([per[s] for s in others])) for per in blocks]
    vs_scratch = [per["learngene"] - per["scratch"] for per in blocks]
    by_pair: dict[tuple[Any, Any], list[dict[str, float]]] = {}
    for (run, _, target), per in whole.items():
        by_pair.setdefault((run, target), []).append(per)
    draw_var = [np.var([per[s] for per in draws], ddof=1) for draws in by_pair.values() if len(draws) > 1 for s in strategies]
    place_var = [np.var([per[s] for s in strategies], ddof=1) for per in blocks] if k > 1 else []
    return {
        "blocks": len(blocks),
        "strategies": strategies,
        "fastest": fastest,
        "friedman_stat": float(friedman.statistic) if friedman else float("nan"),
        "friedman_p": float(friedman.pvalue) if friedman else float("nan"),
        "bottom_fastest": n_bottom,
        "bottom_fastest_p": float(bottom_p),
        "learngene_minus_others": _t_interval(vs_others),
        "learngene_minus_scratch": _t_interval(vs_scratch),
        "mean_speed": {s: float(np.mean([per[s] for per in blocks])) for s in [*strategies, "scratch"]},
        "draw_sd": float(math.sqrt(np.mean(draw_var))) if draw_var else float("nan"),
        "place_sd": float(math.sqrt(np.mean(place_var))) if place_var else float("nan"),
        "fastest_changes_with_draw": sum(len({min(strategies, key=per.get) for per in draws}) > 1 for draws in by_pair.values()),
        "run_targets": len(by_pair),
    }


def load_rows(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Every run's ``positions.parquet`` rows, each tagged with ``run`` (the directory name)."""
    rows = []
    for d in run_dirs:
        rows += [dict(x, run=d.name) for x in pq.read_table(d / TABLE).to_pylist()]
    return rows
