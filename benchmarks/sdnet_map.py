"""Where SDNet beats MMSE on the default channel model, and what it costs (issue #21, item 1).

Experiment 11 of ``docs/sdnet_fidelity.md``. Tasks of the default ``gbsm`` model (TR 38.901
UMi NLoS, 5 m circle, 32x8, QPSK, 25 dB, 16 pilots), chosen by ``map_task_ids`` from the
statistics of held-out task ids 100-199 (ids 100-399 are screened); each trained from scratch at the paper's Table III
recipe (MSE, Adam 1e-3, batch 500, 8,100 training samples; ``VARIANTS`` change the data, the
schedule, or SDNet's width or depth),
with the held-out SER on 1,000 samples every ``CHUNK`` epochs. Each (task, variant) is
checkpointed after every chunk (model, Adam state, shuffling generator) under the artifact
cache (``common.runtime.cache_root() / "sdnet_map"``), so ``train --resume`` continues
where a stopped run ended and gives the same numbers as one uninterrupted run.

    flock /tmp/airfleet-heavy.lock .venv/bin/python benchmarks/sdnet_map.py screen            # task statistics -> docs/sdnet_fidelity/map_tasks.json
    flock /tmp/airfleet-heavy.lock .venv/bin/python benchmarks/sdnet_map.py stats             # heavier statistics (ML bounds) of the selected tasks
    OMP_NUM_THREADS=1 flock /tmp/airfleet-train.lock .venv/bin/python benchmarks/sdnet_map.py train --epochs 20 --resume [--variant b500] [--tasks 146 117]
    OMP_NUM_THREADS=1 flock /tmp/airfleet-train.lock .venv/bin/python benchmarks/sdnet_map.py probe   # item 2: learnability probe of Table I's ZF range
    .venv/bin/python benchmarks/sdnet_map.py render                                            # docs/sdnet_fidelity/map.md
    .venv/bin/python benchmarks/sdnet_map.py table1 [RUN_DIR ...]                              # docs/sdnet_fidelity/table1_bounds.md

``table1`` puts the map's statistic beside Table I: for each task of each ``sdnet_table1``
run (default: the runs kept in ``docs/evidence/sdnet_table1``), the H-blind ML bound over
MMSE on the first 300 of that run's own held-out samples, and the SDNet / MMSE the run
reached, so a Table I task that misses is read against the map; with ``erank_tx``, the
channel statistic that orders the map's tasks as the bound does, as an out-of-sample check.
``map.md`` also counts the trainings whose SDNet ends at or above its task's bound: whether
the bound is the floor of what SDNet learns at this recipe.

Every figure in ``docs/sdnet_fidelity/map.md`` comes from ``map_tasks.json`` and ``map.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.*` when run as a script

from benchmarks.sdnet_fidelity import channel_stats, hblind_ml_indices
from common.channels import ChannelTask, sample_channels
from common.channels.gbsm import gbsm_environment
from common.learngene.training import Redraw, evaluate_ser, finetune, predict_indices
from common.models.sdnet import SDNet
from common.phy.dataset import DetectionBatch, make_detection_batch
from common.phy.detection import hard_qpsk, ml_detect, mmse
from common.phy.metrics import baseline_sers, hblind_fit_indices, ser, ser_ratio
from common.runtime import cache_root

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "sdnet_fidelity"
TASKS_JSON = OUT_DIR / "map_tasks.json"
MAP_JSON = OUT_DIR / "map.json"
HSWAP_JSON = OUT_DIR / "hswap.json"

#: held-out task ids screened (the collective uses 0..49)
SCREEN_IDS = tuple(range(100, 400))
#: Table I's ZF SER range (the paper's five tasks)
TABLE1_ZF = (0.065, 0.126)
#: held-out SER is recorded (and the run checkpointed) every CHUNK epochs
CHUNK = 5
SNR_DB, N_PILOTS, N_TEST, N_ML = 25.0, 16, 1000, 300


@dataclass(frozen=True)
class Variant:
    """A training recipe: the paper's (Table III) unless a field says otherwise."""

    name: str
    batch_size: int = 500
    lr: float = 1e-3
    n_train: int = 8100
    schedule: str = "const"  # "const" | "cosine": lr * (1 + cos(pi e / schedule_epochs)) / 2 per epoch e | "step": lr / 10 from epoch schedule_epochs on
    schedule_epochs: int = 40
    width: int = 8  # channels of every conv but the last (the paper: 8)
    n_conv: int = 8  # significant convs (the paper's individual depth: 8)
    model: str = "sdnet"  # "sdnet" | "mlp_xzf" | "mlp_full": a probe in place of SDNet (``MLPDetector``) | "detnet" (``DetNetProbe``)
    loss: str = "mse"  # a key of ``common.learngene.training.LOSSES``: "mse" (eq. 13) | "bce" (on the bits' signs)
    redraw: bool = False  # fresh symbols, pilots and noise every epoch over the same n_train channels (``Redraw``)
    inputs: str = "h_ls"  # "h_ls": the paper's image [H_LS ; x_ZF^T] | "gram": [H_LS^H H_LS / n_r ; x_ZF^T] (``gram_input``)
    seed: int = 0
    note: str = ""


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("b500", note="paper recipe: batch 500, Adam 1e-3, 8,100 samples"),
    Variant("b100", batch_size=100, note="batch 100 (5x the Adam steps per epoch)"),
    Variant("data2x", n_train=16200, note="2x the samples (16,200), batch 500"),
    Variant("data4x", n_train=32400, note="4x the samples (32,400), batch 500"),
    Variant("cosine", schedule="cosine", schedule_epochs=40, note="cosine learning-rate decay to 0 over 40 epochs, batch 500"),
    Variant("data4x-drop40", n_train=32400, schedule="step", schedule_epochs=40, note="data4x, Adam's rate cut to a tenth from epoch 40"),
    Variant("data4x-w16", n_train=32400, width=16, note="data4x, every conv 16 channels wide (the paper's 8): about 4x the convolution work"),
    Variant("data4x-d12", n_train=32400, n_conv=12, note="data4x, 12 significant convs (the paper's collective depth; individual 8)"),
    Variant("data4x-mlp-xzf", n_train=32400, model="mlp_xzf", note="data4x, not SDNet: an MLP on `x_ZF` alone (16 -> 512 -> 512 -> 16), the detector class whose best member the H-blind bound approximates"),
    Variant("b500-bce", loss="bce", note="the paper's recipe with a cross-entropy on each output's sign (QPSK's bits) in place of eq. (13)'s MSE"),
    Variant("data4x-mlp-xzf-bce", n_train=32400, model="mlp_xzf", loss="bce", note="data4x-mlp-xzf with the sign cross-entropy in place of eq. (13)'s MSE"),
    Variant("b500-gram", inputs="gram", note="the paper's recipe with SDNet's input image `[G ; x_ZF^T]`, `G` the real form of `H_LS^H H_LS / n_r` (17 x 16, the weighting of each sample's own ML on `x_ZF`), in place of `[H_LS ; x_ZF^T]` (65 x 16)"),
    Variant("data4x-gram", n_train=32400, inputs="gram", note="data4x with the Gram input of b500-gram"),
    Variant("data4x-mlp-gram", n_train=32400, model="mlp_full", inputs="gram", note="data4x, not SDNet: an MLP on the Gram image of b500-gram (272 -> 512 -> 512 -> 16)"),
    Variant("b500-detnet", model="detnet", note="not SDNet: a DetNet-style unrolled detector (10 projected-gradient steps on the sample's own ML metric with `G = H_LS^H H_LS / n_r`, each with a learned correction of 64 hidden units): a learner with the channel in its structure, at the paper's recipe"),
    Variant("data4x-detnet", n_train=32400, model="detnet", note="b500-detnet at 4x the samples"),
    Variant("data4x-mlp-full", n_train=32400, model="mlp_full", note="data4x, not SDNet: an MLP on SDNet's whole input `[H_LS ; x_ZF^T]` (1,040 -> 512 -> 512 -> 16)"),
    Variant("b500-redraw", redraw=True, note="the paper's recipe, but every epoch on fresh symbols, pilots and noise over the same 8,100 channels (`common.learngene.training.Redraw`): more received samples, no more channels"),
)}


