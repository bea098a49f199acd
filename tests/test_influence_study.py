"""The influence_paper study at toy scale: tables, report, schema."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from common.schema import ScenarioError, validate_section
from studies import influence_paper as study
from tests.study_resume import StudyStopped, count_calls, tables


TINY = {
    "seeds": 2, "receivers": ["sdnet"], "updates": ["first_order"], "single_targets": 1, "n_targets": 2,
    "single_steps": 2, "multi_steps": 2, "budget": 8, "k": 6, "arnoldi_steps": 15, "hessian_samples": 64,
    "sdnet_n_r": 4, "sdnet_n_t": 2, "sdnet_n_conv": 1, "sdnet_snr_db": 2.0, "sdnet_instance_size": 8,
    "sdnet_train_instances": 32, "sdnet_val_instances": 8, "sdnet_pretrain_epochs": 2,
}


@pytest.mark.slow
def test_study_writes_tables_and_redraws_plots(tmp_path):
    cfg = validate_section(TINY, study.SCHEMA, "study")
    summary = study.run(cfg, 7, tmp_path, lambda *a: None)
    runs = pq.read_table(tmp_path / "runs.parquet").to_pydict()
    # per seed: 1 single + 1 multi scenario x 3 selections x 1 update
    assert len(runs["seed"]) == summary["n_runs"] == 2 * 2 * 3
    assert set(runs["selection"]) == {"beneficial", "harmful", "random"}
    assert all(b == 8 for b in runs["budget"])
    curves = pq.read_table(tmp_path / "curves.parquet").to_pydict()
    single = [s for s, sc in zip(curves["step"], curves["scenario"]) if sc == "single"]
    assert sorted(set(single)) == [0, 1, 2]  # step 0 = before, then every fine-tuning step
    gap = pq.read_table(tmp_path / "gap_table.parquet").to_pydict()
    assert all(n == 2 for n in gap["n_seeds"])
    (tmp_path / "ber_over_steps_sdnet.png").unlink()
    paths = study.report(tmp_path)
    assert [p.name for p in paths] == ["ber_over_steps_sdnet.png"] and paths[0].stat().st_size > 0
    again = study.run(cfg, 7, tmp_path / "again", lambda *a: None)
    assert json.dumps(again["gap_table"]) == json.dumps(summary["gap_table"])  # same seed, same numbers


@pytest.mark.slow
def test_a_stopped_study_resumes_from_its_completed_units(tmp_path, monkeypatch):
    """Issue #22: the pre-trained receiver with its inverse Hessian, and each seed's rows,
    are units of work kept in RUN_DIR/work; a study stopped after its first seed, run
    again into the same directory, neither pre-trains nor runs Arnoldi again, computes only
    the seeds it had not finished, and its tables equal an uninterrupted run's."""
    import common.influence.scores as scores

    cfg = validate_section(dict(TINY, seeds=3), study.SCHEMA, "study")
    study.run(cfg, 7, tmp_path / "whole", lambda *a: None)
    with pytest.MonkeyPatch.context() as m:
        count_calls(m, study, "_one_seed", stop_after=1)
        with pytest.raises(StudyStopped):
            study.run(cfg, 7, tmp_path / "stopped", lambda *a: None)
    assert sorted(p.stem for p in (tmp_path / "stopped" / "work").glob("*.npz")) == ["sdnet-receiver", "sdnet-seed-0"]
    pretrained = count_calls(monkeypatch, study, "_pretrain")
    arnoldi = count_calls(monkeypatch, scores, "arnoldi")
    seeds = count_calls(monkeypatch, study, "_one_seed")
    study.run(cfg, 7, tmp_path / "stopped", lambda *a: None)
    assert pretrained == [] and arnoldi == [] and [a[2] for a in seeds] == [1, 2]
    names = ("curves", "runs", "baselines", "gap_table")
    assert tables(tmp_path / "stopped", names) == tables(tmp_path / "whole", names)


def test_study_schema_names_the_bad_key():
    with pytest.raises(ScenarioError, match="study.receivers"):
        validate_section({"receivers": ["resnet"]}, study.SCHEMA, "study")
    with pytest.raises(ScenarioError, match="study.budgett"):
        validate_section({"budgett": 3}, study.SCHEMA, "study")
