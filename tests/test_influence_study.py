"""The influence_paper study at toy scale: tables, report, schema."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from common.schema import ScenarioError, validate_section
from studies import influence_paper as study


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


def test_study_schema_names_the_bad_key():
    with pytest.raises(ScenarioError, match="study.receivers"):
        validate_section({"receivers": ["resnet"]}, study.SCHEMA, "study")
    with pytest.raises(ScenarioError, match="study.budgett"):
        validate_section({"budgett": 3}, study.SCHEMA, "study")