class MLPDetector(torch.nn.Module):
    """A probe in SDNet's place: ``[n, 1, 2 n_r + 1, 2 n_t]`` SDNet input -> ``[n, 2 n_t]`` in
    ``(-1, 1)``, through two ReLU layers of ``hidden`` units and a tanh output, trained with
    SDNet's loss (eq. 13). ``xzf_only``: it sees the ``x_ZF`` row (the image's last) alone,
    so it is an H-blind detector, the class whose best member the H-blind ML bound
    approximates; otherwise the whole image, ``H_LS`` included."""

    def __init__(self, n_r: int, n_t: int, xzf_only: bool, hidden: int = 512) -> None:
        super().__init__()
        self.xzf_only = xzf_only
        d = 2 * n_t * (1 if xzf_only else 2 * n_r + 1)
        self.net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2 * n_t), torch.nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x[:, 0, -1, :] if self.xzf_only else x).flatten(1))


def _real_gram(Hr: torch.Tensor) -> torch.Tensor:
    """``G = Hr^T Hr / n_r`` of eq. 2's real channels ``Hr [n, 2 n_r, 2 n_t]`` (the SDNet image's
    top rows): the real form of ``H_LS^H H_LS / n_r``, ``[n, 2 n_t, 2 n_t]``."""
    return Hr.transpose(-1, -2) @ Hr / (Hr.shape[-2] / 2)


class DetNetProbe(torch.nn.Module):
    """A probe in SDNet's place with the channel in its structure, after DetNet (Samuel,
    Diskin and Wiesel, "Deep MIMO detection", 2017): ``layers`` unrolled projected-gradient
    steps on each sample's own ML metric ``(x - x_ZF)^T G (x - x_ZF) / 2``, ``G`` the real form
    of its ``H_LS^H H_LS / n_r``, each with a learned correction:
    ``g = G (x_k - x_ZF)``, ``q = x_k - delta_k g``, ``z = relu(W1 [q ; g ; v_k])``,
    ``x_{k+1} = tanh(alpha_k q + W2 z)``, ``v_{k+1} = W3 z``, from ``x_0 = x_ZF``; ``W2``
    starts at zero, so the untrained probe is plain projected gradient. Maps SDNet's input
    image ``[n, 1, 2 n_r + 1, 2 n_t]`` to ``[n, 2 n_t]``; trained on the last layer's output
    with SDNet's loss (eq. 13), not DetNet's sum over layers."""

    def __init__(self, n_t: int, layers: int = 10, hidden: int = 64) -> None:
        super().__init__()
        d = 2 * n_t
        self.delta = torch.nn.Parameter(torch.full((layers,), 0.3))
        self.alpha = torch.nn.Parameter(torch.full((layers,), 2.0))
        self.w1 = torch.nn.ModuleList(torch.nn.Linear(3 * d, hidden) for _ in range(layers))
        self.w2 = torch.nn.ModuleList(torch.nn.Linear(hidden, d) for _ in range(layers))
        self.w3 = torch.nn.ModuleList(torch.nn.Linear(hidden, d) for _ in range(layers))
        for w in self.w2:
            torch.nn.init.zeros_(w.weight)
            torch.nn.init.zeros_(w.bias)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        G, x_zf = _real_gram(img[:, 0, :-1, :]), img[:, 0, -1, :]
        x, v = x_zf, torch.zeros_like(x_zf)
        for k, (w1, w2, w3) in enumerate(zip(self.w1, self.w2, self.w3)):
            g = (G @ (x - x_zf).unsqueeze(-1)).squeeze(-1)
            q = x - self.delta[k] * g
            z = torch.relu(w1(torch.cat([q, g, v], -1)))
            x, v = torch.tanh(self.alpha[k] * q + w2(z)), w3(z)
        return x


def gram_input(batch: DetectionBatch) -> DetectionBatch:
    """``batch`` with SDNet's input image ``[G ; x_ZF^T]``: ``G = Hr^T Hr / n_r``, ``float32
    [2 n_t, 2 n_t]``, the real form of ``H_LS^H H_LS / n_r`` (``Hr`` eq. 2's real channel, the
    image's top ``2 n_r`` rows). ``(x_ZF - x)^T G (x_ZF - x)`` is, up to a constant, each
    sample's own ML metric on ``x_ZF``: the image holds what exact ML needs, in ``2 n_t + 1``
    rows instead of ``2 n_r + 1``. Returns ``[n, 1, 2 n_t + 1, 2 n_t]``."""
    X = batch.sdnet_input[:, 0]
    return replace(batch, sdnet_input=torch.cat([_real_gram(X[:, :-1]), X[:, -1:]], -2).unsqueeze(1).contiguous())


def variant_batch(batch: DetectionBatch, v: Variant) -> DetectionBatch:
    """``batch`` in the input layout variant ``v`` trains on."""
    if v.inputs == "h_ls":
        return batch
    if v.inputs == "gram":
        return gram_input(batch)
    raise ValueError(f"unknown inputs {v.inputs!r}")


def build_model(v: Variant) -> torch.nn.Module:
    """The detector a variant trains: SDNet(32, 8, ``n_conv``), every conv but the last
    ``width`` wide (SDNet(8, 8, ``n_conv``) on the 17-row Gram image), or an ``MLPDetector`` probe."""
    if v.model == "sdnet":
        return SDNet(8 if v.inputs == "gram" else 32, 8, v.n_conv, widths=[v.width] * (v.n_conv + 1))
    if v.model in ("mlp_xzf", "mlp_full"):
        return MLPDetector(8 if v.inputs == "gram" else 32, 8, xzf_only=v.model == "mlp_xzf")
    if v.model == "detnet":
        return DetNetProbe(8)
    raise ValueError(f"unknown model {v.model!r}")


def map_task(task_id: int) -> ChannelTask:
    """Task ``task_id`` of the default ``gbsm`` model (38.901, 5 m circle), seed 0."""
    return ChannelTask.make("gbsm", 32, 8, task_id, 0)


def held_out(task: ChannelTask) -> DetectionBatch:
    """The 1,000 held-out samples (the draws of ``sdnet_fidelity.run_case`` at seed 0)."""
    return make_detection_batch(sample_channels(task, N_TEST, 1000), SNR_DB, N_PILOTS, torch.Generator().manual_seed(2000))


def training_set(task: ChannelTask, n: int, seed: int = 0) -> DetectionBatch:
    """``n`` training samples (the draws of ``sdnet_fidelity.run_case``; the first 8,100 of a larger set differ)."""
    return make_detection_batch(sample_channels(task, n, seed), SNR_DB, N_PILOTS, torch.Generator().manual_seed(1 + seed))


