"""Fig. 10 over initialisation draws (issue #21, item 4): the command line of
``studies.learngene_draws``, which says what is trained and how it is analysed.

    OMP_NUM_THREADS=1 flock /tmp/airfleet-train.lock .venv/bin/python benchmarks/learngene_positions.py train RUN_DIR --repeats 4 --epochs 10
    .venv/bin/python benchmarks/learngene_positions.py render RUN_DIR [RUN_DIR ...]   # docs/sdnet_fidelity/positions.md

``RUN_DIR`` is a finished ``learngene_paper`` run (it keeps its collective model in
``collective/``); the three ``paper-per-task`` runs of ``docs/evidence/learngene_paper``
are what ``docs/sdnet_fidelity/positions.md`` is rendered from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `studies.*` when run as a script

from studies.learngene_draws import TABLE, analyse, load_rows, train_draws

OUT_MD = Path(__file__).resolve().parent.parent / "docs" / "sdnet_fidelity" / "positions.md"


def render(run_dirs: list[Path]) -> str:
    a = analyse(load_rows(run_dirs))
    lg, sc = a["learngene_minus_others"], a["learngene_minus_scratch"]
    lines = [
        "# Fig. 10 over initialisation draws (generated)",
        "",
        "`.venv/bin/python benchmarks/learngene_positions.py render "
        + " ".join(d.name for d in run_dirs) + "` (the runs' `positions.parquet`; module docstring says how they are made).",
        "",
        f"{a['blocks']} blocks (run x target x initialisation draw). Speed = mean validation SER over epochs 1..E (lower is faster).",
        "",
        "| scheme | mean speed | fastest in blocks |",
        "|---|---|---|",
        *[f"| {s} | {a['mean_speed'][s]:.4f} | {a['fastest'].get(s, '-')} |" for s in [*a["strategies"], "scratch"]],
        "",
        f"- Friedman test over the {len(a['strategies'])} distinct strategies: chi2 = {a['friedman_stat']:.2f}, p = {a['friedman_p']:.3f}.",
        f"- the unit at the bottom (learngene) is the fastest in {a['bottom_fastest']} of {a['blocks']} blocks; one-sided binomial test against its share of the {len(a['strategies'])} strategies: p = {a['bottom_fastest_p']:.3f}.",
        f"- learngene - mean of the other strategies, per block: {lg[0]:+.4f} (95% CI {lg[1]:+.4f} .. {lg[2]:+.4f}).",
        f"- learngene - scratch, per block: {sc[0]:+.4f} (95% CI {sc[1]:+.4f} .. {sc[2]:+.4f}).",
        f"- spread of one strategy's speed over initialisation draws (same run and target): {a['draw_sd']:.4f} (rms sd); spread between the strategies within a draw: {a['place_sd']:.4f}.",
        f"- the fastest strategy changes with the draw on {a['fastest_changes_with_draw']} of {a['run_targets']} (run, target) pairs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train further initialisation draws of a finished learngene study run")
    t.add_argument("run_dir", type=Path)
    t.add_argument("--repeats", type=int, default=4, help="draws in all, the run's own included")
    t.add_argument("--epochs", type=int, default=10, help="epochs per training (Fig. 10's window)")
    r = sub.add_parser("render", help=f"analyse runs' {TABLE} into {OUT_MD.name}")
    r.add_argument("run_dirs", type=Path, nargs="+")
    r.add_argument("--out", type=Path, default=OUT_MD)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        if args.repeats < 1 or args.epochs < 1:
            ap.error("--repeats and --epochs must be >= 1")
        train_draws(args.run_dir, args.repeats, args.epochs, log=lambda s: print(s, flush=True))
        return 0
    if missing := [str(d) for d in args.run_dirs if not (d / TABLE).is_file()]:
        ap.error(f"no {TABLE} in {', '.join(missing)} (run `train` on it first)")
    text = render(args.run_dirs)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
