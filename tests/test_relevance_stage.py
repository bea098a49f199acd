"""The fleet's prune stage and the xrefine study, end to end at toy scale."""

from __future__ import annotations

import pathlib

import pytest
import torch

from clients.stages.prune import PruneDevice
from common.channels import ChannelTask, sample_channels
from common.models.channel_estimator import ChannelEstimator
from common.models.sdnet import SDNet
from common.phy.dataset import make_detection_batch
from common.schema import ScenarioError, validate_section
from common.stage import DeviceContext
from common.xrefine.budget import model_flops
from common.xrefine.config import STAGE_SCHEMA



def _ctx(model: torch.nn.Module, seed: int = 17) -> DeviceContext:
    task = ChannelTask.make("rayleigh", 4, 2)
    g = torch.Generator().manual_seed(0)
    train = make_detection_batch(sample_channels(task, 250, 1), 15.0, n_pilots=4, generator=g)
    val = make_detection_batch(sample_channels(task, 200, 2), 15.0, n_pilots=4, generator=g)
    return DeviceContext(device_id=3, device_class="watch", round=1, seed=seed, task=task, snr_db=15.0, model=model, train=train, val=val)


run_stage = PruneDevice().run_device


def test_stage_prunes_to_budget_and_reports() -> None:
    torch.manual_seed(0)
    model = SDNet(4, 2, 1).eval()
    full = model_flops(model)
    budget = full // 2
    res = run_stage(_ctx(model), {"budget_flops": budget, "retrain_epochs": 1, "relevance_samples": 64})
    assert isinstance(res.model, SDNet)
    m = res.metrics
    assert m["flops_before"] == full and m["flops_after"] == model_flops(res.model) <= budget
    assert m["params_after"] < m["params_before"]
    assert 0.0 <= m["ser_before"] <= 1.0 and 0.0 <= m["ser_after"] <= 1.0
    assert res.flops > 0
    assert tuple(res.state["widths"].tolist()) == res.model.widths
    assert tuple(res.state["input_rows"].tolist()) == res.model.input_rows
    # same seed, same numbers
    again = run_stage(_ctx(model), {"budget_flops": budget, "retrain_epochs": 1, "relevance_samples": 64})
    assert again.metrics == m


def test_stage_leaves_a_fitting_model_alone() -> None:
    torch.manual_seed(1)
    model = SDNet(4, 2, 1).eval()
    res = run_stage(_ctx(model), {"budget_flops": 10**9})
    assert res.model is None and res.flops == 0
    assert res.metrics["flops_after"] == res.metrics["flops_before"]


def test_stage_retrains_from_the_rounds_seed() -> None:
    torch.manual_seed(0)
    model = SDNet(4, 2, 1).eval()
    cfg = {"budget_flops": model_flops(model) // 2, "retrain_epochs": 1, "relevance_samples": 64}
    a, b = run_stage(_ctx(model, seed=17), cfg), run_stage(_ctx(model, seed=18), cfg)
    assert isinstance(a.model, SDNet) and isinstance(b.model, SDNet)
    assert a.model.widths == b.model.widths and a.model.input_rows == b.model.input_rows  # relevance: no draw
    assert not torch.equal(a.model.fc.weight, b.model.fc.weight)  # retraining shuffles by the seed


def test_stage_refuses_what_it_cannot_prune() -> None:
    with pytest.raises(ValueError, match="SDNet"):
        run_stage(_ctx(ChannelEstimator(16, [8, 8, 8])), {"budget_flops": 10})
    ctx = _ctx(SDNet(4, 2, 1).eval())
    ctx.val = None
    with pytest.raises(ValueError, match="train and val"):
        run_stage(ctx, {"budget_flops": 10})


def test_stage_schema_names_bad_keys() -> None:
    with pytest.raises(ScenarioError, match="budget_flops"):
        validate_section({}, STAGE_SCHEMA, "fleet[0].prune")
    with pytest.raises(ScenarioError, match="method"):
        validate_section({"budget_flops": 10, "method": "l1"}, STAGE_SCHEMA, "fleet[0].prune")


XREFINE_TOY = {
    "n_subcarriers": 16, "pilot_spacing": 4, "hidden": [16, 16, 16], "n_train": 256, "n_test": 128,
    "eval_snr_db": [15.0, 25.0], "epochs": 2, "retrain_epochs": 1, "n_relevance": 64,
    "input_drops": [0.0, 0.5], "hidden_drops": [0.0, 0.5], "low_options": {}, "high_options": {"subcarrier_spacing_hz": 120e3},
    "methods": ["relevance", "random"],
}


@pytest.mark.slow
def test_xrefine_study_runs_and_reports(tmp_path: pathlib.Path) -> None:
    import pyarrow.parquet as pq

    from studies import xrefine

    cfg = validate_section(XREFINE_TOY, xrefine.SCHEMA, "study")
    summary = xrefine.run(cfg, 3, tmp_path, lambda *a: None)
    grid = pq.read_table(tmp_path / "grid.parquet").to_pylist()
    assert len(grid) == 2 * 2 * 4  # selectivities x methods x grid points
    assert all(0.0 <= r["ber_qam64_pre"] <= 0.5 for r in grid)
    summ = pq.read_table(tmp_path / "summary.parquet").to_pylist()
    assert len(summ) == 2 * 2 * 2 and all(0.0 <= r["flop_reduction"] < 1.0 for r in summ)
    assert set(summary["flop_reduction_at_target"]) == {f"{s}/{m}/{k}" for s in ("low", "high") for m in ("qpsk", "qam64") for k in ("relevance", "random")}
    pngs = xrefine.report(tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in pngs) and len(pngs) == 5
    with pytest.raises(ScenarioError, match="modulations"):
        xrefine.run({**cfg, "modulations": ["bpsk"]}, 3, tmp_path, lambda *a: None)


@pytest.mark.slow
def test_a_stopped_xrefine_study_resumes_from_its_completed_units(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #22: the full estimator of each selectivity and every grid point are units of
    work kept in RUN_DIR/work; a study stopped after the low selectivity's full model and
    two grid points, run again into the same directory, trains only the rest (count the
    trainings), and its tables equal an uninterrupted run's."""
    from studies import xrefine
    from tests.study_resume import StudyStopped, count_calls, tables

    cfg = validate_section(XREFINE_TOY, xrefine.SCHEMA, "study")
    xrefine.run(cfg, 3, tmp_path / "whole", lambda *a: None)
    with pytest.MonkeyPatch.context() as m:
        count_calls(m, xrefine, "fit_estimator", stop_after=3)
        with pytest.raises(StudyStopped):
            xrefine.run(cfg, 3, tmp_path / "stopped", lambda *a: None)
    units = sorted(p.stem for p in (tmp_path / "stopped" / "work").glob("*.npz"))
    assert units == ["full-low", "grid-low-relevance-0-0", "grid-low-relevance-0-0.5"]
    trained = count_calls(monkeypatch, xrefine, "fit_estimator")
    xrefine.run(cfg, 3, tmp_path / "stopped", lambda *a: None)
    assert len(trained) == 2 * (1 + 2 * 2 * 2) - 3  # (full model + grid points) per selectivity, less the three kept
    names = ("baselines", "relevance", "grid", "summary")
    assert tables(tmp_path / "stopped", names) == tables(tmp_path / "whole", names)