def _erank(ev: torch.Tensor) -> float:
    """Effective rank ``exp(entropy)`` of non-negative eigenvalues."""
    p = ev.clamp_min(0) / ev.clamp_min(0).sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def variation_stats(H: torch.Tensor, n_pairs: int = 400) -> dict[str, float]:
    """How much the channel of one task varies from sample to sample.

    ``H: complex [n, n_r, n_t]``. Returns ``h_var`` (mean ``||H_i - H_j||_F^2`` over pairs of
    the first ``n_pairs`` samples / mean ``||H||_F^2``: 2 for independent zero-mean channels,
    0 for one channel), ``erank_vec`` (effective rank of the ``n_r n_t x n_r n_t`` second
    moment of ``vec(H)``: the degrees of freedom the task's channels span), ``rank90_vec``
    (eigenvalues holding 90% of that moment's power), ``erank_rx`` / ``erank_tx`` (effective
    rank of ``E[H H^H]`` / ``E[H^H H]``: BS / UE angular spread), ``top_rx`` (share of the
    power in ``E[H H^H]``'s dominant eigenvector) and ``u1_align`` (mean ``|u_1(H_i)^H u_1|^2``
    of each sample's dominant left singular vector with ``E[H H^H]``'s: 1 if every sample's
    dominant direction is the task's).
    """
    Hd = H.to(torch.complex128)
    n = len(Hd)
    f = Hd.reshape(n, -1)
    power = f.abs().pow(2).sum(1)
    fp = f[:n_pairs]
    pp = power[:n_pairs]
    d = pp[:, None] + pp[None, :] - 2 * (fp @ fp.conj().T).real
    off = ~torch.eye(len(fp), dtype=torch.bool)
    C = (f.T @ f.conj()) / n
    ev = torch.linalg.eigvalsh(C).flip(0).clamp_min(0)
    R_rx = (Hd @ Hd.conj().transpose(-1, -2)).mean(0)
    R_tx = (Hd.conj().transpose(-1, -2) @ Hd).mean(0)
    ev_rx, V_rx = torch.linalg.eigh(R_rx)
    u1 = V_rx[:, -1]
    U, _, _ = torch.linalg.svd(Hd, full_matrices=False)
    return {
        "h_var": float(d[off].mean() / power.mean()),
        "erank_vec": _erank(ev),
        "rank90_vec": int((ev.cumsum(0) / ev.sum() < 0.9).sum()) + 1,
        "erank_rx": _erank(ev_rx),
        "erank_tx": _erank(torch.linalg.eigvalsh(R_tx)),
        "top_rx": float(ev_rx[-1].clamp_min(0) / ev_rx.clamp_min(0).sum()),
        "u1_align": float((U[:, :, 0].conj() @ u1).abs().pow(2).mean()),
    }


def environment_stats(task: ChannelTask) -> dict[str, float]:
    """The task's drop: effective number of clusters ``1 / sum P_n^2`` (19 at most), the
    strongest cluster's power share, and the 38.901 large-scale parameters (DS in ns,
    ASD / ASA / ZSA / ZSD in degrees) at the drop every UE of a 5 m task sees."""
    env = gbsm_environment(task)
    cs = env.clusters(0, 0)
    p = np.asarray(cs.cluster_powers, dtype=float)
    p = p / p.sum()
    lsp = env.large_scale_parameters(0, 0)
    return {
        "n_clusters_eff": float(1.0 / (p**2).sum()),
        "top_cluster": float(p.max()),
        "ds_ns": lsp.ds_s * 1e9,
        "asd_deg": lsp.asd_deg,
        "asa_deg": lsp.asa_deg,
        "zsa_deg": lsp.zsa_deg,
        "zsd_deg": lsp.zsd_deg,
    }


def screen_task(task_id: int) -> dict[str, Any]:
    """Cheap statistics of one task on its held-out samples (no training, no ML)."""
    task = map_task(task_id)
    test = held_out(task)
    return {"task_id": task_id, **baseline_sers(test), **channel_stats(test.H), **variation_stats(test.H), **environment_stats(task)}


def ml_stats(task_id: int) -> dict[str, float]:
    """Exact ML with ``H_LS`` and the H-blind ML bound on the first ``N_ML`` held-out samples."""
    task = map_task(task_id)
    ml = held_out(task)[:N_ML]
    other = make_detection_batch(sample_channels(task, 2000, 5000), SNR_DB, N_PILOTS, torch.Generator().manual_seed(6000))
    out = {"ser_ml_ls": ser(ml_detect(ml.y, ml.H_ls), ml.symbols), "ser_hblind_ml": ser(hblind_ml_indices(ml, other.H_ls), ml.symbols)}
    out["ser_mmse_ml_subset"] = baseline_sers(ml)["ser_mmse"]
    return out


def fit_stats(task_id: int) -> dict[str, float]:
    """The H-blind detector with its covariance fitted from the paper's 8,100 training
    samples (``hblind_fit_indices``) on the first ``N_ML`` held-out samples: whether what
    the bound knows is in the data SDNet trains on."""
    task = map_task(task_id)
    ml = held_out(task)[:N_ML]
    return {"ser_hblind_fit": ser(hblind_fit_indices(ml, training_set(task, VARIANTS["b500"].n_train)), ml.symbols)}


def map_task_ids(stats: list[dict[str, Any]]) -> list[int]:
    """The rule that picks the map's ten tasks from the screened ones, in task-id order:
    the first six whose held-out ZF SER is in Table I's range (0.065-0.126), the first two
    below it with ZF SER >= 0.04 (room for a SER to be measured on 8,000 symbols) and the
    first two above it with ZF SER <= 0.25."""
    rows = sorted(stats, key=lambda r: r["task_id"])
    lo, hi = TABLE1_ZF
    pick = [r for r in rows if lo <= r["ser_zf"] <= hi][:6]
    pick += [r for r in rows if 0.04 <= r["ser_zf"] < lo][:2]
    pick += [r for r in rows if hi < r["ser_zf"] <= 0.25][:2]
    return sorted(r["task_id"] for r in pick)


