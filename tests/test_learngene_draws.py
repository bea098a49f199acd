"""Fig. 10 over initialisation draws (studies.learngene_draws): the analysis finds a place
effect that is built into the numbers and none where the numbers have none; the draws
extend a finished study run with its own data, resume, and refuse a run they cannot rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studies import learngene_draws as draws
from studies import learngene_paper as study
from studies import no_progress

STRATS = ("learngene", "middle-embed", "middle-inherit", "top-embed", "top-inherit")


def _rows(speed) -> list[dict]:
    """3 runs x 2 targets x 5 draws; every epoch 1..3 of a training at ``speed(run, draw, target, i)``
    (``i`` the strategy's index in STRATS, scratch i = 5)."""
    rows = []
    for run in ("a", "b", "c"):
        for draw in range(5):
            for target in (7, 8):
                for i, s in enumerate([*STRATS, "scratch"]):
                    v = speed(run, draw, target, i)
                    rows += [{"run": run, "repeat": draw, "target": target, "scheme": s, "epoch": e, "val_ser": 0.75 if e == 0 else v} for e in range(4)]
    return rows


def test_a_place_effect_built_into_the_numbers_is_found() -> None:
    # learngene 0.02 faster than every other strategy in every block, the rest by draw
    a = draws.analyse(_rows(lambda run, d, t, i: 0.10 + 0.001 * ((d + i) % 5) - (0.02 if i == 0 else 0.0)))
    assert a["blocks"] == 30 and a["fastest"]["learngene"] == 30 and a["bottom_fastest"] == 30
    assert a["bottom_fastest_p"] < 1e-6 and a["friedman_p"] < 1e-6
    mean, lo, hi = a["learngene_minus_others"]
    assert hi < 0 and mean == pytest.approx(-0.02, abs=1e-9)
    assert a["fastest_changes_with_draw"] == 0


def test_no_place_effect_when_each_strategy_takes_every_speed_once() -> None:
    # a Latin square: over the five draws every strategy has each of five speeds once
    a = draws.analyse(_rows(lambda run, d, t, i: 0.10 + 0.01 * ((d + i) % 5) if i < 5 else 0.2))
    assert a["friedman_stat"] == pytest.approx(0.0, abs=1e-9) and a["friedman_p"] == pytest.approx(1.0)
    assert a["bottom_fastest"] == 6  # once per (run, target): its share, 1 in 5
    assert a["bottom_fastest_p"] > 0.5
    assert a["fastest_changes_with_draw"] == a["run_targets"] == 6
    sd = pytest.approx(0.0158114, rel=1e-4)  # sd of 0.10, 0.11, ..., 0.14 (ddof 1)
    assert a["draw_sd"] == sd and a["place_sd"] == sd
    mean, lo, hi = a["learngene_minus_scratch"]
    assert hi < 0  # every strategy is faster than this scratch


def test_a_block_missing_a_scheme_is_left_out() -> None:
    rows = [r for r in _rows(lambda run, d, t, i: 0.1 + 0.01 * i) if not (r["run"] == "a" and r["repeat"] == 4 and r["target"] == 7 and r["scheme"] == "top-embed")]
    assert draws.analyse(rows)["blocks"] == 29


TINY = dict(
    n_r=4, n_t=2, collective_tasks=2, target_tasks=2, n_conv_collective=5, n_conv_individual=4, unit_layers=2,
    collective_samples=60, collective_epochs=1, individual_samples=60, individual_epochs=2,
    val_samples=30, test_samples=30, batch_size=30, scaling=False,
)


@pytest.mark.slow
def test_draws_extend_a_finished_run_resume_and_refuse_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = study.run(dict(TINY), 5, tmp_path, no_progress)
    (tmp_path / "scenario.resolved.json").write_text(json.dumps({"seed": 5, "study": dict(TINY, kind="learngene_paper")}))
    draws.train_draws(tmp_path, 2, 2, log=lambda _: None)
    got = pq.read_table(tmp_path / draws.TABLE).to_pylist()
    schemes = draws.distinct_schemes(s["selected_layers"], TINY["n_conv_collective"])
    assert "learngene" in schemes and "scratch" in schemes and "bottom-embed" not in schemes
    own = {(r["target"], r["scheme"], r["epoch"]): r["val_ser"] for r in pq.read_table(tmp_path / "ser_epoch.parquet").to_pylist()}
    for r in got:
        if r["repeat"] == 0:  # draw 0 is the run's own training
            assert r["val_ser"] == own[(r["target"], r["scheme"], r["epoch"])]
    for rep in (0, 1):
        assert {(r["target"], r["scheme"]) for r in got if r["repeat"] == rep} == {(t, x) for t in (2, 3) for x in schemes}
        assert sorted({r["epoch"] for r in got if r["repeat"] == rep}) == [0, 1, 2]
    # resumed: every training is a completed unit, none runs again, the table is the same
    monkeypatch.setattr(draws, "finetune", lambda *a, **k: pytest.fail("a completed draw was trained again"))
    draws.train_draws(tmp_path, 2, 2, log=lambda _: None)
    assert pq.read_table(tmp_path / draws.TABLE).to_pylist() == got
    # a run whose recorded start this code does not rebuild is refused with one line
    ep = pq.read_table(tmp_path / "ser_epoch.parquet").to_pylist()
    for r in ep:
        if r["scheme"] == "learngene" and r["epoch"] == 0:
            r["val_ser"] = 0.123456
    pq.write_table(pa.Table.from_pylist(ep), tmp_path / "ser_epoch.parquet")
    with pytest.raises(SystemExit, match="not the run's data or unit"):
        draws.train_draws(tmp_path, 2, 2, log=lambda _: None)
