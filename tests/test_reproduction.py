"""docs/reproduction.md's verdicts follow the stated rules on run directories whose
numbers are chosen so the right verdict is known; a broken run directory is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cli.main import main
from studies.reproduction import CLAIMS, PARTLY, REPRODUCED, NOT, NOT_RUN, STUDY_SCENARIOS, RunOutput, evaluate, find_runs, render

SIX = ("top-embed", "middle-embed", "bottom-embed", "top-inherit", "middle-inherit", "bottom-inherit")


def _run_dir(root: Path, name: str, kind: str, summary: dict, tables: dict[str, list[dict]], seed: int = 1) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"study": kind, "wall_s": 12.0, **summary}))
    (d / "scenario.resolved.json").write_text(json.dumps({"seed": seed, "study": {"kind": kind, "scale": "quick"}}))
    for t, rows in tables.items():
        pq.write_table(pa.Table.from_pylist(rows), d / f"{t}.parquet")
    return d


def _learngene(root: Path, name: str, matched: float, bottom: float, seed: int = 1, scale: str = "quick") -> Path:
    ser = {"zf": 0.09, "mmse": 0.06, "scratch": 0.05, "transfer": 0.045, "learngene": bottom, **{s: 0.04 for s in SIX}}
    ser["bottom-embed"] = ser["bottom-inherit"] = bottom
    epochs = [
        {"target": 10, "scheme": s, "epoch": e, "loss": 0.0, "val_ser": ser[s] * (3 - e)}
        for s in ("scratch", "transfer", "learngene", *SIX) for e in range(3)
    ]
    return _run_dir(root, name, "learngene_paper", {
        "scale": scale, "ser_at_train_snr": ser, "table1_matched_mean": matched, "table1_mismatched_mean": 2 * matched,
    }, {"ser_epoch": epochs}, seed)


def test_learngene_verdicts_follow_the_numbers(tmp_path: Path) -> None:
    good = RunOutput.load(_learngene(tmp_path, "a", matched=0.01, bottom=0.02))
    bad = RunOutput.load(_learngene(tmp_path, "b", matched=0.07, bottom=0.08))
    by = {c.where + c.claim: c for c in CLAIMS}
    t1 = next(c for c in CLAIMS if c.where == "Table I" and "beats" in c.claim)
    fig9 = next(c for c in CLAIMS if c.where == "Fig. 9")
    fig11 = next(c for c in CLAIMS if c.where == "Fig. 11")
    assert len(by) == len(CLAIMS)
    assert t1.measure(good).verdict == REPRODUCED  # 0.01 < 0.5 x 0.06
    assert t1.measure(bad).verdict == NOT  # 0.07 > MMSE's 0.06
    assert t1.measure(RunOutput.load(_learngene(tmp_path, "c", matched=0.05, bottom=0.02))).verdict == PARTLY
    assert fig9.measure(good).verdict == REPRODUCED
    assert fig9.measure(bad).verdict == NOT  # bottom worst, above scratch
    assert fig11.measure(good).verdict == REPRODUCED
    assert fig11.measure(bad).verdict == NOT
    # learngene between transfer and scratch: partly, and the reason is transfer's head start
    between = fig11.measure(RunOutput.load(_learngene(tmp_path, "d", matched=0.01, bottom=0.047)))
    assert between.verdict == PARTLY and "not below transfer (epoch 0: transfer 1.35e-01, learngene 1.41e-01" in between.why
    assert "(epoch 0:" not in fig11.measure(good).why
    # overlapping test-SER intervals: the verdict says the run cannot tell the schemes apart
    d = _learngene(tmp_path, "e", matched=0.01, bottom=0.06)
    pq.write_table(pa.Table.from_pylist([{"scheme": s, "ser": v, "ser_lo": v - 0.02, "ser_hi": v + 0.02, "symbols": 16000}
                                         for s, v in (("scratch", 0.05), ("learngene", 0.06))]), d / "ser_table.parquet")
    assert fig11.measure(RunOutput.load(d)).why == "learngene not below scratch; learngene, scratch within each other's 95% CIs at 16,000 test symbols"
    assert fig11.measure(bad).why == "learngene not below scratch"  # no ser_table: nothing claimed


def test_fig10_verdict_follows_the_initialisation_draws_when_a_run_has_them(tmp_path: Path) -> None:
    fig10 = next(c for c in CLAIMS if c.where == "Fig. 10" and c.study == "learngene_paper")
    d = _learngene(tmp_path, "a", matched=0.01, bottom=0.08)  # bottom slowest in the run's own draw
    assert fig10.measure(RunOutput.load(d)).verdict == NOT
    five = ("learngene", "top-embed", "middle-embed", "top-inherit", "middle-inherit")

    def draws(speed) -> None:
        rows = [{"repeat": r, "target": t, "scheme": s, "epoch": e, "val_ser": 0.75 if e == 0 else speed(r, i)}
                for r in range(5) for t in (10, 11) for i, s in enumerate([*five, "scratch"]) for e in range(3)]
        pq.write_table(pa.Table.from_pylist(rows), d / "positions.parquet")

    draws(lambda r, i: 0.05 + 0.01 * i)  # over five draws the unit at the bottom is always fastest
    m = fig10.measure(RunOutput.load(d))
    assert m.verdict == REPRODUCED and "learngene (bottom) fastest in 10/10 blocks" in m.figure
    draws(lambda r, i: 0.05 + 0.01 * ((r + i) % 5) if i < 5 else 0.2)  # the fastest rotates with the draw
    m = fig10.measure(RunOutput.load(d))
    assert m.verdict == NOT and "over 5 initialisation draws (2 epochs)" in m.figure
    assert "the fastest strategy changes with the draw on 2/2 targets; place of the unit: Friedman p = 1.00" in m.why
    assert "learngene - scratch -0.130 (95% CI" in m.why  # what the unit itself buys, whatever its place


def test_table1_at_the_per_task_recipe_verdict_counts_tasks(tmp_path: Path) -> None:
    t1 = next(c for c in CLAIMS if c.study == "sdnet_table1" and "beats" in c.claim)

    def run(name: str, ratios: list[float]) -> RunOutput:
        per = [{"task_id": 100 + i, "ser": 0.06 * q, "ser_mmse": 0.06, "ser_zf": 0.08, "ratio_mmse": q} for i, q in enumerate(ratios)]
        return RunOutput.load(_run_dir(tmp_path, name, "sdnet_table1", {"scale": "paper-per-task", "per_task": per}, {}))

    assert t1.measure(run("a", [0.1, 0.3, 0.5, 0.2, 0.4])).verdict == REPRODUCED
    partly = t1.measure(run("b", [0.1, 0.3, 0.9, 1.2, 1.3]))
    assert partly.verdict == PARTLY and "3/5 tasks below MMSE, 2 at or below 0.5x" in partly.why
    assert t1.measure(run("c", [1.1, 1.3])).verdict == NOT
    # the runs table names the training budget the scale stood for in this study
    cfg = {"epochs": 50, "train_samples": 8100, "batch_size": 500}
    budget = RunOutput.load(_run_dir(tmp_path, "f", "sdnet_table1", {"scale": "paper-per-task", "per_task": [], "tasks": [1, 2, 3], "config": cfg}, {}))
    assert "| paper-per-task | 3 tasks x 50 epochs; 8,100 samples, batch 500 |" in render({"sdnet_table1": [budget]})
    # a run on the learner tasks: its own scale, listed after the ZF-range rule's, and a command that names both keys
    d = _run_dir(tmp_path, "g", "sdnet_table1", {"scale": "paper-per-task-learners", "per_task": [], "tasks": [1], "config": cfg}, {})
    (d / "scenario.resolved.json").write_text(json.dumps({"seed": 1, "study": {"kind": "sdnet_table1", "scale": "paper-per-task-learners", "task_kind": "learner", "epochs": 200}}))
    page = render(find_runs(tmp_path))
    assert "| paper-per-task-learners | 1 tasks x 50 epochs; 8,100 samples, batch 500 | - | 12 | - | `airfleet run scenarios/sdnet_table1.toml` with `scale = \"paper-per-task-learners\"`, `task_kind = \"learner\"`, `epochs = 200` |" in page
    assert page.index("`f` | 1 | paper-per-task |") < page.index("`g` | 1 | paper-per-task-learners |")
    # redrawn noise: its own scale after the fixed samples', the budget and the command say so
    d = _run_dir(tmp_path, "h", "sdnet_table1", {"scale": "paper-per-task-learners-redraw", "per_task": [], "tasks": [1], "config": cfg | {"train_draws": "per-epoch"}}, {})
    (d / "scenario.resolved.json").write_text(json.dumps({"seed": 1, "study": {"kind": "sdnet_table1", "scale": "paper-per-task-learners-redraw", "task_kind": "learner", "epochs": 200, "train_draws": "per-epoch"}}))
    page = render(find_runs(tmp_path))
    assert "| paper-per-task-learners-redraw | 1 tasks x 50 epochs; 8,100 samples, batch 500; symbols, pilots and noise redrawn every epoch |" in page
    assert "`epochs = 200`, `train_draws = \"per-epoch\"` |" in page
    assert page.index("`g` | 1 | paper-per-task-learners |") < page.index("`h` | 1 | paper-per-task-learners-redraw |")
    # a miss is read against the H-blind ML bound measured on the run's own samples
    d = tmp_path / "b"
    pq.write_table(pa.Table.from_pylist([{"task_id": t, "hblind_over_mmse": q, "ml_symbols": 2400} for t, q in ((102, 0.2), (103, 1.1), (104, 0.9))]), d / "hblind_bounds.parquet")
    why = t1.measure(RunOutput.load(d)).why
    assert why.endswith("by the H-blind ML bound over MMSE (docs/sdnet_fidelity/table1_bounds.md): learner kind (bound <= 0.3x), short of 0.5x: task 102 (0.20x); "
                        "plateau kind (bound above 0.3x): tasks 103 (1.10x), 104 (0.90x)")
    per = json.loads((d / "summary.json").read_text())
    per["per_task"][4]["ser_mmse"] = 0.005  # 12 MMSE errors in 2,400 symbols: the bound says nothing
    (d / "summary.json").write_text(json.dumps(per))
    assert "MMSE nearly error-free, nothing to beat by a factor: task 104 (MMSE 5.00e-03)" in t1.measure(RunOutput.load(d)).why
    # where the run measured SDNet on its own training samples, each miss shows it beside its held-out SER
    per["per_task"][3]["ser_train"] = 0.01
    (d / "summary.json").write_text(json.dumps(per))
    assert t1.measure(RunOutput.load(d)).why.endswith("; SDNet's SER on its own training samples: task 103 1.00e-02 (held out 7.20e-02)")
    per["config"] = {"train_draws": "per-epoch"}  # a redrawn-noise run: the same SER is on its training channels alone
    (d / "summary.json").write_text(json.dumps(per))
    assert t1.measure(RunOutput.load(d)).why.endswith("; SDNet's SER on its training channels, noise it never saw: task 103 1.00e-02 (held out 7.20e-02)")


def test_seeds_that_agree_on_a_verdict_for_different_reasons_each_give_theirs(tmp_path: Path) -> None:
    def run(name: str, seed: int, ratios: list[float]) -> RunOutput:
        per = [{"task_id": 100 + i, "ser": 0.06 * q, "ser_mmse": 0.06, "ser_zf": 0.08, "ratio_mmse": q} for i, q in enumerate(ratios)]
        return RunOutput.load(_run_dir(tmp_path, name, "sdnet_table1", {"scale": "paper-per-task", "per_task": per}, {}, seed))

    same = [run("a", 1, [1.1, 1.3]), run("b", 2, [1.1, 1.3])]
    bounded = run("c", 3, [1.2, 1.4])  # the same verdict, but its misses are named by the bound
    pq.write_table(pa.Table.from_pylist([{"task_id": t, "hblind_over_mmse": 1.1, "ml_symbols": 2400} for t in (100, 101)]), bounded.run_dir / "hblind_bounds.parquet")
    differ = [*same, RunOutput.load(bounded.run_dir)]
    t1 = lambda runs: next(m for c, m, _ in evaluate({"sdnet_table1": runs}) if c.study == "sdnet_table1" and "beats" in c.claim)  # noqa: E731
    one = t1(same)
    assert one.verdict == NOT and "seed" not in one.why.removesuffix("(2/2 seeds)") and one.why.endswith("(2/2 seeds)")
    three = t1(differ)
    assert three.verdict == NOT and three.why.startswith("seeds 1, 2: ") and "; seed 3: " in three.why and three.why.endswith("(3/3 seeds)")
    assert three.why.count("no task below MMSE") == 2 and "seed 3: no task below MMSE; by the H-blind ML bound" in three.why


def _csi(root: Path, name: str, fm_nmse: float) -> Path:
    rows = []
    for lm, rate in ((32.0, 1.0), (128.0, 1.5)):
        rows.append({"experiment": "schemes", "scheme": "EO", "lmbda": lm, "n_bins": 256, "nmse_db": -2.0, "bits_per_dim_total": rate + 0.1,
                     "bits_per_dim_update": 0.0, "rd_cost": 1.0})
        rows.append({"experiment": "schemes", "scheme": "FM", "lmbda": lm, "n_bins": 256, "nmse_db": fm_nmse, "bits_per_dim_total": rate,
                     "bits_per_dim_update": 0.4, "rd_cost": 1.0})
        for a in ("FM-UP", "FM-noreg"):
            rows.append({"experiment": "schemes", "scheme": a, "lmbda": lm, "n_bins": 256, "nmse_db": -5.0, "bits_per_dim_total": 4.0,
                         "bits_per_dim_update": 3.6, "rd_cost": 1.0})
    for nb, cost in ((16, 15.0), (64, 9.0), (256, 10.0)):
        rows.append({"experiment": "quant_sweep", "scheme": f"FM {nb} bins", "lmbda": 32.0, "n_bins": nb, "nmse_db": -3.0,
                     "bits_per_dim_total": 1.0, "bits_per_dim_update": 0.5, "rd_cost": cost})
    interval = [{"interval_m": m, "rd_cost": c} for m, c in ((0.5, 3.0), (2.0, 1.0), (8.0, 2.0))]
    return _run_dir(root, name, "csi_feedback_paper", {}, {"rd": rows, "interval": interval})


def test_csi_verdicts_follow_the_numbers(tmp_path: Path) -> None:
    good = RunOutput.load(_csi(tmp_path, "a", fm_nmse=-4.0))
    bad = RunOutput.load(_csi(tmp_path, "b", fm_nmse=-1.0))
    v = {c.where: c for c in CLAIMS if c.study == "csi_feedback_paper"}
    assert v["Fig. 7"].measure(good).verdict == REPRODUCED  # FM -4 dB at lower rate than EO's -2 dB
    assert v["Fig. 7"].measure(bad).verdict == NOT
    assert v["Fig. 8"].measure(good).verdict == REPRODUCED  # 3.6 vs 0.4 bits/dim
    assert v["Table IV"].measure(good).verdict == REPRODUCED  # 64 bins least cost, 16 most
    fig10 = v["Fig. 10"].measure(good)
    assert fig10.verdict == PARTLY and "2 m" in fig10.figure  # interior, not at 8-16 m


def test_missing_runs_newest_run_per_seed_and_seed_spread(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _learngene(runs, "learngene_paper-20260101-000000", matched=0.07, bottom=0.08)
    _learngene(runs, "learngene_paper-20260102-000000", matched=0.01, bottom=0.02)
    found = find_runs(runs)
    assert set(found) == {"learngene_paper"} and len(found["learngene_paper"]) == 1
    assert found["learngene_paper"][0].run_dir.name.endswith("20260102-000000")
    verdicts = {c.study: m.verdict for c, m, _ in evaluate(found)}
    assert verdicts["csi_feedback_paper"] == NOT_RUN and verdicts["xrefine"] == NOT_RUN
    text = render(found)
    assert "learngene_paper-20260102-000000" in text and text.count("\n| ") == len(CLAIMS) + 1 + len(STUDY_SCENARIOS) + 1
    # two more seeds, one of them contradicting: 2 of 3 seeds reproduce Table I
    _learngene(runs, "learngene_paper-20260103-000000", matched=0.011, bottom=0.02, seed=2)
    _learngene(runs, "learngene_paper-20260104-000000", matched=0.09, bottom=0.02, seed=3)
    found = find_runs(runs)
    assert [r.seed for r in found["learngene_paper"]] == [1, 2, 3]
    t1 = next(m for c, m, _ in evaluate(found) if c.where == "Table I" and "beats" in c.claim)
    assert t1.verdict == REPRODUCED and "(2/3 seeds)" in t1.why
    assert all(f"seed {k}:" in t1.figure for k in (1, 2, 3))


def test_a_study_run_at_two_scales_gets_a_row_per_scale_and_keeps_both(tmp_path: Path) -> None:
    """Runs of one seed at two scales are two measurements: each learngene claim gets a row
    per scale (CPU default first), and keeping evidence of one does not drop the other."""
    from studies.reproduction import keep_evidence

    runs = tmp_path / "runs"
    _learngene(runs, "learngene_paper-b", matched=0.01, bottom=0.02, scale="paper-per-task")
    _learngene(runs, "learngene_paper-a", matched=0.07, bottom=0.08)
    found = find_runs(runs)
    assert [r.scale for r in found["learngene_paper"]] == ["quick", "paper-per-task"]
    t1 = [(m, r.scale) for c, m, r in evaluate(found) if c.where == "Table I" and c.study == "learngene_paper" and "beats" in c.claim]
    assert [(m.verdict, s) for m, s in t1] == [(NOT, "quick"), (REPRODUCED, "paper-per-task")]
    n_lg = sum(c.study == "learngene_paper" for c in CLAIMS)
    assert len(evaluate(found)) == len(CLAIMS) + n_lg
    assert f"of {len(CLAIMS) + n_lg} claims ({len(CLAIMS)} claims, each once per scale" in render(found)
    ev = tmp_path / "evidence"
    for r in found["learngene_paper"]:
        keep_evidence(r, ev)
    assert sorted(d.name for d in (ev / "learngene_paper").iterdir()) == ["learngene_paper-a", "learngene_paper-b"]
    _learngene(runs, "learngene_paper-c", matched=0.01, bottom=0.02, scale="paper-per-task")  # a newer run of that scale and seed replaces it
    keep_evidence(RunOutput.load(runs / "learngene_paper-c"), ev)
    assert sorted(d.name for d in (ev / "learngene_paper").iterdir()) == ["learngene_paper-a", "learngene_paper-c"]


def test_cli_writes_the_page_and_rejects_a_broken_run_dir(tmp_path: Path, capsys) -> None:
    d = _csi(tmp_path / "runs", "csi_feedback_paper-1", fm_nmse=-4.0)
    out = tmp_path / "reproduction.md"
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(d), "-o", str(out)]) == 0
    assert "**reproduced**" in out.read_text()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken" in err[0]
    fleet = tmp_path / "fleet-run"  # a fleet run's summary names no study
    fleet.mkdir()
    (fleet / "summary.json").write_text(json.dumps({"classes": []}))
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(fleet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fleet-run" in err[0]


def test_run_dirs_record_their_cpu_kernels_and_the_page_shows_them(tmp_path: Path) -> None:
    """A run directory keeps torch's CPU kernel set (environment.json, written with the
    scenario); the Runs table shows it, '-' for a run that has none."""
    import torch

    from common.scenario import parse_scenario
    from server.results import init_run_dir

    d = tmp_path / "fleet"
    init_run_dir(d, parse_scenario({"fleet": [{"name": "a", "count": 1}]}, "t.toml", check_sources=False))
    env = json.loads((d / "environment.json").read_text())
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["torch"] == torch.__version__
    runs = tmp_path / "runs"
    a = _learngene(runs, "learngene_paper-20260101-000000", matched=0.01, bottom=0.02)
    (a / "environment.json").write_text(json.dumps({"cpu_capability": "AVX2"}))
    _learngene(runs, "learngene_paper-20260102-000000", matched=0.01, bottom=0.02, seed=2)
    rows = [ln for ln in render(find_runs(runs)).splitlines() if "learngene_paper-2026" in ln]
    assert "| AVX2 |" in rows[0] and "| - |" in rows[1]


def test_evidence_keeps_only_small_outputs_replaces_a_seed_and_rebuilds_the_page(tmp_path: Path) -> None:
    """``--evidence`` copies a run's summary, scenario and tables (not its weights) to
    DIR/<kind>/<run>/, a newer run of the same seed replaces the older one, and the page
    is then rendered from everything kept (another study kept earlier stays)."""
    runs, evidence = tmp_path / "runs", tmp_path / "evidence"
    csi = _csi(runs, "csi_feedback_paper-1", fm_nmse=-4.0)
    (csi / "work").mkdir()
    (csi / "work" / "weights.npz").write_bytes(b"x" * 1000)
    (csi / "plot.png").write_bytes(b"png")
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(csi), "--evidence", str(evidence), "-o", str(tmp_path / "a.md")]) == 0
    kept = evidence / "csi_feedback_paper" / "csi_feedback_paper-1"
    assert (kept / "summary.json").is_file() and not (kept / "work").exists() and not (kept / "plot.png").exists()
    assert {p.name for p in kept.glob("*.parquet")} == {p.name for p in csi.glob("*.parquet")}
    old = _learngene(runs, "learngene_paper-20260101-000000", matched=0.07, bottom=0.08)
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(old), "--evidence", str(evidence), "-o", str(tmp_path / "b.md")]) == 0
    new = _learngene(runs, "learngene_paper-20260102-000000", matched=0.01, bottom=0.02)
    out = tmp_path / "c.md"
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(new), "--evidence", str(evidence), "-o", str(out)]) == 0
    assert sorted(p.name for p in (evidence / "learngene_paper").iterdir()) == ["learngene_paper-20260102-000000"]
    page = out.read_text()
    assert "csi_feedback_paper-1" in page and "learngene_paper-20260102-000000" in page and "20260101" not in page
    assert page == render(find_runs(evidence))



def test_evidence_keeps_only_the_named_runs_when_runs_are_named(tmp_path: Path) -> None:
    """Naming a run keeps that run alone: a run found under --runs-dir does not replace its
    kept copy (which may hold tables added since, such as hblind_bounds); and a named run
    of another scale leaves the found run of the same seed on the page."""
    runs, evidence = tmp_path / "runs", tmp_path / "evidence"
    found = _csi(runs, "csi_feedback_paper-1", fm_nmse=-4.0)
    assert main(["reproduction", "--runs-dir", str(tmp_path / "nothing"), str(found), "--evidence", str(evidence), "-o", str(tmp_path / "a.md")]) == 0
    extra = evidence / "csi_feedback_paper" / "csi_feedback_paper-1" / "hblind_bounds.parquet"
    pq.write_table(pa.Table.from_pylist([{"task_id": 10, "hblind_over_mmse": 0.2, "ml_symbols": 2400}]), extra)
    named = _learngene(tmp_path / "elsewhere", "learngene_paper-b", matched=0.01, bottom=0.02, seed=1, scale="paper-per-task")
    assert main(["reproduction", "--runs-dir", str(runs), str(named), "--evidence", str(evidence), "-o", str(tmp_path / "b.md")]) == 0
    assert extra.is_file()  # the found run was not kept again over its richer copy
    assert "csi_feedback_paper-1" in (tmp_path / "b.md").read_text()
    _learngene(runs, "learngene_paper-a", matched=0.07, bottom=0.08, seed=1, scale="reduced")
    assert main(["reproduction", "--runs-dir", str(runs), str(named), "-o", str(tmp_path / "c.md")]) == 0
    page = (tmp_path / "c.md").read_text()
    assert "learngene_paper-a" in page and "learngene_paper-b" in page  # one seed, two scales: both stay


def test_the_shipped_page_is_the_one_its_kept_evidence_renders() -> None:
    """docs/reproduction.md is generated from docs/evidence (``make reproduction``): edited
    by hand, or left stale after a claim's rule changed, it fails here."""
    root = Path(__file__).resolve().parents[1]
    assert (root / "docs" / "reproduction.md").read_text() == render(find_runs(root / "docs" / "evidence"))