def _load(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _merge_result(key: str, row: dict[str, Any]) -> None:
    """Write one case's row into ``map.json`` (read-modify-write under a file lock, so
    parallel ``train`` processes keep each other's rows)."""
    MAP_JSON.parent.mkdir(parents=True, exist_ok=True)
    lock = cache_root() / "sdnet_map" / "map.json.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        results = _load(MAP_JSON, {})
        results[key] = row
        _save(MAP_JSON, results)


#: the learnability probe: variant ``b100`` for PROBE_EPOCHS epochs; a task passes below PROBE_PASS x MMSE
PROBE_EPOCHS, PROBE_PASS = 5, 1.0


def in_table1_range(stats: list[dict[str, Any]]) -> list[int]:
    """Screened task ids whose held-out ZF SER lies in Table I's range (0.065-0.126), in id order."""
    lo, hi = TABLE1_ZF
    return [r["task_id"] for r in sorted(stats, key=lambda r: r["task_id"]) if lo <= r["ser_zf"] <= hi]


def probe_ratio(task_id: int, stats: dict[int, dict[str, Any]], results: dict[str, Any]) -> float | None:
    """SDNet / MMSE after the probe's PROBE_EPOCHS batch-100 epochs, or None when not probed."""
    r = results.get(case_key(task_id, "b100"))
    h = {x["epoch"]: x["ser"] for x in r["history"]} if r else {}
    return h[PROBE_EPOCHS] / stats[task_id]["ser_mmse"] if PROBE_EPOCHS in h else None


def case_key(task_id: int, variant: str) -> str:
    return f"task{task_id}-{variant}"


def _lr_at(v: Variant, epoch: int) -> float:
    if v.schedule == "const":
        return v.lr
    if v.schedule == "cosine":
        return v.lr * 0.5 * (1 + math.cos(math.pi * min(epoch, v.schedule_epochs) / v.schedule_epochs))
    if v.schedule == "step":
        return v.lr / 10 if epoch >= v.schedule_epochs else v.lr
    raise ValueError(f"unknown schedule {v.schedule!r}")


def branch_checkpoint(task_id: int, v: Variant, source: Variant, ckpt_dir: Path) -> None:
    """Start (task, ``v``) from (task, ``source``)'s checkpoint, which is what training ``v``
    from scratch would reach there: the two variants differ only in the learning rate, and
    not before the checkpoint's epoch. Refuses anything else in one line."""
    dst = ckpt_dir / f"{case_key(task_id, v.name)}.pt"
    src = ckpt_dir / f"{case_key(task_id, source.name)}.pt"
    if dst.exists():
        return
    if not src.exists():
        raise SystemExit(f"no checkpoint of task {task_id} variant {source.name} to branch from ({src})")
    st = torch.load(src, weights_only=False)
    at = st["row"]["history"][-1]["epoch"]
    def recipe(x: Variant) -> dict[str, Any]:
        return {k: val for k, val in asdict(x).items() if k not in ("name", "note", "schedule", "schedule_epochs")}

    if recipe(v) != recipe(source) or any(_lr_at(v, e) != _lr_at(source, e) for e in range(at)):
        raise SystemExit(f"variant {v.name} is not variant {source.name} up to epoch {at}: train it from scratch")
    st["row"] = {**st["row"], "variant": asdict(v), "branched_from": {"variant": source.name, "epoch": at}}
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.save(st, dst)


def train_case(task_id: int, v: Variant, epochs: int, ckpt_dir: Path, resume: bool) -> dict[str, Any]:
    """Train (task, variant) up to ``epochs``, chunk by chunk; returns its row in ``map.json``."""
    key = case_key(task_id, v.name)
    ckpt = ckpt_dir / f"{key}.pt"
    task = map_task(task_id)
    test = variant_batch(held_out(task), v)
    train = variant_batch(training_set(task, v.n_train, v.seed), v)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(v.seed)
        model = build_model(v)
    opt = torch.optim.Adam(model.parameters(), lr=v.lr)
    gen = torch.Generator().manual_seed(v.seed)
    redraw = Redraw(N_PILOTS, torch.Generator().manual_seed(v.seed + 1)) if v.redraw else None
    row: dict[str, Any] = {"task_id": task_id, "variant": asdict(v), "history": [], "seconds": 0.0}
    if resume and ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        if redraw is not None:
            redraw.generator.set_state(st["redraw_gen"])
        row = st["row"]
    done = row["history"][-1]["epoch"] if row["history"] else 0
    if not row["history"]:
        row["history"].append({"epoch": 0, "ser": evaluate_ser(model, test), "ser_train": None, "loss": None})
    while done < epochs:
        n_ep = min(CHUNK, epochs - done)
        losses: list[float] = []
        secs = 0.0
        for e in range(done, done + n_ep):  # one call per epoch: the schedule sets each epoch's lr
            for g in opt.param_groups:
                g["lr"] = _lr_at(v, e)
            r = finetune(model, train, epochs=1, batch_size=v.batch_size, lr=v.lr, generator=gen, optimizer=opt, loss=v.loss, redraw=redraw)
            losses += r.loss_per_epoch
            secs += r.seconds
        done += n_ep
        row["seconds"] += secs
        row["history"].append({"epoch": done, "ser": evaluate_ser(model, test), "ser_train": evaluate_ser(model, train[:2000]), "loss": losses[-1], "epoch_s": secs / n_ep})
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        extra = {"redraw_gen": redraw.generator.get_state()} if redraw is not None else {}
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "row": row, **extra}, ckpt)
        _merge_result(key, row)
        h = row["history"][-1]
        print(json.dumps({"case": key, "epoch": done, "ser": h["ser"], "ser_train": h["ser_train"], "epoch_s": round(h["epoch_s"], 2)}), flush=True)
    return row


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _derived(s: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    if s.get("ser_ml_ls") is not None and s.get("ser_mmse_ml_subset"):
        out["mmse_over_ml"] = ser_ratio(s["ser_mmse_ml_subset"], s["ser_ml_ls"], 8 * N_ML)
        out["hblind_over_mmse"] = s["ser_hblind_ml"] / s["ser_mmse_ml_subset"]
        if s.get("ser_hblind_fit") is not None:
            out["hblind_fit_over_mmse"] = s["ser_hblind_fit"] / s["ser_mmse_ml_subset"]
    return out


def _ranks(x: list[float]) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def _spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation of ``x`` and ``y`` (ties broken by order)."""
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def _spearman_rows(stats: dict[int, dict[str, Any]], tids: list[int], target: list[float], cols: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """``| statistic | rho |`` rows: each statistic of ``cols`` known for every task of
    ``tids`` against ``target``, strongest first."""
    rows = []
    for k in cols:
        if k in skip:
            continue
        v = [({**stats[t], **_derived(stats[t])}).get(k) for t in tids]
        if any(x is None for x in v) or len(set(v)) < 2:
            continue
        rows.append((k, _spearman(v, target)))
    return [f"| {k} | {c:+.2f} |" for k, c in sorted(rows, key=lambda kc: -abs(kc[1]))]


def _above_bound(stats: dict[int, dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """How often a training's best held-out SDNet / MMSE lies at or above its task's H-blind
    ML bound over MMSE, and the closest it came: whether SDNet, as it generalises, is a
    detector of ``x_ZF`` alone (Experiment 3), which that bound limits."""
    pairs, probes = [], []
    best_sd: dict[int, float] = {}  # task -> best SDNet / MMSE of any training
    for r in results.values():
        s = stats.get(r["task_id"], {})
        hb = _derived(s).get("hblind_over_mmse") if s else None
        if hb is None:
            continue
        since = r.get("branched_from", {}).get("epoch", 0)  # a branch counts by its own epochs
        own = [h["ser"] for h in r["history"] if h["epoch"] > since]
        if not own:
            continue
        best = min(own) / s["ser_mmse"]
        is_sdnet = r["variant"].get("model", "sdnet") == "sdnet"
        (pairs if is_sdnet else probes).append((best - hb, r["task_id"], r["variant"]["name"], best, hb))
        if is_sdnet:
            best_sd[r["task_id"]] = min(best, best_sd.get(r["task_id"], best))
    if not pairs:
        return []
    _, tid, var, best, hb = min(pairs)
    out = ["### SDNet against the H-blind bound", "",
           f"In {sum(p[0] >= 0 for p in pairs)} of {len(pairs)} SDNet trainings of tasks with a bound, the best held-out SDNet / MMSE is at or above the task's `hblind_over_mmse`; "
           f"the closest: task {tid} `{var}`, {best:.2f} against a bound of {hb:.2f}.", ""]
    fit = [(t, _derived(stats[t])) for t in sorted(stats) if "hblind_fit_over_mmse" in _derived(stats[t])]
    if fit:
        close = sum(abs(d["hblind_fit_over_mmse"] - d["hblind_over_mmse"]) <= 0.1 * max(d["hblind_over_mmse"], 0.1) for _, d in fit)
        beaten = [t for t, d in fit if t in best_sd and d["hblind_fit_over_mmse"] < best_sd[t]]
        out += [f"The bound's detector with its covariance fitted from the paper's 8,100 training samples alone (`hblind_fit_over_mmse`: ZF errors `x_ZF - x`, no `H`; 64 real parameters) "
                f"is within 10 % of the bound (or 0.01 of MMSE) on {close} of {len(fit)} tasks, and below the best SDNet of any training on {len(beaten)} of the {sum(t in best_sd for t, _ in fit)} trained: "
                "what the bound knows is in the samples SDNet is given.", ""]
    if probes:
        out += ["The probes in SDNet's place (the MLPs and the DetNet-style unrolled detector), best held-out SER / MMSE against the bound:", ""]
        out += [f"- task {t} `{v}`: {b:.2f} against {h:.2f}" for _, t, v, b, h in sorted(probes, key=lambda p: (p[1], p[2]))] + [""]
    return out


def _separation(stats: dict[int, dict[str, Any]], results: dict[str, Any], cols: list[str]) -> list[str]:
    """Which statistic orders the tasks as SDNet / MMSE at the last common ``b500`` epoch does
    (Spearman rank correlation over the tasks trained with the paper's recipe), and which
    channel statistic orders the tasks as the H-blind ML bound does (over every task the
    bound was computed for: what makes a task one SDNet learns)."""
    out: list[str] = []
    runs = {r["task_id"]: r for r in results.values() if r["variant"]["name"] == "b500" and len(r["history"]) > 1}
    if len(runs) >= 3:
        ep = min(r["history"][-1]["epoch"] for r in runs.values())
        tids = sorted(t for t in runs if t in stats)
        ratio = [next(h["ser"] for h in runs[t]["history"] if h["epoch"] == ep) / stats[t]["ser_mmse"] for t in tids]
        out += [f"### Which statistic orders the tasks as SDNet / MMSE at epoch {ep} (`b500`, {len(tids)} tasks)", "", "| statistic | Spearman rank correlation with SDNet / MMSE |", "|---|---|"]
        out += _spearman_rows(stats, tids, ratio, cols) + [""]
    out += _above_bound(stats, results)
    bounded = sorted(t for t, s in stats.items() if "hblind_over_mmse" in _derived(s))
    if len(bounded) >= 3:
        bound = [_derived(stats[t])["hblind_over_mmse"] for t in bounded]
        out += [f"### Which channel statistic orders the tasks as the H-blind bound does ({len(bounded)} tasks with a bound)", "",
                "What a task SDNet learns has: `erank_tx` is the effective rank (of 8) of the task-average UE-side Gram matrix `E[H^H H]`; "
                "the further it is below 8, the more the ZF error of every sample shares one correlation, which a detector can learn from `x_ZF` alone.", "",
                "| statistic | Spearman rank correlation with hblind_over_mmse |", "|---|---|"]
        out += _spearman_rows(stats, bounded, bound, cols, skip=("ser_hblind_ml", "hblind_over_mmse", "hblind_fit_over_mmse", "ser_hblind_fit", "ser_ml_ls", "mmse_over_ml")) + [""]
    return out


def _probe_table(stats: dict[int, dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """The learnability probe of Table I's ZF range beside the H-blind bound and, where run,
    the paper's recipe (``b500``) at its last recorded epoch."""
    in_range = in_table1_range(list(stats.values()))
    probed = [(t, q) for t in in_range if (q := probe_ratio(t, stats, results)) is not None]
    if not probed:
        return []
    out = [f"### Learnability probe of Table I's ZF range ({len(probed)} of {len(in_range)} in-range tasks probed, in task-id order)", ""]
    out += [f"SDNet / MMSE after {PROBE_EPOCHS} epochs at batch 100 (8,100 samples); a task passes below {PROBE_PASS}. Table I itself: `airfleet run scenarios/sdnet_table1.toml` (`studies/sdnet_table1.py`).", ""]
    out += ["| task | ZF | MMSE | hblind_over_mmse | probe SDNet / MMSE | passes | b500: SDNet / MMSE at its last epoch |", "|---|---|---|---|---|---|---|"]
    for t, q in probed:
        b500 = results.get(case_key(t, "b500"))
        last = f"{b500['history'][-1]['ser'] / stats[t]['ser_mmse']:.2f} (ep {b500['history'][-1]['epoch']})" if b500 else ""
        hb = _derived(stats[t]).get("hblind_over_mmse")
        out.append(f"| {t} | {_fmt(stats[t]['ser_zf'])} | {_fmt(stats[t]['ser_mmse'])} | {_fmt(hb, 2)} | {_fmt(q, 2)} | {'yes' if q < PROBE_PASS else 'no'} | {last} |")
    return out + ["", "SERs on each task's 1,000 held-out samples (8,000 symbols); `hblind_over_mmse` on the first 300 (`stats`).", ""]


def _other_sample(n: int, seed: int = 0) -> torch.Tensor:
    """``int64 [n]``: for each of ``n`` independent samples, another one (a cyclic shift by a
    random nonzero offset; no sample is paired with itself)."""
    shift = int(torch.randint(1, n, (1,), generator=torch.Generator().manual_seed(seed)))
    return (torch.arange(n) + shift) % n


def swapped_h_ser(model: torch.nn.Module, test: DetectionBatch, seed: int = 0) -> float:
    """Held-out SER of ``model`` with each sample's ``H_LS`` rows of the SDNet input replaced by
    another held-out sample's (``_other_sample``), its own ``x_ZF`` row kept: a
    detector that uses the sample's own channel loses accuracy; one that reads ``x_ZF``
    alone (an H-blind detector) does not."""
    perm = _other_sample(len(test), seed)
    X = test.sdnet_input.clone()
    X[:, :, :-1] = test.sdnet_input[perm][:, :, :-1]
    return ser(predict_indices(model, replace(test, sdnet_input=X)), test.symbols)


def hswap(ckpt_dir: Path) -> list[dict[str, Any]]:
    """``swapped_h_ser`` of every checkpointed map training whose model sees the channel (SDNet,
    on ``H_LS`` or the Gram image, the whole-input MLPs and ``DetNetProbe``), at its last epoch,
    with MMSE under the same swap as the control -> ``hswap.json``."""
    rows = []
    tests: dict[int, DetectionBatch] = {}
    for path in sorted(ckpt_dir.glob("task*.pt")):
        st = torch.load(path, weights_only=False)
        row = st["row"]
        v = Variant(**row["variant"])
        if v.model == "mlp_xzf":
            continue
        model = build_model(v)
        model.load_state_dict(st["model"])
        tid = int(row["task_id"])
        test = variant_batch(tests.setdefault(tid, held_out(map_task(tid))), v)
        own = evaluate_ser(model, test)
        other = test.H_ls[_other_sample(len(test))]
        rows.append({"task_id": tid, "variant": v.name, "epoch": row["history"][-1]["epoch"], "ser": own, "ser_h_swapped": swapped_h_ser(model, test),
                     "ser_mmse": baseline_sers(test)["ser_mmse"], "ser_mmse_h_swapped": ser(hard_qpsk(mmse(test.y, other, test.noise_var)), test.symbols)})
        print(json.dumps(rows[-1]), flush=True)
    _save(HSWAP_JSON, rows)
    return rows


def _variant_rank(name: str) -> int:
    """Where variant ``name`` sorts in the map's tables: ``VARIANTS``' order, unknown ones last."""
    return list(VARIANTS).index(name) if name in VARIANTS else len(VARIANTS)


def _hswap_section() -> list[str]:
    rows = _load(HSWAP_JSON, [])
    if not rows:
        return []
    out = ["### Does the detector use the sample's own H_LS? (`sdnet_map.py hswap`)", "",
           "Each trained model's held-out SER with every sample's `H_LS` rows of the input swapped for another held-out sample's (its own `x_ZF` row kept), at the checkpoint's last epoch. "
           "A detector that uses the sample's channel loses accuracy when given another's (MMSE's own SER with the same swap is the last column); an H-blind one does not.", "",
           "| task | variant | epoch | SER / MMSE | with another sample's H_LS / MMSE | swapped / own | MMSE with another sample's H_LS |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task_id"], _variant_rank(r["variant"]))):
        out.append(f"| {r['task_id']} | {r['variant']} | {r['epoch']} | {_fmt(r['ser'] / r['ser_mmse'], 2)} | {_fmt(r['ser_h_swapped'] / r['ser_mmse'], 2)} | {_fmt(r['ser_h_swapped'] / max(r['ser'], 1e-9), 2)} | {_fmt(r.get('ser_mmse_h_swapped'))} |")
    sd = [r["ser_h_swapped"] / max(r["ser"], 1e-9) for r in rows if VARIANTS.get(r["variant"], Variant("?")).model == "sdnet"]
    if sd:
        out += ["", f"Over the {len(sd)} SDNet trainings, swapped / own SER: median {float(np.median(sd)):.2f}, range {min(sd):.2f}-{max(sd):.2f}.", ""]
    return out


