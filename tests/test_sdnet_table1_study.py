"""The sdnet_table1 study (issue #21 item 2) at a tiny size: tables, resume mid-task, scenario."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from common.schema import ScenarioError
from studies import load_study_scenario, no_progress, parse_study
from studies import sdnet_table1 as study

TINY = {k: f.default for k, f in study.SCHEMA.items()} | dict(
    n_r=4, n_t=2, n_conv=2, snr_db=5.0, tasks=[100, 101], train_samples=200, test_samples=100, epochs=4, batch_size=50, chunk_epochs=2, jobs=1,
)


def _tables(d: Path) -> dict[str, str]:
    return {n: json.dumps(pq.read_table(d / f"{n}.parquet").to_pylist()) for n in ("table1", "ser_epoch")}


def test_tiny_table1_rows_baselines_and_a_task_resumed_mid_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = tmp_path / "full"
    s = study.run(dict(TINY), 3, full, no_progress)
    t1 = pq.read_table(full / "table1.parquet").to_pylist()
    assert len(t1) == 4 and sum(r["matched"] for r in t1) == 2  # 2 tasks x 2 test tasks
    # the ZF / MMSE columns are those of the test task, whoever trained the model
    for j in (100, 101):
        assert len({(r["ser_zf"], r["ser_mmse"]) for r in t1 if r["test_task"] == j}) == 1
    ep = pq.read_table(full / "ser_epoch.parquet").to_pylist()
    assert [r["epoch"] for r in ep if r["task_id"] == 100] == [0, 2, 4]
    assert s["tasks"] == [100, 101] and len(s["per_task"]) == 2 and s["tasks_from_work"] == 0
    assert s["per_task"][0]["ratio_mmse"] == pytest.approx(s["per_task"][0]["ser"] / s["per_task"][0]["ser_mmse"])
    assert [p.name for p in study.report(full)] == ["ser_epoch.png"]
    # ser_train: the kept model on the very samples it was trained on, not the held-out ones
    for p in s["per_task"]:
        model = study.SDNet(4, 2, 2)
        study.load_model_arrays(model, study.WorkUnits(full).load(f"task{p['task_id']}")[1])
        train = study._batch(TINY, p["task_id"], 3, "table1-train", TINY["train_samples"])
        assert p["ser_train"] == study.evaluate_ser(model, train) and p["ser_train"] != p["ser"]

    # stopped after task 100 and half of task 101: the second run trains two epochs, no more
    part = tmp_path / "part"
    study.run(dict(TINY) | {"tasks": [100]}, 3, part, no_progress)
    study.run(dict(TINY) | {"tasks": [101], "epochs": 2}, 3, part, no_progress)
    (part / "work" / "task101.npz").unlink()  # the 2-epoch run completed it; the 4-epoch one resumes its partial
    calls: list[int] = []
    real = study.finetune

    def counting(*a: object, **k: object) -> object:
        calls.append(int(k["epochs"]))
        return real(*a, **k)

    monkeypatch.setattr(study, "finetune", counting)
    s2 = study.run(dict(TINY), 3, part, no_progress)
    assert calls == [2] and s2["tasks_from_work"] == 1
    assert _tables(part) == _tables(full)


def test_a_run_extended_to_more_epochs_equals_one_longer_run_and_does_not_screen_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed with more epochs, each completed task goes on from its last checkpoint: two
    more epochs each, and the tables of one 4-epoch run. The rule's screen is a unit of
    work too, so the resumed run does not screen again."""
    cfg = dict(TINY) | {"tasks": [], "n_tasks": 2, "zf_range": [0.0, 1.0]}
    full, ext = tmp_path / "full", tmp_path / "ext"
    study.run(dict(cfg), 3, full, no_progress)
    short = study.run(cfg | {"epochs": 2}, 3, ext, no_progress)
    assert [p["epochs"] for p in short["per_task"]] == [2, 2]
    calls: list[int] = []
    real = study.finetune

    def counting(*a: object, **k: object) -> object:
        calls.append(int(k["epochs"]))
        return real(*a, **k)

    def no_screen(*a: object, **k: object) -> object:
        raise AssertionError("screened again")

    monkeypatch.setattr(study, "finetune", counting)
    monkeypatch.setattr(study, "select_tasks", no_screen)
    s = study.run(dict(cfg), 3, ext, no_progress)
    assert calls == [2, 2] and [p["epochs"] for p in s["per_task"]] == [4, 4]
    assert _tables(ext) == _tables(full)
    assert pq.read_table(ext / "screen.parquet").to_pylist() == pq.read_table(full / "screen.parquet").to_pylist()


def test_the_rule_picks_the_first_tasks_whose_zf_ser_is_in_range() -> None:
    cfg = dict(TINY) | {"tasks": [], "n_tasks": 2, "first_task_id": 100, "zf_range": [0.02, 0.3], "test_samples": 200}
    picked, rows = study.select_tasks(cfg, 3)
    # an independent ZF: the pseudo-inverse of H_LS applied to y, the nearest QPSK point
    zf_ser = {}
    for r in rows:
        b = study._batch(cfg, r["task_id"], 3, "table1-test", cfg["test_samples"])
        x = (torch.linalg.pinv(b.H_ls) @ b.y.unsqueeze(-1)).squeeze(-1)
        idx = 2 * (x.real < 0).long() + (x.imag < 0).long()
        zf_ser[r["task_id"]] = (idx != b.symbols).sum().item() / b.symbols.numel()
    assert [r["task_id"] for r in rows] == list(range(100, 100 + len(rows)))
    assert picked == [t for t, z in zf_ser.items() if 0.02 <= z <= 0.3][:2] and len(picked) == 2
    assert rows[-1]["task_id"] == picked[-1]  # it stops at the n-th task in range
    for r in rows:
        assert r["ser_zf"] == pytest.approx(zf_ser[r["task_id"]], abs=1e-9)
    with pytest.raises(ValueError, match="only 0 of 2 task ids"):
        study.select_tasks(cfg | {"zf_range": [0.9, 0.95], "max_screened": 3}, 3)


