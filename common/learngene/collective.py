"""The manufacturer's collective model: sequential training, gradient significance, extraction.

Paper: Zhang et al. 2025, Sec. IV-E and V-B. A collective SDNet of depth ``n_conv``
(paper 12) is trained on ``K`` channel tasks one after another (paper: 50 tasks x 50
epochs, batch 500, Adam 1e-3, SNR 25 dB). After the last epoch of every task, the
gradient of the task's MSE loss over its whole training set (eq. 19, BN in eval mode so
the gradient is that of the deployed function) gives each layer's gradient
significance ``rho_k^l``: the fraction of its parameters (weights and bias) whose
gradient magnitude exceeds ``epsilon`` (eq. 20, ``tau``). The loss differentiated here
is the per-element mean squared error (Keras' ``mse``, which the paper's implementation
used and against which its ``tau = 1e-4`` was set), i.e. eq. (13) divided by ``2 n_t``;
training itself minimises eq. (13) (Adam is insensitive to that constant factor).

The unit is chosen from the significance table by ``common.learngene.significance``.

Each task is trained with a fresh Adam optimiser by ``common.learngene.training.finetune`` (the
same loop a device runs), the model carrying over from task to task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from common.fingerprint import code_fingerprint
from common.learngene.training import TRAIN_DRAWS, Redraw, conv_fast_layout, evaluate_ser, finetune, mse_loss
from common.channels import ChannelTask
from common.channels.cache import cached_channels
from common.learngene.significance import select_unit_layers, significance_from_gradients
from common.learngene.expansion import unit_source_layers
from common.learngene.unit import LearngeneUnit, extract_unit, read_array_file, write_array_file
from common.models.sdnet import SDNet
from common.npz_files import load_model_arrays, model_arrays, read_npz, write_npz
from common.phy.dataset import DetectionBatch, make_detection_batch
from common.progress import ProgressFn
from common.seeding import derive_seed, torch_generator

if TYPE_CHECKING:
    from common.scenario import Scenario

__all__ = [
    "COLLECTIVE_VERSION",
    "TRAINING_CODE",
    "CollectiveConfig",
    "CollectiveResult",
    "collective_config",
    "task_detection_batch",
    "train_collective",
    "load_or_train_collective",
    "read_collective",
    "unit_for_strategy",
]

_log = logging.getLogger(__name__)

#: bump when training or selection changes, so cached results are not reused
COLLECTIVE_VERSION: int = 3
#: packages/modules whose source is part of the cache key (any edit retrains)
TRAINING_CODE: tuple[str, ...] = ("common.learngene", "common.models.sdnet", "common.phy", "common.channels", "common.seeding")


@dataclass(frozen=True)
class CollectiveConfig:
    """Settings of the collective training (Table III, "Collective Model" column).

    Attributes
    ----------
    tasks : tuple of ChannelTask
        The sequential tasks, in training order; all share ``n_rx`` and ``n_tx``.
    n_conv : int, default 12
    samples_per_task : int, default 2000
        Training samples drawn per task (paper: 8,100).
    epochs_per_task : int, default 2
        Paper: 50.
    batch_size : int, default 500
    lr : float, default 1e-3
    snr_db : float, default 25.0
    epsilon : float, default 1e-4
        Threshold ``tau`` of eq. (20).
    unit_layers : int, default 4
        Layers in the learngene unit.
    n_pilots : int, default 16
    val_samples : int, default 500
        Per-task validation samples for the history table's SER.
    seed : int, default 0
    train_draws : {"fixed", "per-epoch"}, default "fixed"
        "fixed": each task's samples drawn once (the paper's). "per-epoch": fresh symbols,
        pilots and noise every epoch over the task's same channels
        (``common.learngene.training.Redraw``, its generator seeded by ``(seed, k)``).
    """

    tasks: tuple[ChannelTask, ...]
    n_conv: int = 12
    samples_per_task: int = 2000
    epochs_per_task: int = 2
    batch_size: int = 500
    lr: float = 1e-3
    snr_db: float = 25.0
    epsilon: float = 1e-4
    unit_layers: int = 4
    n_pilots: int = 16
    val_samples: int = 500
    seed: int = 0
    train_draws: str = "fixed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise ValueError("CollectiveConfig.tasks must not be empty")
        if len({(t.n_rx, t.n_tx) for t in self.tasks}) != 1:
            raise ValueError("all collective tasks must share n_rx and n_tx")
        if not 1 <= self.unit_layers <= self.n_conv:
            raise ValueError(f"unit_layers must be in 1..n_conv={self.n_conv}, got {self.unit_layers}")
        if min(self.samples_per_task, self.epochs_per_task, self.batch_size, self.val_samples) < 1:
            raise ValueError("samples_per_task, epochs_per_task, batch_size and val_samples must be >= 1")
        if not (self.lr > 0 and self.epsilon > 0):
            raise ValueError("lr and epsilon must be positive")
        if self.train_draws not in TRAIN_DRAWS:
            raise ValueError(f"train_draws must be one of {TRAIN_DRAWS}, got {self.train_draws!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"] = [t.to_dict() for t in self.tasks]
        return d

    def config_hash(self) -> str:
        """sha256 (first 16 hex) of the settings, ``COLLECTIVE_VERSION`` and the source of
        the code that trains (``TRAINING_CODE``, ``common.fingerprint``)."""
        text = json.dumps({"v": COLLECTIVE_VERSION, "code": code_fingerprint(*TRAINING_CODE), **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def collective_config(scenario: Scenario) -> CollectiveConfig:
    """The collective training a fleet scenario asks for: its ``[manufacturer]`` table, the
    ``[channels]`` defaults (task ids ``0 .. tasks-1``) and its seed."""
    m, ch = scenario.data["manufacturer"], scenario.data["channels"]
    return CollectiveConfig(
        tasks=tuple(scenario.channel_task(t, int(ch["n_rx"]), int(ch["n_tx"])) for t in range(int(m["tasks"]))),
        n_conv=int(m["n_conv"]),
        samples_per_task=int(m["samples_per_task"]),
        epochs_per_task=int(m["epochs_per_task"]),
        batch_size=int(m["batch_size"]),
        lr=float(m["lr"]),
        snr_db=float(ch["snr_db"]),
        epsilon=float(m["epsilon"]),
        unit_layers=int(m["unit_layers"]),
        n_pilots=int(ch["n_pilots"]),
        seed=scenario.seed,
        train_draws=str(m["train_draws"]),
    )


@dataclass
class CollectiveResult:
    """Outcome of ``train_collective``.

    Attributes
    ----------
    model : SDNet
        The collective model after the last task.
    unit : LearngeneUnit
        The extracted learngene.
    significance : pa.Table
        One row per (task, layer): ``task`` (int, order k), ``task_id``, ``layer`` (int:
        0 first conv, 1..n_conv significant, n_conv+1 last conv, n_conv+2 FC),
        ``layer_name``, ``candidate`` (bool), ``significance`` (eq. 20),
        ``mean_abs_grad``, ``n_params``.
    history : pa.Table
        One row per (task, epoch): ``task``, ``task_id``, ``epoch``, ``loss``, ``val_ser``
        (``val_ser`` only at a task's last epoch, NaN elsewhere).
    selected_layers : list of int
    from_cache : bool
    """

    model: SDNet
    unit: LearngeneUnit
    significance: pa.Table
    history: pa.Table
    selected_layers: list[int]
    from_cache: bool = False


def task_detection_batch(
    task: ChannelTask, n: int, snr_db: float, n_pilots: int, seed: int, purpose: str, channel_cache: Path | None = None
) -> DetectionBatch:
    """``n`` detection samples of ``task``; the channel draw and the symbol/noise draw both
    derive from ``(seed, purpose, task)``. Channels come from the channel cache
    (``channel_cache``; None: ``common.channels.cache.default_cache_dir()``)."""
    key = (purpose, task.spec_hash())
    H = cached_channels(task, n, derive_seed(seed, "channels", *key), cache_dir=channel_cache)
    return make_detection_batch(H, snr_db, n_pilots, torch_generator(seed, "symbols", *key))


def _task_checkpoint(d: Path, k: int) -> Path:
    return d / f"task-{k:03d}.npz"


def _resume_tasks(cfg: CollectiveConfig, model: SDNet, d: Path) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    """Load the longest run of completed tasks ``0 .. k-1`` checkpointed in ``d`` for this
    configuration: the model after task ``k-1`` goes into ``model``; returns ``k`` and the
    significance and history rows of those tasks. A damaged or foreign file ends the run
    (that task and the ones after it are trained again)."""
    sig: list[dict[str, Any]] = []
    hist: list[dict[str, Any]] = []
    k = 0
    while k < len(cfg.tasks) and (path := _task_checkpoint(d, k)).is_file():
        try:
            arrays, header = read_npz(path)
        except ValueError as e:
            _log.warning("%s; training collective task %d again", e, k)
            break
        if not isinstance(header, dict) or header.get("hash") != cfg.config_hash():
            break
        load_model_arrays(model, arrays)
        sig, hist, k = sig + header["significance"], hist + header["history"], k + 1
    return k, sig, hist


def train_collective(
    cfg: CollectiveConfig,
    progress: ProgressFn | None = None,
    device: str | torch.device = "cpu",
    channel_cache: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> CollectiveResult:
    """Sequentially train the collective SDNet on ``cfg.tasks`` and extract the learngene.

    ``device`` only changes where the arithmetic runs (the result is returned on the CPU);
    it is not part of the config hash. ``checkpoint_dir``: after each task the model and
    that task's rows are written there (``task-<k>.npz``, atomically); a later call with the
    same configuration resumes after the last completed task. Each task's optimiser is fresh
    and its shuffling seeded by ``(seed, k)``, so a resumed training equals an
    uninterrupted one.
    """
    t0 = cfg.tasks[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "collective", "init"))
        model = SDNet(t0.n_rx, t0.n_tx, cfg.n_conv)
    K = len(cfg.tasks)
    start, sig_rows, hist_rows = (0, [], []) if checkpoint_dir is None else _resume_tasks(cfg, model, checkpoint_dir)
    if start and progress is not None:
        progress("collective", start, K)
    model.to(device)
    for k, task in enumerate(cfg.tasks):
        if k < start:
            continue
        n_sig, n_hist = len(sig_rows), len(hist_rows)
        train = task_detection_batch(task, cfg.samples_per_task, cfg.snr_db, cfg.n_pilots, cfg.seed, "collective-train", channel_cache)
        val = task_detection_batch(task, cfg.val_samples, cfg.snr_db, cfg.n_pilots, cfg.seed, "collective-val", channel_cache)
        res = finetune(
            model,
            train,
            epochs=cfg.epochs_per_task,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            generator=torch_generator(cfg.seed, "collective", "shuffle", k),
            record_last_epoch_gradient=True,
            redraw=Redraw.per(cfg.train_draws, cfg.n_pilots, torch_generator(cfg.seed, "collective", "redraw", k)),
        )
        val_ser = evaluate_ser(model, val)
        for e, loss in enumerate(res.loss_per_epoch):
            last = e == len(res.loss_per_epoch) - 1
            hist_rows.append({"task": k, "task_id": task.task_id, "epoch": e, "loss": loss, "val_ser": val_ser if last else float("nan")})
        # eq. (19)-(20) at the task's final epoch (Sec. V-B: "the gradient significance of
        # the final epoch in each task is recorded")
        for r in significance_from_gradients(model, res.last_epoch_gradient, cfg.epsilon):
            sig_rows.append({"task": k, "task_id": task.task_id, **r})
        if checkpoint_dir is not None:
            header = {"hash": cfg.config_hash(), "significance": sig_rows[n_sig:], "history": hist_rows[n_hist:]}
            write_npz(_task_checkpoint(checkpoint_dir, k), model_arrays(model), header)
        if progress is not None:
            progress("collective", k + 1, K)
    model.cpu()
    significance = pa.Table.from_pylist(sig_rows)
    rho = np.array([[r["significance"] for r in sig_rows if r["task"] == k and r["candidate"]] for k in range(K)])
    ids, stats = select_unit_layers(rho, cfg.unit_layers)
    unit = extract_unit(
        model,
        ids,
        config_hash=cfg.config_hash(),
        n_tasks=K,
        epsilon=cfg.epsilon,
        significance_late_mean=float(stats["late_mean"]),
        significance_slope=float(stats["slope"]),
        significance_last_task=[float(x) for x in rho[-1, [i - 1 for i in ids]]],
    )
    return CollectiveResult(model, unit, significance, pa.Table.from_pylist(hist_rows), ids)


def _save(res: CollectiveResult, cfg: CollectiveConfig, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_array_file(d / "model.bin", model_arrays(res.model), {"config": cfg.to_dict(), "hash": cfg.config_hash()})
    res.unit.save(d / "unit.bin")
    pq.write_table(res.significance, d / "significance.parquet")
    pq.write_table(res.history, d / "history.parquet")


def read_collective(d: Path, expect_hash: str | None = None) -> CollectiveResult:
    """The collective model saved in ``d`` (``cache_dir/collective-<hash>/``).

    ``expect_hash``: refuse (``ValueError``) a model another configuration or training code
    wrote. None accepts whichever wrote it: a finished run's own collective, read back for a
    follow-up experiment after the training code changed (``benchmarks/learngene_positions.py``).
    """
    arrays, meta = read_array_file(d / "model.bin")
    if expect_hash is not None and meta.get("hash") != expect_hash:
        raise ValueError("cached collective model belongs to another configuration")
    t0, n_conv = meta["config"]["tasks"][0], int(meta["config"]["n_conv"])
    model = SDNet(int(t0["n_rx"]), int(t0["n_tx"]), n_conv)
    load_model_arrays(model, arrays)
    unit = LearngeneUnit.load(d / "unit.bin")
    if unit.meta.get("config_hash") != meta.get("hash"):
        raise ValueError("cached learngene unit belongs to another configuration than its model")
    sig = pq.read_table(d / "significance.parquet")
    hist = pq.read_table(d / "history.parquet")
    return CollectiveResult(model, unit, sig, hist, [int(i) for i in unit.meta["layer_ids"]], from_cache=True)


def load_or_train_collective(
    cfg: CollectiveConfig,
    cache_dir: Path | None,
    progress: ProgressFn | None = None,
    device: str | torch.device = "cpu",
    channel_cache: Path | None = None,
) -> CollectiveResult:
    """``train_collective`` behind a cache at ``cache_dir/collective-<config_hash>/``.

    A missing or unreadable cache entry (corrupt file, hash mismatch) is retrained and
    rewritten; ``cache_dir=None`` always trains. While training, each completed task is
    checkpointed in ``cache_dir/collective-<config_hash>.tasks/`` (removed once the entry
    is written), so a training stopped part-way resumes at its next task.
    ``channel_cache``: where the tasks' channels are cached (None: the default channel
    cache).
    """
    if cache_dir is None:
        return train_collective(cfg, progress, device, channel_cache)
    d = Path(cache_dir) / f"collective-{cfg.config_hash()}"
    if d.exists():
        try:
            return read_collective(d, cfg.config_hash())
        except (OSError, ValueError, KeyError, RuntimeError, pa.ArrowException) as e:
            _log.warning("collective model cache %s unreadable (%s); retraining", d, e)
    tasks_dir = d.with_name(d.name + ".tasks")
    res = train_collective(cfg, progress, device, channel_cache, checkpoint_dir=tasks_dir)
    _save(res, cfg, d)
    shutil.rmtree(tasks_dir, ignore_errors=True)
    return res


def unit_for_strategy(result: CollectiveResult, strategy: str) -> LearngeneUnit:
    """The unit a device gets under expansion ``strategy`` (``common.learngene.expansion``):
    the selected unit for ``X-embed``; segment ``X`` of the collective model, cut with the
    selected unit's provenance metadata, for ``X-inherit`` (the selected unit itself when
    the rule chose segment ``X``). Shared by the learngene study and the fleet's server."""
    layers = unit_source_layers(strategy, result.selected_layers, result.model.n_conv)
    if layers == list(result.selected_layers):
        return result.unit
    keep = ("config_hash", "n_tasks", "epsilon")
    return extract_unit(result.model, layers, **{k: result.unit.meta[k] for k in keep if k in result.unit.meta})