def render() -> Path:
    """Write ``map.md`` from ``map_tasks.json`` and ``map.json``."""
    stats = {r["task_id"]: r for r in _load(TASKS_JSON, [])}
    results = _load(MAP_JSON, {})
    lines = ["<!-- generated by: .venv/bin/python benchmarks/sdnet_map.py render; do not edit -->", ""]
    ids = map_task_ids(list(stats.values())) if stats else []
    epochs = sorted({h["epoch"] for r in results.values() for h in r["history"] if h["epoch"] > 0})
    lines += ["### SDNet / MMSE by task and budget (held-out SER ratio; variant `b500` = the paper's recipe)", ""]
    head = ["task", "variant", "ZF", "MMSE", *[f"ep {e}" for e in epochs], "best SDNet", "train SER (2k) last", "s / epoch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(results, key=lambda k: (results[k]["task_id"], _variant_rank(results[k]["variant"]["name"]))):
        r = results[key]
        s = stats.get(r["task_id"], {})
        mm = s.get("ser_mmse")
        by = {h["epoch"]: h for h in r["history"]}
        cells = [_fmt(by[e]["ser"] / mm, 2) if e in by and mm else "" for e in epochs]
        best = min(h["ser"] for h in r["history"] if h["epoch"] > 0) if len(r["history"]) > 1 else None
        last = r["history"][-1]
        eps = [h["epoch_s"] for h in r["history"] if h.get("epoch_s")]
        lines.append(f"| {r['task_id']} | {r['variant']['name']} | {_fmt(s.get('ser_zf'))} | {_fmt(mm)} | " + " | ".join(cells) + f" | {_fmt(best)} | {_fmt(last.get('ser_train'))} | {_fmt(float(np.median(eps)) if eps else None, 1)} |")
    lines += ["", "Ratios are SDNet's held-out SER (1,000 samples, 8,000 symbols, eval-mode BN) over MMSE's on the same samples; `best SDNet` is the lowest SER recorded.", ""]
    used = {r["variant"]["name"] for r in results.values()}
    lines += ["Variants (the paper's recipe and SDNet(32, 8, 8), every conv 8 channels wide, changed as each says):", ""]
    lines += [f"- `{v.name}`: {v.note}" for v in VARIANTS.values() if v.name in used] + [""]
    cols = ["ser_zf", "ser_mmse", "ser_ml_ls", "ser_hblind_ml", "hblind_over_mmse", "hblind_fit_over_mmse", "mmse_over_ml", "cond_median", "ue_corr", "h_var", "erank_vec", "rank90_vec", "erank_rx", "erank_tx", "top_rx", "u1_align", "n_clusters_eff", "top_cluster", "ds_ns", "asd_deg", "asa_deg"]
    lines += ["### Task statistics (held-out samples; ML on the first 300)", "", "Selected by `map_task_ids`: " + ", ".join(map(str, ids)), ""]
    lines += ["| task | map | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for tid in sorted(stats):
        s = dict(stats[tid])
        s.update(_derived(s))
        if tid not in ids and not any(r["task_id"] == tid for r in results.values()):
            continue
        lines.append(f"| {tid} | {'yes' if tid in ids else 'extra'} | " + " | ".join(_fmt(s.get(k)) for k in cols) + " |")
    lines += ["", "`mmse_over_ml`: MMSE's SER over exact ML's on the 300 ML samples (ML at 0 errors counted as 1 error); `hblind_over_mmse`: the H-blind ML bound over MMSE on those samples; `hblind_fit_over_mmse`: the same detector with its covariance fitted from the 8,100 training samples' ZF errors (no `H`), over MMSE.", ""]
    lines += _separation(stats, results, cols)
    lines += _probe_table(stats, results)
    lines += _hswap_section()
    out = OUT_DIR / "map.md"
    out.write_text("\n".join(lines))
    return out


def _train_cmd(task_id: int, variant: str, seed: int, epochs: int, resume: bool) -> list[str]:
    return [sys.executable, __file__, "train", "--tasks", str(task_id), "--variant", variant, "--seed", str(seed), "--epochs", str(epochs), "--no-render"] + (["--resume"] if resume else [])


def _run_parallel(cmds: list[list[str]], jobs: int, stop: Callable[[], bool] | None = None) -> None:
    """Run ``cmds`` as at most ``jobs`` single-thread processes at a time, in order; launch no
    more once ``stop()`` is true. A failed process fails the whole call."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[subprocess.Popen[bytes]] = []
    failed: list[int] = []

    def reap() -> None:
        nonlocal running
        for p in running:
            if p.poll() not in (None, 0):
                failed.append(p.returncode)
        running = [p for p in running if p.poll() is None]

    for cmd in cmds:
        while True:
            reap()
            if len(running) < jobs:
                break
            time.sleep(1)
        if failed or (stop is not None and stop()):
            break
        running.append(subprocess.Popen(cmd, env=env))
    for p in running:
        p.wait()
    reap()
    if failed:
        raise SystemExit(f"{len(failed)} training process(es) failed (exit {failed[0]})")


def probe(stats: list[dict[str, Any]], jobs: int, need: int) -> None:
    """Probe Table I's range in task-id order (batch 100, PROBE_EPOCHS epochs, resumes) until
    ``need`` tasks pass or the range is exhausted."""
    by = {r["task_id"]: r for r in stats}

    def passed() -> int:
        res = _load(MAP_JSON, {})
        return sum(1 for t in in_table1_range(stats) if (q := probe_ratio(t, by, res)) is not None and q < PROBE_PASS)

    todo = [t for t in in_table1_range(stats) if probe_ratio(t, by, _load(MAP_JSON, {})) is None]
    _run_parallel([_train_cmd(t, "b100", 0, PROBE_EPOCHS, True) for t in todo], jobs, stop=lambda: passed() >= need)
    res = _load(MAP_JSON, {})
    print(json.dumps({"probed": {t: round(q, 3) for t in in_table1_range(stats) if (q := probe_ratio(t, by, res)) is not None}, "passed": passed()}))


TABLE1_BOUNDS_MD = OUT_DIR / "table1_bounds.md"
EVIDENCE_TABLE1 = OUT_DIR.parent / "evidence" / "sdnet_table1"
EVIDENCE_LEARNGENE = OUT_DIR.parent / "evidence" / "learngene_paper"


def default_table1_runs() -> list[Path]:
    """The kept ``sdnet_table1`` runs and the kept ``paper-per-task`` learngene runs (the
    learngene study's Table I at the paper's per-task recipe)."""
    t1 = sorted(d for d in EVIDENCE_TABLE1.iterdir() if (d / "table1.parquet").is_file())
    lg = sorted(d for d in EVIDENCE_LEARNGENE.iterdir()
                if (d / "table1.parquet").is_file() and json.loads((d / "scenario.resolved.json").read_text())["study"].get("scale") == "paper-per-task")
    return t1 + lg


TABLE1_BOUNDS_JSON = OUT_DIR / "table1_bounds.json"


#: the bounds a run's Table I verdict reads (``studies.reproduction``), written into the run directory
BOUNDS_TABLE = "hblind_bounds.parquet"


def _table1_items(run_dir: Path, scen: dict[str, Any]) -> tuple[str, int, int, list[tuple[int, float, float, float, Callable[[str, int], DetectionBatch]]]]:
    """``(study, seed, n_t, items)``: each matched Table I row of the ``sdnet_table1`` or
    ``learngene_paper`` run in ``run_dir`` (``scen``: its ``scenario.resolved.json``) as ``(task id, ZF, MMSE, SDNet, batch(purpose, n))``, where
    ``batch`` draws that task's samples as the run did (``"table1-test"`` /
    ``"target-test-<snr>"``: its held-out samples; ``"train"``: an ``sdnet_table1`` run's
    training samples, all of them)."""
    import pyarrow.parquet as pq

    cfg, seed = scen["study"], int(scen["seed"])
    t1 = [r for r in pq.read_table(run_dir / "table1.parquet").to_pylist() if r["matched"]]
    if cfg.get("kind") == "learngene_paper":
        from common.learngene.collective import task_detection_batch
        from studies.learngene_paper import _resolve, _task as lg_task

        c = _resolve(cfg)
        snr = float(c["snr_db"])
        base = {(r["target"], r["scheme"]): r["ser"] for r in pq.read_table(run_dir / "ser_snr.parquet").to_pylist() if r["snr_db"] == snr}

        def lg_batch(tid: int) -> Callable[[str, int], DetectionBatch]:
            task = lg_task(c, tid, seed)
            return lambda purpose, n: task_detection_batch(task, n, snr, c["n_pilots"], seed, f"target-test-{snr}" if purpose == "test" else purpose)

        return "learngene_paper", seed, int(c["n_t"]), [(int(r["train_target"]), base[(r["train_target"], "zf")], base[(r["train_target"], "mmse")], r["ser"], lg_batch(int(r["train_target"]))) for r in t1]
    from studies.sdnet_table1 import _batch

    def t1_batch(tid: int) -> Callable[[str, int], DetectionBatch]:
        def draw(purpose: str, n: int) -> DetectionBatch:
            if purpose == "train":  # the run's own training samples, all of them
                return _batch(cfg, tid, seed, "table1-train", int(cfg["train_samples"]))
            return _batch(cfg, tid, seed, "table1-test" if purpose == "test" else purpose, n)

        return draw

    return "sdnet_table1", seed, int(cfg["n_t"]), [(int(r["train_task"]), r["ser_zf"], r["ser_mmse"], r["ser"], t1_batch(int(r["train_task"]))) for r in t1]


def table1_bounds(run_dir: Path, known: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per matched Table I row of an ``sdnet_table1`` or ``learngene_paper`` run: its SERs
    and the H-blind ML bound over MMSE on the first ``N_ML`` of the run's held-out samples
    of that task (candidate channels: 2,000 other LS estimates of the task). ``known``
    (``"seed-task"``, learngene runs ``"learngene-<scale>-seed-task"`` -> bound) holds bounds
    already computed, and ``"erank_tx:<key>"`` -> the task's ``erank_tx`` on the same
    samples; it gets the new ones. Writes the run's bounds to
    ``RUN_DIR/hblind_bounds.parquet`` (``task_id, hblind_over_mmse, ml_symbols``: the symbols
    the bound was measured on)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    known = {} if known is None else known
    scen = json.loads((run_dir / "scenario.resolved.json").read_text())
    study, seed, n_t, items = _table1_items(run_dir, scen)
    scale = scen["study"].get("scale", "")
    rows = []
    for tid, zf_ser, mmse_ser, sdnet_ser, batch in items:
        key = f"{seed}-{tid}" if study == "sdnet_table1" else f"learngene-{scale}-{seed}-{tid}"
        want_fit = study == "sdnet_table1" and f"fit:{key}" not in known
        if key not in known or f"erank_tx:{key}" not in known or want_fit:
            ml = batch("test", N_ML)[:N_ML]
            mmse, n_sym = baseline_sers(ml)["ser_mmse"], ml.symbols.numel()
            if key not in known:
                known[key] = ser_ratio(ser(hblind_ml_indices(ml, batch("table1-hblind-candidates", 2000).H_ls), ml.symbols), mmse, n_sym)
            known[f"erank_tx:{key}"] = variation_stats(ml.H)["erank_tx"]
            if want_fit:
                known[f"fit:{key}"] = ser_ratio(ser(hblind_fit_indices(ml, batch("train", 0)), ml.symbols), mmse, n_sym)
            _save(TABLE1_BOUNDS_JSON, known)
        rows.append({"study": study, "label": study + (" (learner tasks)" if scen["study"].get("task_kind") == "learner" else "") + (" (redrawn noise)" if scen["study"].get("train_draws") == "per-epoch" else ""), "seed": seed, "task_id": tid, "ser_zf": zf_ser, "ser_mmse": mmse_ser, "ser_sdnet": sdnet_ser,
                     "sdnet_over_mmse": sdnet_ser / mmse_ser if mmse_ser > 0 else float("nan"), "hblind_over_mmse": known[key],
                     "hblind_fit_over_mmse": known.get(f"fit:{key}"), "erank_tx": known[f"erank_tx:{key}"], "ml_symbols": N_ML * n_t})
    pq.write_table(pa.Table.from_pylist([{"task_id": r["task_id"], "hblind_over_mmse": r["hblind_over_mmse"], "ml_symbols": N_ML * n_t} for r in rows]), run_dir / BOUNDS_TABLE)
    return rows


def render_table1_bounds(run_dirs: list[Path]) -> Path:
    known = _load(TABLE1_BOUNDS_JSON, {})
    rows = [row for d in run_dirs for row in table1_bounds(d, known)]
    lines = [
        "# Table I's tasks against the map's statistic",
        "",
        "Generated by `python benchmarks/sdnet_map.py table1` from the `sdnet_table1` runs in",
        "`docs/evidence/sdnet_table1` and the `paper-per-task` `learngene_paper` runs in",
        "`docs/evidence/learngene_paper` (bounds kept in `table1_bounds.json`, and in each run's",
        f"`{BOUNDS_TABLE}`, which the reproduction page's Table I verdicts read); do not edit.",
        "`hblind_over_mmse`: the H-blind ML bound over MMSE on the first 300 held-out samples",
        "of the task (Experiment 7); the map finds SDNet below MMSE at this recipe only where",
        "it is well below 1. `erank_tx`: the effective rank (of n_t) of the task-average",
        "UE-side Gram matrix `E[H^H H]` on the same samples, the channel statistic that orders",
        "the map's tasks as the bound does (`map.md`). `hblind_fit_over_mmse` (`sdnet_table1`",
        "runs): the bound's detector with its covariance fitted from the run's own training",
        "samples' ZF errors (no `H`; 64 real parameters), over MMSE on the same 300 samples.",
        "",
        "| study | seed | task | ZF | MMSE | SDNet | SDNet / MMSE | hblind_over_mmse | hblind_fit_over_mmse | erank_tx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["study"] != "sdnet_table1", r["label"], r["seed"], r["task_id"])):
        fit = "" if r["hblind_fit_over_mmse"] is None else f"{r['hblind_fit_over_mmse']:.2f}"
        lines.append(f"| {r['label']} | {r['seed']} | {r['task_id']} | {_fmt(r['ser_zf'])} | {_fmt(r['ser_mmse'])} | {_fmt(r['ser_sdnet'])} | {r['sdnet_over_mmse']:.2f} | {r['hblind_over_mmse']:.2f} | {fit} | {r['erank_tx']:.2f} |")
    # tasks with fewer than 20 MMSE errors on the bound's symbols carry no ratio worth ranking
    ranked = [r for r in rows if r["ser_mmse"] * r["ml_symbols"] >= 20]
    if len(ranked) >= 3:
        er = [r["erank_tx"] for r in ranked]
        lines += ["", f"Over the {len(ranked)} tasks whose MMSE SER would make at least 20 errors on the bound's {rows[0]['ml_symbols']:,} symbols, Spearman rank correlation of `erank_tx` "
                  f"with `hblind_over_mmse`: {_spearman(er, [r['hblind_over_mmse'] for r in ranked]):+.2f}; with SDNet / MMSE: {_spearman(er, [r['sdnet_over_mmse'] for r in ranked]):+.2f}; "
                  f"of `hblind_over_mmse` with SDNet / MMSE: {_spearman([r['hblind_over_mmse'] for r in ranked], [r['sdnet_over_mmse'] for r in ranked]):+.2f}. "
                  f"SDNet / MMSE is at or above the bound on {sum(r['sdnet_over_mmse'] >= r['hblind_over_mmse'] for r in ranked)} of them."]
    fitted = [r for r in rows if r["hblind_fit_over_mmse"] is not None]
    if fitted:
        lines += ["", f"The fitted detector is below SDNet / MMSE on {sum(r['hblind_fit_over_mmse'] < r['sdnet_over_mmse'] for r in fitted)} of the {len(fitted)} `sdnet_table1` rows, "
                  f"and below MMSE on {sum(r['hblind_fit_over_mmse'] < 1 for r in fitted)} (SDNet: {sum(r['sdnet_over_mmse'] < 1 for r in fitted)})."]
    TABLE1_BOUNDS_MD.write_text("\n".join(lines) + "\n")
    return TABLE1_BOUNDS_MD


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")  # none: render (what `make bench` runs)
    sub.add_parser("screen", help="cheap statistics of task ids 100-399 (resumes)")
    s = sub.add_parser("stats", help="ML bounds of the selected tasks (resumes)")
    s.add_argument("--tasks", type=int, nargs="*")
    t = sub.add_parser("train")
    t.add_argument("--variant", default="b500", choices=sorted(VARIANTS))
    t.add_argument("--tasks", type=int, nargs="*", help="default: map_task_ids of the screened tasks")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    t.add_argument("--ckpt-dir", type=Path, default=None)
    t.add_argument("--seed", type=int, default=0, help="weights, shuffling and training draws (seed > 0: variant name gets -s<seed>)")
    t.add_argument("--no-render", action="store_true", help="leave map.md alone (parallel callers render once at the end)")
    t.add_argument("--branch-from", choices=sorted(VARIANTS), help="start from this variant's checkpoint (same up to its epoch but the learning rate after it); implies --resume")
    pr = sub.add_parser("probe", help="learnability probe of Table I's ZF range, in task-id order, until --need tasks pass")
    pr.add_argument("--need", type=int, default=5)
    pr.add_argument("--jobs", type=int, default=2, help="parallel single-thread training processes")
    sub.add_parser("render")
    hs = sub.add_parser("hswap", help="held-out SER of every checkpointed training with another sample's H_LS in the input -> hswap.json")
    hs.add_argument("--ckpt-dir", type=Path, default=None)
    tb = sub.add_parser("table1", help="the H-blind bound of each Table I task of sdnet_table1 runs -> table1_bounds.md")
    tb.add_argument("run_dirs", nargs="*", type=Path, help="default: the runs in docs/evidence/sdnet_table1")
    a = ap.parse_args()
    a.cmd = a.cmd or "render"
    torch.set_num_threads(1)
    if a.cmd == "render":
        print(render())
        return
    if a.cmd == "hswap":
        hswap(a.ckpt_dir or cache_root() / "sdnet_map")
        print(render())
        return
    if a.cmd == "table1":
        dirs = a.run_dirs or default_table1_runs()
        print(render_table1_bounds(dirs))
        return
    stats = _load(TASKS_JSON, [])
    if a.cmd == "screen":
        have = {r["task_id"] for r in stats}
        for tid in SCREEN_IDS:
            if tid not in have:
                stats.append(screen_task(tid))
                stats.sort(key=lambda r: r["task_id"])
                _save(TASKS_JSON, stats)
        print(json.dumps({"screened": len(stats), "map_task_ids": map_task_ids(stats)}))
        return
    if not stats:
        raise SystemExit("run `benchmarks/sdnet_map.py screen` first")
    if a.cmd == "stats":
        by = {r["task_id"]: r for r in stats}
        for tid in a.tasks or map_task_ids(stats):
            if "ser_ml_ls" not in by[tid]:
                t0 = time.perf_counter()
                by[tid].update(ml_stats(tid))
                _save(TASKS_JSON, stats)
                print(json.dumps({"task_id": tid, "ser_ml_ls": by[tid]["ser_ml_ls"], "ser_hblind_ml": by[tid]["ser_hblind_ml"], "s": round(time.perf_counter() - t0, 1)}), flush=True)
        for tid in sorted(t for t, r in by.items() if "ser_ml_ls" in r and "ser_hblind_fit" not in r):
            t0 = time.perf_counter()
            by[tid].update(fit_stats(tid))
            _save(TASKS_JSON, stats)
            print(json.dumps({"task_id": tid, "ser_hblind_fit": by[tid]["ser_hblind_fit"], "s": round(time.perf_counter() - t0, 1)}), flush=True)
        render()
        return
    if a.cmd == "probe":
        probe(stats, a.jobs, a.need)
        render()
        return
    ckpt_dir = a.ckpt_dir or cache_root() / "sdnet_map"
    v = VARIANTS[a.variant]
    if a.seed:
        v = replace(v, seed=a.seed, name=f"{v.name}-s{a.seed}")
    for tid in a.tasks or map_task_ids(stats):
        if a.branch_from:
            branch_checkpoint(tid, v, VARIANTS[a.branch_from], ckpt_dir)
        train_case(tid, v, a.epochs, ckpt_dir, a.resume or bool(a.branch_from))
    if not a.no_render:
        render()


if __name__ == "__main__":
    sys.exit(main())
