"""The csi_feedback_paper study at toy scale: tables, rows, plots from the tables alone."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from common.schema import ScenarioError, validate_section
from studies import load_study, no_progress
from tests.study_resume import StudyStopped, count_calls, tables


TOY = dict(
    n_ant=8, n_sc=8, width=4, pretrain_samples=32, pretrain_steps=3, n_finetune=12, n_eval=6, steps=2, lr=1e-4, lmbdas=[64.0],
    backbone_lmbdas=[256.0, 16.0],
    n_bins_sweep=[4, 64], track_m=3.0, spacing_m=0.25, intervals_m=[1.0, 1.5], interval_steps=1,
)


@pytest.mark.slow
def test_study_runs_and_reports(tmp_path: Path) -> None:
    mod = load_study("csi_feedback_paper")
    cfg = validate_section(dict(TOY, cache_dir=str(tmp_path / "cache")), mod.SCHEMA, "study")
    summary = mod.run(cfg, 7, tmp_path / "run", no_progress)
    rd = pq.read_table(tmp_path / "run" / "rd.parquet").to_pylist()
    schemes = [(r["scheme"], r["backbone_lmbda"], r["lmbda"]) for r in rd if r["experiment"] == "schemes"]
    # No FT, EO and TM on every backbone at its own weight; FM and kin on the low-rate one
    assert schemes == [
        ("No FT", 16.0, 16.0), ("EO", 16.0, 16.0), ("TM", 16.0, 16.0),
        ("No FT", 256.0, 256.0), ("EO", 256.0, 256.0), ("TM", 256.0, 256.0),
        ("FM", 16.0, 64.0), ("GA", 16.0, 64.0), ("FM-UP", 16.0, 64.0), ("FM-noreg", 16.0, 64.0),
    ]
    assert len(list((tmp_path / "cache").glob("csi-*.npz"))) == 2  # one cached backbone per weight
    no_ft = [r for r in rd if r["scheme"] == "No FT"]
    assert no_ft[0]["bits_per_dim_latent"] != no_ft[1]["bits_per_dim_latent"] or no_ft[0]["mse"] != no_ft[1]["mse"]
    by = {r["scheme"]: r for r in rd}
    for label in ("No FT", "EO", "TM", "GA"):
        assert by[label]["bits_per_dim_update"] == 0.0
    assert [r["finetune_steps"] for r in rd if r["scheme"] in ("EO", "TM", "FM")] == [2] * 5
    assert [f["lmbda"] for f in summary["fm_vs_curves"]] == [64.0]
    assert by["FM"]["bits_per_dim_update"] > 0
    # a uniform prior pays log2(256) = 8 bits for every decoder weight (6 samples x 64 dims)
    assert by["FM-UP"]["bits_per_dim_update"] * 6 * 64 >= 8 * summary["backbone_decoder_params"] * 0.99
    assert by["FM-UP"]["bits_per_dim_update"] > 5 * by["FM"]["bits_per_dim_update"]
    for r in rd:
        assert r["bits_per_dim_total"] == pytest.approx(r["bits_per_dim_latent"] + r["bits_per_dim_update"])
    sweep = [r for r in rd if r["experiment"] == "quant_sweep"]
    assert [r["n_bins"] for r in sweep] == [4, 64]
    # Table IV varies the resolution over one range: t * n_bins stays the default 1e-3 * 256
    assert [r["t"] * r["n_bins"] for r in sweep] == pytest.approx([0.256, 0.256])
    iv = pq.read_table(tmp_path / "run" / "interval.parquet").to_pylist()
    assert [r["interval_m"] for r in iv] == [1.0, 1.5]
    assert [r["n_updates"] for r in iv] == [2, 1]  # 12 samples: 3 windows of 4, 2 of 6
    for r in iv + rd:  # eq. (9)'s objective on real bits and the BS's reconstruction
        assert r["rd_cost"] == pytest.approx(r.get("lmbda", 32.0) * r["mse"] + r["bits_per_dim_total"])
    assert summary["interval_sweet_spot_m"] == min(iv, key=lambda r: r["rd_cost"])["interval_m"]
    paths = mod.report(tmp_path / "run")
    assert {p.name for p in paths} == {"rd_schemes.png", "quant_sweep.png", "interval.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.slow
def test_a_stopped_study_resumes_from_its_completed_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #22: every scheme's row and every interval's row is a unit of work kept in
    RUN_DIR/work; a study stopped in its first interval and run again into the same
    directory computes only the units it had not finished, and its tables equal an
    uninterrupted run's (the wall-time column ``finetune_s`` aside)."""
    from studies import csi_feedback_paper as study

    cfg = validate_section(dict(TOY, intervals_m=[1.0, 1.5, 0.5], cache_dir=str(tmp_path / "cache")), study.SCHEMA, "study")
    study.run(cfg, 7, tmp_path / "whole", no_progress)
    names, wall = ("rd", "interval"), ("finetune_s",)
    with pytest.MonkeyPatch.context() as m:
        count_calls(m, study, "_interval_rows", stop_after=1)
        with pytest.raises(StudyStopped):
            study.run(cfg, 7, tmp_path / "stopped", no_progress)
    units = sorted(p.stem for p in (tmp_path / "stopped" / "work").glob("*.npz"))
    assert len(units) == 12 + 1 and "interval-0" in units and "interval-1" not in units  # 12 RD points, 1 interval
    schemes = count_calls(monkeypatch, study, "_scheme_row")
    intervals = count_calls(monkeypatch, study, "_interval_rows")
    study.run(cfg, 7, tmp_path / "stopped", no_progress)
    assert schemes == [] and [a[2] for a in intervals] == [1, 2]  # only the two unfinished intervals (by index)
    assert tables(tmp_path / "stopped", names, wall) == tables(tmp_path / "whole", names, wall)


def test_study_schema_and_paper_scale() -> None:
    mod = load_study("csi_feedback_paper")
    with pytest.raises(ScenarioError, match="scale"):
        validate_section({"scale": "huge"}, mod.SCHEMA, "study")
    with pytest.raises(ScenarioError, match="device"):
        validate_section({"device": "tpu"}, mod.SCHEMA, "study")
    s = mod.study_cfg(validate_section({"scale": "paper"}, mod.SCHEMA, "study"))
    assert (s["n_ant"], s["n_sc"], s["width"]) == (64, 64, 64)
    assert s["epochs"] == 1000  # the paper fine-tunes for 1,000 epochs
    assert mod.study_cfg(validate_section({}, mod.SCHEMA, "study"))["epochs"] == 0


def test_nmse_at_rate_interpolates_in_log_rate() -> None:
    from studies.csi_feedback_paper import nmse_at_rate

    curve = [(0.5, -2.0), (2.0, -6.0), (1.0, -4.0)]
    assert nmse_at_rate(curve, 1.0) == -4.0
    assert nmse_at_rate(curve, 2 ** -0.5) == pytest.approx(-3.0)  # halfway between 0.5 and 1 in log
    assert nmse_at_rate(curve, 0.25) is None and nmse_at_rate(curve, 3.0) is None
    assert nmse_at_rate([], 1.0) is None