def test_scenario_uses_the_paper_recipe_and_bad_tables_name_the_key() -> None:
    sc = load_study_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "sdnet_table1.toml")
    st = sc.data["study"]
    assert st["kind"] == "sdnet_table1" and st["tasks"] == [] and st["n_tasks"] == 5 and st["zf_range"] == [0.065, 0.126]
    assert (st["n_r"], st["n_t"], st["batch_size"], st["train_samples"], st["lr"], st["epochs"]) == (32, 8, 500, 8100, 1e-3, 50)
    with pytest.raises(ScenarioError, match="study.zf_range"):
        parse_study({"name": "x", "seed": 1, "study": {"kind": "sdnet_table1", "zf_range": [0.2, 0.1]}})
    with pytest.raises(ScenarioError, match="study.tasks"):
        parse_study({"name": "x", "seed": 1, "study": {"kind": "sdnet_table1", "tasks": [1, 1]}})


def _fit_over_mmse_by_enumeration(cfg: dict, task_id: int, seed: int) -> float:
    """An oracle that shares no code with the rule's pruned search: the ZF-error covariance
    in numpy, then every one of the 4**n_t QPSK vectors scored by its Mahalanobis distance
    from x_ZF; the fitted H-blind SER over MMSE's, both on the task's training samples."""
    import itertools

    import numpy as np

    from common.phy.metrics import baseline_sers
    from common.phy.modulation import qpsk_constellation

    b = study._batch(cfg, task_id, seed, "table1-train", cfg["train_samples"])
    pts = qpsk_constellation().numpy().astype(np.complex128)
    x_zf, idx = b.x_zf.numpy().astype(np.complex128), b.symbols.numpy()
    e = x_zf - pts[idx]
    c_inv = np.linalg.inv(e.T @ e.conj() / len(e))
    cands = np.array(list(itertools.product(range(4), repeat=idx.shape[1])))
    d = x_zf[:, None, :] - pts[cands][None]  # [n, 4**n_t, n_t]
    best = cands[np.einsum("nki,ij,nkj->nk", d.conj(), c_inv, d).real.argmin(1)]
    return float((best != idx).mean()) / max(baseline_sers(b)["ser_mmse"], 1.0 / idx.size)


def test_the_learner_rule_keeps_only_tasks_whose_fitted_hblind_detector_is_far_below_mmse() -> None:
    cfg = dict(TINY) | {"tasks": [], "n_tasks": 2, "zf_range": [0.0, 1.0], "train_samples": 300, "test_samples": 100, "task_kind": "learner"}
    q = {t: _fit_over_mmse_by_enumeration(cfg, t, 3) for t in range(100, 116)}
    line = (q[100] + q[101]) / 2  # one of the first two tasks fails the line
    picked, rows = study.select_tasks(cfg | {"learner_bound": line}, 3)
    assert picked == [t for t, v in q.items() if v <= line][:2] and len(picked) == 2
    assert [r["picked"] for r in rows] == [q[r["task_id"]] <= line for r in rows] and not all(r["picked"] for r in rows)
    for r in rows:
        assert r["fit_over_mmse"] == pytest.approx(q[r["task_id"]], rel=1e-6)
    # the ZF-range rule alone takes the first two ids
    assert study.select_tasks(cfg | {"task_kind": "any"}, 3)[0] == [100, 101]
    with pytest.raises(ValueError, match="fitted H-blind SER at most 0.0 x MMSE"):
        study.select_tasks(cfg | {"learner_bound": 0.0, "max_screened": 3}, 3)
    with pytest.raises(ValueError, match="n_t <= 8"):
        study.check(cfg | {"n_t": 9})


def test_per_epoch_draws_renew_the_samples_over_the_same_channels_and_resume_exactly(tmp_path: Path, record_redraws: Callable[[], AbstractContextManager[list]]) -> None:
    redraw = dict(TINY) | {"train_draws": "per-epoch"}
    with record_redraws() as seen:
        s = study.run(redraw | {"tasks": [100]}, 3, tmp_path / "full", no_progress)
    train = study._batch(TINY, 100, 3, "table1-train", TINY["train_samples"])
    assert len(seen) == TINY["epochs"] and all(torch.equal(H, train.H) for H in seen)  # one redraw per epoch, same channels
    fixed = study.run(dict(TINY) | {"tasks": [100]}, 3, tmp_path / "fixed", no_progress)
    assert s["per_task"][0]["ser"] != fixed["per_task"][0]["ser"] or _tables(tmp_path / "full") != _tables(tmp_path / "fixed")
    assert s["config"]["train_draws"] == "per-epoch"
    # stopped after 2 epochs and resumed to 4: the redraw generator resumes with the weights
    part = tmp_path / "part"
    study.run(redraw | {"tasks": [100], "epochs": 2}, 3, part, no_progress)
    study.run(redraw | {"tasks": [100]}, 3, part, no_progress)
    assert _tables(part) == _tables(tmp_path / "full")
