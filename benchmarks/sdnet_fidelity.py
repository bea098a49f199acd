"""Why does SDNet stop at ZF's SER? Seeded experiments behind ``docs/sdnet_fidelity.md``.

Each experiment trains (or only evaluates) on one channel task of the learngene paper's
setting (Table II/III: 32x8, QPSK, 25 dB, 16 pilots, depth 8, Adam 1e-3) at a reduced
sample/epoch budget stated in its row, and reports on held-out samples of the same task:
SDNet (eval mode), the same SDNet on its training samples, ZF / MMSE (eq. 9 / 11 with
``H_LS``), genie LMMSE (true ``H``) and exact ML (eq. 6, with ``H_LS`` and with the true
``H``) on the first ``n_ml`` test samples.

    .venv/bin/python benchmarks/sdnet_fidelity.py run EXPERIMENT   # writes docs/sdnet_fidelity/EXPERIMENT.json
    .venv/bin/python benchmarks/sdnet_fidelity.py render           # writes docs/sdnet_fidelity/tables.md
    .venv/bin/python benchmarks/sdnet_fidelity.py list

Every figure in ``docs/sdnet_fidelity/tables.md`` comes from these JSON files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from common.channels import ChannelTask, sample_channels
from common.learngene.training import evaluate_ser, finetune
from common.models.sdnet import SDNet
from common.phy.dataset import DetectionBatch, make_detection_batch
from common.phy.detection import covariance_ml_detect, ml_detect
from common.phy.metrics import baseline_sers, ser

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "sdnet_fidelity"


@dataclass(frozen=True)
class Case:
    """One row: a task, a training budget and the variant under test."""

    label: str
    source: str = "gbsm"
    task_id: int = 104
    task_options: tuple[tuple[str, Any], ...] = ()
    n_train: int = 2000
    n_test: int = 1000
    n_ml: int = 300
    epochs: int = 20
    batch_size: int = 500
    lr: float = 1e-3
    n_conv: int = 8
    width: int = 8
    snr_db: float = 25.0
    train: bool = True
    seed: int = 0
    input: str = "paper"  # "paper": [H_LS; x_ZF^T]; "zf_only": the H_LS rows zeroed
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _task(c: Case) -> ChannelTask:
    options = dict(c.task_options)
    if c.source == "gbsm":
        options.setdefault("model", "legacy")  # the experiments' figures were measured on it
    return ChannelTask.make(c.source, 32, 8, c.task_id, 0, **options)


def channel_stats(H: torch.Tensor, n: int = 400) -> dict[str, float]:
    """Median condition number of ``H`` and median ``|<H_a, H_b>| / (||H_a|| ||H_b||)`` over
    pairs of the first ``n`` channels (how alike two UEs' channels of the task are)."""
    Hd = H[:n].to(torch.complex128)
    f = Hd.reshape(len(Hd), -1)
    f = f / f.norm(dim=1, keepdim=True)
    g = (f @ f.conj().T).abs()
    return {"cond_median": float(torch.linalg.cond(Hd).median()), "ue_corr": float(g[~torch.eye(len(Hd), dtype=torch.bool)].median())}


def hblind_ml_indices(test: DetectionBatch, H_task: torch.Tensor) -> torch.Tensor:
    """ML decisions from ``x_ZF`` alone under the task-average ZF noise covariance.

    ``C = E[(H_LS^H H_LS)^{-1}]`` over ``H_task`` (LS estimates of other channels of the
    task) is the average covariance of ``x_ZF - x`` up to ``sigma_n^2``; the decision is
    ``argmin_x (x_ZF - x)^H C^{-1} (x_ZF - x)`` (``covariance_ml_detect``): the best joint
    detector that does not look at this sample's ``H`` (Gaussian approximation). Returns
    ``int64 [n, n_t]``.
    """
    Hd = H_task.to(torch.complex128)
    return covariance_ml_detect(test.x_zf, torch.linalg.inv(Hd.conj().transpose(-1, -2) @ Hd).mean(0))


def run_case(c: Case) -> dict[str, Any]:
    """Train/evaluate one case; returns its row (SERs are fractions of symbols)."""
    task = _task(c)
    t0 = time.perf_counter()
    test = make_detection_batch(sample_channels(task, c.n_test, 1000 + c.seed), c.snr_db, 16, torch.Generator().manual_seed(2000 + c.seed))
    row: dict[str, Any] = {"case": asdict(c), **baseline_sers(test), **channel_stats(test.H)}
    if c.n_ml:
        ml = test[: c.n_ml]
        row["ser_ml_ls"] = ser(ml_detect(ml.y, ml.H_ls), ml.symbols)
        row["ser_ml_true"] = ser(ml_detect(ml.y, ml.H), ml.symbols)
        other = make_detection_batch(sample_channels(task, 2000, 5000 + c.seed), c.snr_db, 16, torch.Generator().manual_seed(6000 + c.seed))
        row["ser_hblind_ml"] = ser(hblind_ml_indices(ml, other.H_ls), ml.symbols)
    row["n_ml"] = c.n_ml
    if c.train:
        train = make_detection_batch(sample_channels(task, c.n_train, c.seed), c.snr_db, 16, torch.Generator().manual_seed(1 + c.seed))
        if c.input == "zf_only":
            for b in (train, test):
                b.sdnet_input[:, :, :-1, :] = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            model = SDNet(32, 8, c.n_conv, widths=[c.width] * (c.n_conv + 1))
        res = finetune(model, train, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, generator=torch.Generator().manual_seed(c.seed), val=test)
        row["ser_sdnet"] = res.val_ser_per_epoch[-1]
        row["ser_sdnet_best"] = min(res.val_ser_per_epoch)
        row["ser_sdnet_train"] = evaluate_ser(model, train)
        row["ser_zf_train"] = baseline_sers(train)["ser_zf"]
        row["val_ser_per_epoch"] = res.val_ser_per_epoch
        row["loss_per_epoch"] = res.loss_per_epoch
        row["steps"] = c.epochs * -(-c.n_train // c.batch_size)
    row["seconds"] = time.perf_counter() - t0
    return row


B = Case(label="paper recipe", n_ml=0)  # gbsm task 104, radius 5 m; ML: see `bounds`
EXPERIMENTS: dict[str, tuple[str, list[Case]]] = {
    "bounds": (
        "No training: is there room below MMSE at all? Exact ML with H_LS against MMSE on held-out tasks.",
        [Case(label=f"gbsm task {t}", task_id=t, train=False) for t in (100, 101, 102, 103, 104)]
        + [Case(label="umi task 0 (Sionna)", source="umi", task_id=0, train=False)]
        + [Case(label="gbsm task 104, per-stream SNR (sigma^2 = 10^-2.5)", snr_db=25.0 + 9.0309, train=False)],
    ),
    "hblind": (
        "No training: the best detector that ignores the sample's H (ML on x_ZF under the task-average ZF noise covariance) on one channel (radius 0), 2 cm, 5 cm and the paper's 5 m circle.",
        [Case(label=f"radius {r} m", train=False, task_options=(("radius_m", r),)) for r in (0.0, 0.02, 0.05, 5.0)],
    ),
    "steps": (
        "Is SDNet step-limited? Paper recipe (batch 500) against more Adam steps (batch 100, 50) on the same samples.",
        [B, replace(B, label="batch 100", batch_size=100), replace(B, label="batch 50", batch_size=50)],
    ),
    "breadth": (
        "Task breadth: all UEs at one point (radius 0: one channel, up to LS noise), in a 2 cm and a 5 cm circle (column ue_corr: median |correlation| of two UEs' channels); the paper's 5 m circle at the same budget is `steps` batch 100.",
        [replace(B, label=f"radius {r} m, batch 100", batch_size=100, task_options=(("radius_m", r),)) for r in (0.0, 0.02, 0.05)],
    ),
    "target": (
        "Toward the paper's budget: 32,400 samples, about 2,300 Adam steps (batch 100), the paper's 5 m circle.",
        [replace(B, label="32,400 samples, 2,268 steps", n_train=32400, batch_size=100, epochs=7)],
    ),
    "capacity": (
        "Step size: lr 3e-3 (paper 1e-3) at the steps of `steps` batch 100.",
        [replace(B, label="width 8, lr 3e-3, batch 100", batch_size=100, lr=3e-3)],
    ),
    "inputs": (
        "Does SDNet use H_LS at all? The same training with the H_LS rows of the input zeroed (x_ZF only), on the 5 m circle and on one channel (radius 0).",
        [replace(B, label=f"x_ZF only, radius {r} m, batch 100", batch_size=100, input="zf_only", task_options=(("radius_m", r),)) for r in (5.0, 0.0)],
    ),
    "narrow": (
        "The ingredient, on five held-out tasks: UEs of a task within 2 cm (nearly one channel, as spatially consistent small-scale fading would make a QuaDRiGa task) against the paper's 5 m circle, at the paper's 8,100 samples and 1,620 Adam steps (batch 100).",
        [
            replace(B, label=f"task {t}, radius {r} m", task_id=t, n_train=8100, batch_size=100, epochs=20, task_options=(("radius_m", r),))
            for r in (0.02, 5.0)
            for t in (100, 101, 102, 103, 104)
        ],
    ),
    "narrow_long": (
        "The ingredient with twice the steps: the five tasks at 2 cm, 8,100 samples, 3,240 Adam steps (batch 100).",
        [replace(B, label=f"task {t}, radius 0.02 m", task_id=t, n_train=8100, batch_size=100, epochs=40, task_options=(("radius_m", 0.02),)) for t in (100, 101, 102, 103, 104)],
    ),
    "narrow_data": (
        "Data, not steps, on narrow tasks? Task 101 (the hardest of `narrow_long`) at 2 cm with 4x the paper's samples (32,400) at `narrow_long`'s 3,240 Adam steps (batch 100, 10 epochs).",
        [replace(B, label="task 101, radius 0.02 m, 32,400 samples", task_id=101, n_train=32400, batch_size=100, epochs=10, task_options=(("radius_m", 0.02),))],
    ),
    "calibrated": (
        "The default channel model (38.901 UMi NLoS, `model = \"38.901\"`, serving sector): held-out tasks 100-103 (task 104 is error-free for ZF) at the paper's 5 m circle and at 2 cm, 8,100 samples, 1,620 Adam steps (batch 100), as `narrow`.",
        [
            replace(B, label=f"38.901 task {t}, radius {r} m", task_id=t, n_train=8100, batch_size=100, epochs=20, task_options=(("model", "38.901"), ("radius_m", r)))
            for r in (0.02, 5.0)
            for t in (100, 101, 102, 103)
        ],
    ),
    "long": (
        "Data, not steps? `steps` shows SDNet fitting its 2,000 training samples far below MMSE while held-out samples stay at ZF. The paper's 8,100 samples and 4x that, at about the same Adam steps (batch 100).",
        [
            replace(B, label="8,100 samples, 405 steps", n_train=8100, batch_size=100, epochs=5),
            replace(B, label="8,100 samples, 1,215 steps", n_train=8100, batch_size=100, epochs=15),
            replace(B, label="32,400 samples, 1,296 steps", n_train=32400, batch_size=100, epochs=4),
        ],
    ),
}


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def render() -> Path:
    """Write ``tables.md`` from every ``<experiment>.json`` present."""
    lines = ["<!-- generated by: .venv/bin/python benchmarks/sdnet_fidelity.py render; do not edit -->", ""]
    cols = ["ue_corr", "cond_median", "ser_sdnet", "sdnet_over_mmse", "ser_sdnet_best", "ser_sdnet_train", "ser_zf", "ser_mmse", "ser_lmmse_genie", "ser_ml_ls", "ser_ml_true", "ser_hblind_ml", "steps", "seconds"]
    for name, (question, _) in EXPERIMENTS.items():
        p = OUT_DIR / f"{name}.json"
        if not p.exists():
            continue
        rows = json.loads(p.read_text())
        lines += [f"### `{name}`", "", question, "", "| case | task | train n / epochs / batch | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
        for r in rows:
            if r.get("ser_sdnet") is not None and r.get("ser_mmse"):
                r["sdnet_over_mmse"] = r["ser_sdnet"] / r["ser_mmse"]
            c = r["case"]
            task = f"{c['source']} {c['task_id']} {dict(c['task_options']) or ''}".strip()
            budget = f"{c['n_train']} / {c['epochs']} / {c['batch_size']}" if c["train"] else "(no training)"
            if c.get("input", "paper") != "paper":
                task += f" input={c['input']}"
            lines.append(f"| {c['label']} | {task} | {budget} | " + " | ".join(_fmt(r.get(k)) for k in cols) + " |")
        lines += ["", f"Test: {rows[0]['case']['n_test']} held-out samples ({8 * rows[0]['case']['n_test']} symbols)" + (f"; ML on the first {rows[0]['n_ml']}." if rows[0]["n_ml"] else "; ML: see `bounds`."), ""]
    out = OUT_DIR / "tables.md"
    out.write_text("\n".join(lines))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")  # none: render (what `make bench` runs)
    r = sub.add_parser("run")
    r.add_argument("experiment", choices=sorted(EXPERIMENTS))
    sub.add_parser("render")
    sub.add_parser("list")
    a = ap.parse_args()
    a.cmd = a.cmd or "render"
    torch.set_num_threads(1)
    if a.cmd == "list":
        for k, (q, cases) in EXPERIMENTS.items():
            print(f"{k}: {q} ({len(cases)} cases)")
        return
    if a.cmd == "render":
        print(render())
        return
    rows = []
    for c in EXPERIMENTS[a.experiment][1]:
        row = run_case(c)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("val_ser_per_epoch", "loss_per_epoch", "case")} | {"label": c.label}), flush=True)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUT_DIR / f"{a.experiment}.json").write_text(json.dumps(rows, indent=1))  # after every row: a long run keeps what it has
    render()


if __name__ == "__main__":
    sys.exit(main())
