"""Collective training: gradient significance (eq. 19-20), the selection rule, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.channels import ChannelTask, sample_channels
from common.models.sdnet import SDNet
from common.phy import make_detection_batch
from common.learngene.collective import CollectiveConfig, load_or_train_collective
from common.learngene.significance import gradient_significance, select_unit_layers



def _batch(n: int = 200) -> object:
    H = sample_channels(ChannelTask.make("rayleigh", 4, 2), n, 0)
    return make_detection_batch(H, 15.0, generator=torch.Generator().manual_seed(0))


def test_gradient_significance_on_a_constructed_case() -> None:
    torch.manual_seed(0)
    m = SDNet(4, 2, 3)
    b = _batch()
    with torch.no_grad():
        m.fc.weight.zero_()  # no gradient can reach any conv layer
    rows = {r["layer_name"]: r for r in gradient_significance(m, b, epsilon=0.0)}
    for i in range(5):
        assert rows[f"convs.{i}"]["significance"] == 0.0 and rows[f"convs.{i}"]["mean_abs_grad"] == 0.0
    assert [rows[f"convs.{i}"]["candidate"] for i in range(5)] == [False, True, True, True, False]
    assert rows["fc"]["n_params"] == 9 * 4 * 4 + 4 and not rows["fc"]["candidate"]
    # fc gets gradients; with a threshold the fraction is the fraction of |grad| > tau, eq. (20)
    torch.manual_seed(0)
    m2 = SDNet(4, 2, 3)
    out = (m2.eval()(b.sdnet_input) - b.x).pow(2).mean()  # per-element MSE (Keras convention)
    g = torch.autograd.grad(out, [m2.convs[2].weight, m2.convs[2].bias])
    g = torch.cat([x.abs().flatten() for x in g])
    gs = g.sort().values
    k = len(gs) // 2
    tau = float(gs[k] + gs[k + 1]) / 2  # midway between two gradients: robust to summation order
    r = {x["layer_name"]: x for x in gradient_significance(m2, b, epsilon=tau)}
    assert r["convs.2"]["significance"] == pytest.approx(float((g > tau).float().mean()), abs=1e-6)
    assert 0.4 < r["convs.2"]["significance"] < 0.6
    assert rows["fc"]["significance"] > 0.5


def test_selection_rule_picks_the_lowest_falling_block() -> None:
    K, L = 6, 8
    rho = np.full((K, L), 0.9)
    rho[:, 4:8] = np.linspace(0.8, 0.1, K)[:, None]  # layers 5-8 fall to low significance
    ids, stats = select_unit_layers(rho, 4)
    assert ids == [5, 6, 7, 8] and stats["slope"] < 0
    # a flat low block beats a falling block that ends higher
    rho2 = np.full((K, L), 0.9)
    rho2[:, 0:4] = 0.05
    assert select_unit_layers(rho2, 4)[0] == [1, 2, 3, 4]
    # all equal: the deepest block (the paper's finding breaks ties)
    assert select_unit_layers(np.ones((3, 12)), 4)[0] == [9, 10, 11, 12]
    with pytest.raises(ValueError):
        select_unit_layers(np.ones((3, 3)), 4)


def test_collective_runs_and_the_cache_hits(tmp_path: Path) -> None:
    tasks = [ChannelTask.make("gbsm", 4, 2, k, 0) for k in range(2)]
    cfg = CollectiveConfig(tasks=tasks, n_conv=5, samples_per_task=150, epochs_per_task=1, batch_size=50, unit_layers=2, val_samples=50, seed=3)
    seen: list[tuple[str, int, int]] = []
    r1 = load_or_train_collective(cfg, tmp_path, progress=lambda *a: seen.append(a))
    assert not r1.from_cache and seen[-1] == ("collective", 2, 2)
    assert r1.significance.num_rows == 2 * (5 + 3)
    assert len(r1.selected_layers) == 2 and r1.unit.meta["layer_ids"] == r1.selected_layers
    assert r1.unit.meta["config_hash"] == cfg.config_hash()
    r2 = load_or_train_collective(cfg, tmp_path)
    assert r2.from_cache and r2.unit.meta["content_hash"] == r1.unit.meta["content_hash"]
    assert all(torch.equal(a, b) for a, b in zip(r1.model.state_dict().values(), r2.model.state_dict().values()))
    assert r2.significance.equals(r1.significance)
    # same seed -> same training (no cache)
    r3 = load_or_train_collective(cfg, None)
    assert r3.unit.meta["content_hash"] == r1.unit.meta["content_hash"]
    # a corrupt cache entry is retrained, not trusted
    f = tmp_path / f"collective-{cfg.config_hash()}" / "model.bin"
    f.write_bytes(f.read_bytes()[:-10])
    r4 = load_or_train_collective(cfg, tmp_path)
    assert not r4.from_cache and load_or_train_collective(cfg, tmp_path).from_cache
    # another config -> another key
    assert CollectiveConfig(tasks=tasks, n_conv=5, seed=4).config_hash() != CollectiveConfig(tasks=tasks, n_conv=5, seed=3).config_hash()
    with pytest.raises(ValueError):
        CollectiveConfig(tasks=[ChannelTask.make("gbsm", 4, 2), ChannelTask.make("gbsm", 8, 2)])


def test_a_stopped_collective_training_resumes_at_its_next_task(tmp_path: Path) -> None:
    """Per-task checkpoints: a training that stopped after task 1 of 3 (the later files
    gone) and is run again trains tasks 2 and 3 only, and ends bit for bit where an
    uninterrupted one does; a damaged checkpoint is trained again, never trusted."""
    from common.learngene.collective import train_collective

    tasks = [ChannelTask.make("gbsm", 4, 2, k, 0) for k in range(3)]
    cfg = CollectiveConfig(tasks=tasks, n_conv=4, samples_per_task=100, epochs_per_task=2, batch_size=50, unit_layers=2, val_samples=50, seed=5)
    whole = train_collective(cfg)
    ck = tmp_path / "tasks"
    train_collective(cfg, checkpoint_dir=ck)
    assert sorted(p.name for p in ck.glob("*.npz")) == ["task-000.npz", "task-001.npz", "task-002.npz"]
    (ck / "task-002.npz").unlink()
    (ck / "task-001.npz").write_bytes((ck / "task-001.npz").read_bytes()[:-20])  # damaged: retrained
    seen: list[tuple[str, int, int]] = []
    resumed = train_collective(cfg, progress=lambda *a: seen.append(a), checkpoint_dir=ck)
    assert seen == [("collective", 1, 3), ("collective", 2, 3), ("collective", 3, 3)]
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    assert resumed.significance.equals(whole.significance)
    assert str(resumed.history.to_pylist()) == str(whole.history.to_pylist())  # NaN != NaN for Table.equals
    assert resumed.unit.meta["content_hash"] == whole.unit.meta["content_hash"]
    # another configuration's checkpoints are not picked up
    other = CollectiveConfig(tasks=tasks, n_conv=4, samples_per_task=100, epochs_per_task=1, batch_size=50, unit_layers=2, val_samples=50, seed=5)
    seen.clear()
    train_collective(other, progress=lambda *a: seen.append(a), checkpoint_dir=ck)
    assert seen[0] == ("collective", 1, 3)


def test_final_epoch_gradient_is_eq19_over_the_task_data() -> None:
    """With one full batch and a vanishing step the recorded final-epoch gradient is the
    gradient of the per-element MSE over all of D_k in train mode (eq. 19)."""
    import copy

    from common.learngene.training import finetune, mse_loss
    from common.learngene.significance import significance_from_gradients

    g = torch.Generator().manual_seed(11)
    H = torch.complex(torch.randn(64, 4, 2, generator=g), torch.randn(64, 4, 2, generator=g))
    b = make_detection_batch(H, 20.0, 4, g)
    torch.manual_seed(0)
    m = SDNet(4, 2, 3)
    ref = copy.deepcopy(m).train()
    (mse_loss(ref(b.sdnet_input), b.x) / b.x.shape[1]).backward()
    res = finetune(m, b, epochs=2, batch_size=len(b), lr=1e-12, record_last_epoch_gradient=True)
    for k, p in ref.named_parameters():
        assert torch.allclose(res.last_epoch_gradient[k], p.grad, rtol=1e-3, atol=1e-6), k  # conv biases before BN: ~0 up to rounding
    rows = significance_from_gradients(m, res.last_epoch_gradient, 0.0)
    assert [r["layer_name"] for r in rows] == ["convs.0", "convs.1", "convs.2", "convs.3", "convs.4", "fc"]
    assert not finetune(m, b, epochs=1, batch_size=len(b), lr=1e-3).last_epoch_gradient


def test_per_epoch_draws_redraw_each_collective_task_over_its_own_channels_and_resume_exactly(tmp_path: Path, record_redraws) -> None:
    """``train_draws = "per-epoch"``: one redraw per epoch of every task, each over that
    task's own training channels; a stopped training resumes to the uninterrupted one (each
    task's redraw generator is seeded by ``(seed, k)``); a different key, another cache."""
    from common.learngene.collective import task_detection_batch, train_collective

    tasks = [ChannelTask.make("gbsm", 4, 2, k, 0) for k in range(2)]
    fixed = CollectiveConfig(tasks=tasks, n_conv=4, samples_per_task=100, epochs_per_task=2, batch_size=50, unit_layers=2, val_samples=50, seed=5)
    cfg = CollectiveConfig(**{**fixed.__dict__, "train_draws": "per-epoch"})
    assert cfg.config_hash() != fixed.config_hash()
    with record_redraws() as seen:
        whole = train_collective(cfg)
    own = [task_detection_batch(t, 100, cfg.snr_db, cfg.n_pilots, cfg.seed, "collective-train").H for t in tasks]
    assert len(seen) == 4 and all(torch.equal(H, own[i // 2]) for i, H in enumerate(seen))
    with record_redraws() as none:
        base = train_collective(fixed)
    assert none == [] and not torch.equal(base.model.fc.weight, whole.model.fc.weight)
    ck = tmp_path / "tasks"
    train_collective(cfg, checkpoint_dir=ck)
    (ck / "task-001.npz").unlink()
    resumed = train_collective(cfg, checkpoint_dir=ck)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    with pytest.raises(ValueError, match="train_draws"):
        CollectiveConfig(tasks=tasks, train_draws="sometimes")
