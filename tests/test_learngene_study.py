"""The learngene_paper study end to end at a tiny size, and its scenario file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from common.learngene import STRATEGIES
from studies import learngene_paper as study
from studies import no_progress


TINY = dict(
    n_r=4, n_t=2, collective_tasks=2, target_tasks=2, n_conv_collective=5, n_conv_individual=4, unit_layers=2,
    collective_samples=60, collective_epochs=1, individual_samples=60, individual_epochs=2,
    val_samples=30, test_samples=30, batch_size=30,
)


@pytest.mark.slow
def test_tiny_study_writes_every_table_and_report(tmp_path: Path) -> None:
    s = study.run(dict(TINY), 5, tmp_path, no_progress)
    for name in ("significance", "collective_history", "ser_epoch", "ser_snr", "ser_table", "table1", "complexity", "scaling"):
        assert (tmp_path / f"{name}.parquet").exists(), name
    ep = pq.read_table(tmp_path / "ser_epoch.parquet").to_pylist()
    assert {r["scheme"] for r in ep} == {"scratch", "transfer", "learngene", *STRATEGIES}
    assert len([r for r in ep if r["scheme"] == "scratch"]) == 2 * 3  # 2 targets x (epoch 0 + 2 epochs)
    # bottom-embed (the selected unit at the bottom) is the learngene scheme itself
    be = [r["val_ser"] for r in ep if r["scheme"] == "bottom-embed"]
    assert be == [r["val_ser"] for r in ep if r["scheme"] == "learngene"]
    snr = pq.read_table(tmp_path / "ser_snr.parquet").to_pylist()
    assert sorted({r["snr_db"] for r in snr}) == [20.0, 22.5, 25.0, 27.5, 30.0]
    comp = {(r["config"], r["model"]): r for r in pq.read_table(tmp_path / "complexity.parquet").to_pylist()}
    assert comp[("paper (32x8)", "learngene unit")]["params"] == 2336
    assert comp[("paper (32x8)", "collective")]["flops"] == 14_709_760
    assert round(100 * comp[("paper (32x8)", "individual")]["transferred_ratio"], 1) == 10.8
    t1 = pq.read_table(tmp_path / "table1.parquet")
    assert t1.num_rows == 4
    assert set(t1.column("n_conv").to_pylist()) == {12}  # Table I at the paper's N_conv = 12
    assert set(s["ser_at_train_snr"]) >= {"zf", "mmse", "scratch", "transfer", "learngene"}
    paths = study.report(tmp_path)
    assert {p.name for p in paths} >= {"significance_heatmap.png", "ser_vs_epoch.png", "ser_vs_snr.png", "complexity.md"}
    assert "2,336" in (tmp_path / "complexity.md").read_text()


def test_scenario_file_validates_and_paper_scale_applies_table_iii() -> None:
    from studies import load_study_scenario
    from common.schema import ScenarioError

    sc = load_study_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "learngene_paper.toml")
    assert sc.data["study"]["kind"] == "learngene_paper" and sc.data["study"]["scale"] == "reduced"
    c = study._resolve({"scale": "paper"})
    assert (c["n_r"], c["n_t"], c["collective_tasks"], c["collective_epochs"], c["individual_epochs"], c["batch_size"]) == (32, 8, 50, 50, 200, 500)
    c = study._resolve({"scale": "paper-per-task"})  # the per-task recipe, fewer tasks
    assert (c["n_r"], c["n_t"], c["collective_samples"], c["collective_epochs"], c["individual_samples"], c["batch_size"]) == (32, 8, 8100, 50, 8100, 500)
    assert (c["collective_tasks"], c["target_tasks"], c["individual_epochs"], c["table1_n_conv"]) == (3, 2, 20, 8)
    from common.schema import validate_section

    with pytest.raises(ScenarioError):
        validate_section({"scale": "huge"}, study.SCHEMA, "study")


@pytest.mark.slow
def test_a_stopped_study_resumes_from_its_completed_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #22: every trained model is a unit of work kept in RUN_DIR/work; run again into
    the same directory, the study trains nothing it finished and writes the same tables."""
    import json

    study.run(dict(TINY), 5, tmp_path, no_progress)
    tables = {n: json.dumps(pq.read_table(tmp_path / f"{n}.parquet").to_pylist()) for n in ("ser_epoch", "ser_snr", "table1", "scaling")}
    units = sorted(p.name for p in (tmp_path / "work").glob("*.npz"))
    assert "transfer-pretrain.npz" in units and "target-0-scratch.npz" in units and "table1-1.npz" in units
    (tmp_path / "work" / "target-1-learngene.npz").unlink()  # the unit in flight when it stopped
    trained: list[str] = []
    real = study.finetune

    def counting(*a: object, **k: object) -> object:
        trained.append("x")
        return real(*a, **k)

    monkeypatch.setattr(study, "finetune", counting)
    import common.learngene.collective as collective

    def no_collective(*a: object, **k: object) -> object:
        raise AssertionError("the collective kept in the run directory was trained again")

    monkeypatch.setattr(collective, "train_collective", no_collective)
    study.run(dict(TINY), 5, tmp_path, no_progress)
    assert len(trained) == 1  # only the missing unit
    assert {n: json.dumps(pq.read_table(tmp_path / f"{n}.parquet").to_pylist()) for n in tables} == tables
