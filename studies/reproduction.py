"""The papers' headline claims against airfleet's runs: ``docs/reproduction.md``.

One :class:`Claim` per headline result of the four papers (learngene Table I, Fig. 9-13,
Table IV; CSI feedback Fig. 7, 8, 10, Table IV; influence single- vs multi-target;
X-REFINE FLOP reduction at comparable BER). Each names the study that measures it and
reads airfleet's figure from that study's run directory (its ``summary.json`` and
Parquet tables, nothing else), then gives a verdict by a rule stated in the claim:

- ``reproduced``: the paper's statement holds on airfleet's numbers;
- ``partly``: its direction holds, its size or one of its parts does not;
- ``not``: it does not hold;
- ``not run``: no run directory of that study was given.

The paper's figures are quoted as the papers print them; every airfleet figure comes
from a run directory, so the page is regenerated, never edited:

    airfleet reproduction [RUN_DIR ...] [--runs-dir runs] [--evidence DIR] [-o docs/reproduction.md]

Without RUN_DIRs the newest run of each study kind and seed under ``--runs-dir`` is used.
With ``--evidence DIR`` those runs' small outputs (:data:`EVIDENCE_FILES`: the summary,
the scenario, the environment and the Parquet tables; no weights, no plots) are first
kept in ``DIR/<kind>/<run name>/`` (replacing an older run of the same kind and seed),
and the page is rendered from everything kept there. ``docs/evidence`` is that directory
for ``docs/reproduction.md``, so a fresh clone rebuilds the page with
``airfleet reproduction --runs-dir docs/evidence -o docs/reproduction.md`` (``make
reproduction``).
"""

from __future__ import annotations

import functools
import json
import shutil
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

__all__ = ["CLAIMS", "EVIDENCE_FILES", "SCALE_ORDER", "Claim", "Measured", "RunOutput", "find_runs", "keep_evidence", "render", "evaluate"]

STUDY_SCENARIOS = {
    "learngene_paper": "scenarios/learngene_paper.toml",
    "csi_feedback_paper": "scenarios/csi_feedback_paper.toml",
    "influence_paper": "scenarios/influence_paper.toml",
    "xrefine": "scenarios/xrefine.toml",
    "sdnet_table1": "scenarios/sdnet_table1.toml",
}
REPRODUCED, PARTLY, NOT, NOT_RUN = "reproduced", "partly", "not", "not run"


@dataclass(frozen=True)
class RunOutput:
    """A study's run directory: its summary, its tables and how it was run."""

    run_dir: Path
    summary: dict[str, Any]
    study: dict[str, Any]
    seed: int | None = None

    @classmethod
    def load(cls, run_dir: Path) -> RunOutput:
        summary = json.loads((run_dir / "summary.json").read_text())
        resolved = run_dir / "scenario.resolved.json"
        scenario = json.loads(resolved.read_text()) if resolved.is_file() else {}
        seed = scenario.get("seed")
        return cls(run_dir, summary, scenario.get("study", {}), int(seed) if seed is not None else None)

    @property
    def kind(self) -> str:
        return str(self.summary.get("study", ""))

    @property
    def scale(self) -> str:
        return str(self.summary.get("scale") or self.study.get("scale") or "default")

    @property
    def cpu_kernels(self) -> str:
        """torch's CPU kernel set the run used (``environment.json``), ``-`` when unknown."""
        p = self.run_dir / "environment.json"
        try:
            return str(json.loads(p.read_text()).get("cpu_capability") or "-")
        except (OSError, ValueError):
            return "-"

    @property
    def channels(self) -> str:
        """The channel model the run's summary names (``gbsm``'s geometry), ``-`` when it names none."""
        return str(self.summary.get("channel_model") or "-")

    def table(self, name: str) -> list[dict[str, Any]]:
        """Rows of ``<name>.parquet`` (empty when the run did not write it)."""
        p = self.run_dir / f"{name}.parquet"
        return pq.read_table(p).to_pylist() if p.is_file() else []


@dataclass(frozen=True)
class Measured:
    """airfleet's figure for a claim, the verdict and the reason in a few words."""

    figure: str
    verdict: str
    why: str


@dataclass(frozen=True)
class Claim:
    """One headline result of a paper.

    Attributes
    ----------
    paper, where : str
        Short paper name and the figure or table (the paper's numbering).
    claim : str
        What the paper states.
    paper_figure : str
        The paper's numbers, as printed.
    study : str
        The study kind whose run measures it.
    measure : callable
        ``RunOutput -> Measured``.
    """

    paper: str
    where: str
    claim: str
    paper_figure: str
    study: str
    measure: Callable[[RunOutput], Measured]


def _e(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else "n/a"


def _mean(xs: Iterable[float]) -> float:
    v = [float(x) for x in xs]
    return float(np.mean(v)) if v else float("nan")


# ----------------------------------------------------------------------------- learngene
def _ser_at(run: RunOutput) -> dict[str, float]:
    return {str(k): float(v) for k, v in run.summary.get("ser_at_train_snr", {}).items()}


#: the map's line (docs/sdnet_fidelity/map.md): SDNet ends below MMSE at the paper's
#: per-task recipe only on tasks whose H-blind ML bound is at most about this x MMSE
LEARNER_BOUND = 0.3
#: a bound measured on fewer MMSE errors than this says nothing about the task
BOUND_MIN_ERRORS = 20


def _bound_reasons(run: RunOutput, misses: list[tuple[int, float]], epochs: int | None) -> str:
    """Why each task that misses 0.5x MMSE misses, read against the H-blind ML bound the
    run's ``hblind_bounds`` table holds (``benchmarks/sdnet_map.py table1``, measured on the
    run's own held-out samples): ``misses`` is ``(task id, MMSE SER)``. Empty without bounds."""
    bounds = {int(r["task_id"]): r for r in run.table("hblind_bounds")}
    if not misses or not bounds:
        return ""
    groups: dict[str, list[str]] = {}
    for tid, mmse in misses:
        b = bounds.get(tid)
        if b is None:
            continue
        q = float(b["hblind_over_mmse"])
        if mmse * float(b["ml_symbols"]) < BOUND_MIN_ERRORS:
            why = "MMSE nearly error-free, nothing to beat by a factor"
        elif q <= LEARNER_BOUND:
            why = f"learner kind (bound <= {LEARNER_BOUND}x), short of 0.5x" + (f" after {epochs} epochs" if epochs else "")
        else:
            why = f"plateau kind (bound above {LEARNER_BOUND}x)"
        groups.setdefault(why, []).append(f"{tid} (MMSE {_e(mmse)})" if why.startswith("MMSE") else f"{tid} ({q:.2f}x)")
    parts = [f"{why}: task{'s' if len(t) > 1 else ''} {', '.join(t)}" for why, t in groups.items()]
    return "; by the H-blind ML bound over MMSE (docs/sdnet_fidelity/table1_bounds.md): " + "; ".join(parts) if parts else ""


def _table1_matched(run: RunOutput) -> Measured:
    ser = _ser_at(run)
    matched = float(run.summary.get("table1_matched_mean", float("nan")))
    zf, mmse = ser.get("zf", float("nan")), ser.get("mmse", float("nan"))
    fig = f"SDNet {_e(matched)}; ZF {_e(zf)}; MMSE {_e(mmse)} ({matched / mmse:.2f}x MMSE)"
    if matched < 0.5 * mmse:
        return Measured(fig, REPRODUCED, "SDNet below half of MMSE's SER")
    # per target: SDNet (table1) against MMSE (ser_snr) at the training SNR
    snr = float(run.summary.get("config", {}).get("snr_db", 25.0))
    mmse_at = {int(r["target"]): float(r["ser"]) for r in run.table("ser_snr") if r["scheme"] == "mmse" and float(r["snr_db"]) == snr}
    misses = [(int(r["train_target"]), mmse_at[int(r["train_target"])]) for r in run.table("table1")
              if r["matched"] and int(r["train_target"]) in mmse_at and float(r["ser"]) > 0.5 * mmse_at[int(r["train_target"])]]
    bounds = _bound_reasons(run, misses, run.summary.get("config", {}).get("individual_epochs"))
    if matched < mmse:
        return Measured(fig, PARTLY, "below MMSE, but not by the paper's 5-1000x" + bounds)
    return Measured(fig, NOT, "SDNet at or above MMSE" + (bounds or ": too few samples and steps for the task (docs/sdnet_fidelity.md)"))


def _table1_mismatch(run: RunOutput) -> Measured:
    m = float(run.summary.get("table1_matched_mean", float("nan")))
    mm = float(run.summary.get("table1_mismatched_mean", float("nan")))
    fig = f"matched {_e(m)}, mismatched {_e(mm)}"
    if not np.isfinite(mm):
        return Measured(fig, NOT_RUN, "one target task: no mismatched pair")
    return Measured(fig, REPRODUCED, "mismatched worse") if mm > m else Measured(fig, NOT, "mismatched not worse")


def _table1_per_task(run: RunOutput) -> Measured:
    """Table I at the paper's per-task recipe (``studies.sdnet_table1``): SDNet / MMSE per task."""
    per = run.summary["per_task"]
    q = [float(p["ratio_mmse"]) for p in per]
    fig = "; ".join(f"task {p['task_id']}: {_e(float(p['ser']))} ({float(p['ratio_mmse']):.2f}x MMSE {_e(float(p['ser_mmse']))})" for p in per)
    half, below = sum(x <= 0.5 for x in q), sum(x < 1.0 for x in q)
    if half == len(q):
        return Measured(fig, REPRODUCED, f"every task at or below half of MMSE's SER ({sum(x <= 0.2 for x in q)} at or below 0.2x)")
    misses = [(int(p["task_id"]), float(p["ser_mmse"])) for p in per if float(p["ratio_mmse"]) > 0.5]
    bounds = _bound_reasons(run, misses, run.study.get("epochs"))
    # a miss that fits its own training samples far better than held-out ones memorised them
    fits = [f"{p['task_id']} {_e(float(p['ser_train']))} (held out {_e(float(p['ser']))})" for p in per if "ser_train" in p and float(p["ratio_mmse"]) > 0.5]
    # with noise redrawn every epoch the model trained on the channels, never on that draw of noise
    own = "training channels, noise it never saw" if run.summary.get("config", {}).get("train_draws") == "per-epoch" else "own training samples"
    bounds += f"; SDNet's SER on its {own}: task{'s' if len(fits) > 1 else ''} {', '.join(fits)}" if fits else ""
    if below:
        return Measured(fig, PARTLY, f"{below}/{len(q)} tasks below MMSE, {half} at or below 0.5x; the paper's are 5-1000x below{bounds}")
    return Measured(fig, NOT, "no task below MMSE" + bounds)


def _within_noise(run: RunOutput, schemes: Iterable[str], label: str = "") -> str:
    """`` (... within each other's 95% CIs ...)`` when the test SERs of ``schemes`` at the
    training SNR (``ser_table``: binomial intervals over the pooled symbols) share a common
    point: the run cannot tell them apart. Empty otherwise."""
    rows = {r["scheme"]: r for r in run.table("ser_table")}
    names = [s for s in schemes if s in rows]
    if len(names) < 2 or max(float(rows[s]["ser_lo"]) for s in names) > min(float(rows[s]["ser_hi"]) for s in names):
        return ""
    return f"; {label or ', '.join(names)} within each other's 95% CIs at {int(rows[names[0]]['symbols']):,} test symbols"


def _fig9_strategies(run: RunOutput) -> Measured:
    ser = _ser_at(run)
    six = {k: v for k, v in ser.items() if k.endswith(("-embed", "-inherit"))}
    if not six or "scratch" not in ser:
        return Measured("n/a", NOT_RUN, "no strategy rows")
    best = min(six, key=six.get)
    beat_scratch = sum(v < ser["scratch"] for v in six.values())
    fig = "; ".join(f"{k} {_e(v)}" for k, v in sorted(six.items(), key=lambda kv: kv[1])) + f"; scratch {_e(ser['scratch'])}"
    bottom_best = best.startswith("bottom")
    if bottom_best and beat_scratch == len(six):
        return Measured(fig, REPRODUCED, "bottom best, all six below scratch")
    noise = _within_noise(run, [*six, "scratch"], "the six and scratch")
    if bottom_best or beat_scratch == len(six):
        return Measured(fig, PARTLY, f"best: {best}; {beat_scratch}/{len(six)} below scratch{noise}")
    return Measured(fig, NOT, f"best: {best}; {beat_scratch}/{len(six)} below scratch{noise}")


def _epoch_curves(run: RunOutput) -> dict[str, list[float]]:
    """Per scheme: validation SER per epoch, averaged over target tasks."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in run.table("ser_epoch"):
        acc.setdefault(r["scheme"], {}).setdefault(int(r["epoch"]), []).append(float(r["val_ser"]))
    return {s: [_mean(per[e]) for e in sorted(per)] for s, per in acc.items()}


def _fig10_convergence(run: RunOutput) -> Measured:
    curves = _epoch_curves(run)
    six = {s: _mean(c[1:]) for s, c in curves.items() if s.endswith(("-embed", "-inherit")) and len(c) > 1}
    if not six:
        return Measured("n/a", NOT_RUN, "no per-epoch rows")
    best = min(six, key=six.get)
    fig = "mean val SER over epochs: " + "; ".join(f"{k} {_e(v)}" for k, v in sorted(six.items(), key=lambda kv: kv[1])[:3])
    draws = run.table("positions")
    if not draws:
        return Measured(fig, REPRODUCED if best.startswith("bottom") else NOT, f"fastest: {best}")
    # initialisation draws of the same run (studies.learngene_draws): the ranking over draws decides
    from studies.learngene_draws import analyse as analyse_draws  # imported (with torch) only when a run has draws

    a = analyse_draws([dict(r, run=run.run_dir.name) for r in draws])
    n_draws, n_epochs = len({r["repeat"] for r in draws}), max(int(r["epoch"]) for r in draws)
    first, n, d = a["bottom_fastest"], a["blocks"], a["learngene_minus_scratch"]
    fig += f"<br>over {n_draws} initialisation draws ({n_epochs} epochs): learngene (bottom) fastest in {first}/{n} blocks"
    why = (f"over {n_draws} initialisation draws the fastest strategy changes with the draw on {a['fastest_changes_with_draw']}/{a['run_targets']} targets; "
           f"place of the unit: Friedman p = {a['friedman_p']:.2f}; one strategy's speed spreads {a['draw_sd']:.3f} over draws, the strategies {a['place_sd']:.3f} within one; "
           f"learngene - scratch {d[0]:+.3f} (95% CI {d[1]:+.3f} .. {d[2]:+.3f})")
    good = a["bottom_fastest_p"] < 0.05 and a["friedman_p"] < 0.05
    return Measured(fig, REPRODUCED if good else NOT, f"fastest: {best} in the run's own draw; {why}")


def _head_start(curves: dict[str, list[float]]) -> str:
    """Why transfer learning is ahead, in the run's own numbers: it starts from a whole
    trained model (its validation SER at epoch 0), learngene from a unit in an otherwise
    fresh model."""
    if not all(curves.get(s) for s in ("transfer", "learngene")):
        return ""
    t0, l0 = curves["transfer"][0], curves["learngene"][0]
    return f" (epoch 0: transfer {_e(t0)}, learngene {_e(l0)}; transfer inherits every layer, and {len(curves['learngene']) - 1} epochs do not close that head start)" if t0 < l0 else ""


def _fig11_schemes(run: RunOutput) -> Measured:
    curves = _epoch_curves(run)
    need = ("scratch", "transfer", "learngene")
    if not all(s in curves and curves[s] for s in need):
        return Measured("n/a", NOT_RUN, "no scratch / transfer / learngene curves")
    final = {s: curves[s][-1] for s in need}
    fig = f"final val SER (epoch {len(curves['learngene']) - 1}): " + "; ".join(f"{s} {_e(final[s])}" for s in need)
    lg_best = final["learngene"] < min(final["scratch"], final["transfer"])
    if lg_best and final["scratch"] >= final["transfer"]:
        return Measured(fig, REPRODUCED, "learngene lowest, scratch highest")
    if final["learngene"] < final["scratch"]:
        return Measured(fig, PARTLY, "learngene below scratch" + ("" if lg_best else ", not below transfer" + _head_start(curves)))
    return Measured(fig, NOT, "learngene not below scratch" + _within_noise(run, ("learngene", "scratch")))


def _fig12_snr(run: RunOutput) -> Measured:
    by: dict[str, dict[float, list[float]]] = {}
    for r in run.table("ser_snr"):
        by.setdefault(r["scheme"], {}).setdefault(float(r["snr_db"]), []).append(float(r["ser"]))
    if not all(s in by for s in ("scratch", "transfer", "learngene")):
        return Measured("n/a", NOT_RUN, "no SER-vs-SNR rows")
    snrs = sorted(by["learngene"])
    wins = sum(_mean(by["learngene"][s]) < min(_mean(by["scratch"][s]), _mean(by["transfer"][s])) for s in snrs)
    fig = f"learngene below both at {wins}/{len(snrs)} SNRs ({snrs[0]:g}-{snrs[-1]:g} dB)"
    verdict = REPRODUCED if wins == len(snrs) else PARTLY if wins > 0 else NOT
    lost_to_transfer = sum(_mean(by["learngene"][s]) >= _mean(by["transfer"][s]) for s in snrs)
    why = "at every SNR" if wins == len(snrs) else f"not at every SNR; transfer at or below learngene at {lost_to_transfer}/{len(snrs)}" + _head_start(_epoch_curves(run))
    return Measured(fig, verdict, why)


def _fig13_scaling(run: RunOutput) -> Measured:
    acc: dict[str, list[float]] = {}
    for r in run.table("scaling"):
        if int(r["epoch"]) > 0:
            acc.setdefault(r["scheme"], []).append(float(r["val_ser"]))
    if not {"scratch", "learngene"} <= set(acc):
        return Measured("n/a", NOT_RUN, "scaling experiment off")
    s, lg = _mean(acc["scratch"]), _mean(acc["learngene"])
    fig = f"mean val SER over epochs at n_t/2: learngene {_e(lg)}, scratch {_e(s)}"
    return Measured(fig, REPRODUCED if lg < s else NOT, "learngene adapts faster" if lg < s else "learngene not faster")


#: Table IV of the learngene paper at (32, 8): parameters and FLOPs per model
_TABLE4 = {"individual": (21_627, 9_917_440), "collective": (24_027, 14_709_760), "learngene unit": (2_336, 4_792_320)}


def _table4_complexity(run: RunOutput) -> Measured:
    rows = {r["model"]: r for r in run.table("complexity") if str(r["config"]).startswith("paper") and r["scheme"] == "learngene"}
    if not rows:
        return Measured("n/a", NOT_RUN, "no complexity rows")
    parts, exact_params, exact_flops = [], 0, 0
    for model, (p, f) in _TABLE4.items():
        r = rows.get(model)
        if r is None:
            continue
        parts.append(f"{model} {int(r['params']):,} params / {int(r['flops']):,} FLOPs")
        exact_params += int(r["params"]) == p
        exact_flops += int(r["flops"]) == f
    ratio = float(rows.get("individual", {}).get("transferred_ratio", float("nan")))
    fig = "; ".join(parts) + f"; ratio {ratio:.1%}"
    if exact_params == len(_TABLE4) and exact_flops == len(_TABLE4):
        return Measured(fig, REPRODUCED, "parameters and FLOPs equal the paper's")
    if exact_params == len(_TABLE4):
        return Measured(fig, PARTLY, "parameters equal; FLOPs counted differently")
    return Measured(fig, NOT, "parameter counts differ")


# ----------------------------------------------------------------------------- CSI feedback
def _rd_rows(run: RunOutput) -> list[dict[str, Any]]:
    """The CSI study's RD rows: ``rd.parquet``, else the summary's copy of them."""
    return run.table("rd") or run.summary.get("rd", [])


def _rd_points(run: RunOutput, experiment: str = "schemes") -> dict[str, list[tuple[float, float]]]:
    """Per scheme: (total bits/dim, NMSE dB) points."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in _rd_rows(run):
        if r.get("experiment") == experiment:
            out.setdefault(str(r["scheme"]), []).append((float(r["bits_per_dim_total"]), float(r["nmse_db"])))
    return out


def _best_at_rate(points: list[tuple[float, float]], rate: float) -> float:
    """Lowest NMSE among points whose rate is at most ``rate`` (inf when none)."""
    v = [n for r, n in points if r <= rate + 1e-9]
    return min(v) if v else float("inf")


def _fig7_schemes(run: RunOutput) -> Measured:
    """Each FM point against each rival curve (EO, TM) at the FM point's rate: the
    rival's best NMSE at that rate or lower, or, where the rival has no point that cheap,
    its cheapest point (which then spends more rate than FM)."""
    pts = _rd_points(run)
    if "FM" not in pts or "EO" not in pts:
        return Measured("n/a", NOT_RUN, "no FM / EO points")
    rivals = [s for s in ("EO", "TM") if s in pts]

    def rival_at(s: str, rate: float) -> float:
        best = _best_at_rate(pts[s], rate)
        return best if np.isfinite(best) else min(pts[s])[1]

    beats = {s: sum(n < rival_at(s, r) for r, n in pts["FM"]) for s in rivals}
    n_fm = len(pts["FM"])
    fig = f"FM {min(n for _, n in pts['FM']):.2f} dB best; " + "; ".join(
        f"{s} {min(n for _, n in pts[s]):.2f} dB best, FM below it at its rate at {beats[s]}/{n_fm} FM points" for s in rivals
    )
    if all(b == n_fm for b in beats.values()):
        return Measured(fig, REPRODUCED, "FM below every rival curve at every FM rate")
    if any(beats.values()):
        won = [s for s in rivals if beats[s] == n_fm]
        return Measured(fig, PARTLY, f"FM beats {', '.join(won) or 'no rival'} everywhere; not " + ", ".join(s for s in rivals if s not in won))
    return Measured(fig, NOT, "FM nowhere below the rivals at its rate")


def _update_bits(run: RunOutput) -> dict[tuple[str, float], float]:
    rows = _rd_rows(run)
    return {(str(r["scheme"]), float(r["lmbda"])): float(r["bits_per_dim_update"]) for r in rows if r.get("experiment") == "schemes"}


def _fig8_ablations(run: RunOutput) -> Measured:
    ub = _update_bits(run)
    lms = sorted(lm for s, lm in ub if s == "FM")
    ratios = {a: [ub[(a, lm)] / max(ub[("FM", lm)], 1e-12) for lm in lms if (a, lm) in ub] for a in ("FM-UP", "FM-noreg")}
    if not lms or not all(ratios.values()):
        return Measured("n/a", NOT_RUN, "no ablation points")
    fig = "; ".join(f"{a} update rate {min(r):.1f}-{max(r):.1f}x FM's" for a, r in ratios.items())
    allr = [x for r in ratios.values() for x in r]
    if min(allr) > 1.0:
        return Measured(fig, REPRODUCED, "both ablations' update rates exceed FM's at every RD weight")
    return Measured(fig, PARTLY if max(allr) > 1.0 else NOT, "not above FM's at every RD weight")


def _table4_resolution(run: RunOutput) -> Measured:
    rows = [r for r in run.table("rd") if r.get("experiment") == "quant_sweep"]
    if not rows:
        return Measured("n/a", NOT_RUN, "no resolution sweep")
    rows.sort(key=lambda r: int(r["n_bins"]))
    best = min(rows, key=lambda r: float(r["rd_cost"]))
    fig = "; ".join(f"{int(r['n_bins'])} bins: {float(r['bits_per_dim_total']):.2f} b/dim, {float(r['nmse_db']):.2f} dB" for r in rows)
    fig += f"; least RD cost at {int(best['n_bins'])} bins"
    coarsest_worst = float(rows[0]["rd_cost"]) == max(float(r["rd_cost"]) for r in rows)
    interior = best is not rows[0] and best is not rows[-1]
    if interior and coarsest_worst:
        return Measured(fig, REPRODUCED, "an intermediate resolution is best, the coarsest worst")
    return Measured(fig, PARTLY if coarsest_worst or interior else NOT, "best at an end of the sweep" if not interior else "coarsest not worst")


def _fig10_interval(run: RunOutput) -> Measured:
    rows = run.table("interval") or run.summary.get("interval", [])
    if not rows:
        return Measured("n/a", NOT_RUN, "no interval study")
    ivs = sorted(float(r["interval_m"]) for r in rows)
    best = float(min(rows, key=lambda r: float(r["rd_cost"]))["interval_m"])
    fig = f"least RD cost at {best:g} m of {ivs[0]:g}-{ivs[-1]:g} m"
    if ivs[0] < best < ivs[-1]:
        return Measured(fig, REPRODUCED if 8.0 <= best <= 16.0 else PARTLY, "an interior sweet spot" + ("" if 8.0 <= best <= 16.0 else ", not at 8-16 m (other track and scale)"))
    return Measured(fig, NOT, "best at an end of the sweep: no sweet spot inside it")


# ----------------------------------------------------------------------------- influence
def _gap(run: RunOutput, scenario: str, selection: str) -> dict[str, float]:
    out = {}
    for r in run.table("gap_table") or run.summary.get("gap_table", []):
        if r["scenario"] == scenario and r["selection"] == selection and r["update"] == "first_order":
            out[str(r["receiver"])] = float(r["gap_reduction_targets_mean"])
    return out


def _influence_single(run: RunOutput) -> Measured:
    inf, rnd = _gap(run, "single", "beneficial"), _gap(run, "single", "random")
    rx = sorted(set(inf) & set(rnd))
    if not rx:
        return Measured("n/a", NOT_RUN, "no single-target runs")
    wins = sum(inf[r] > rnd[r] for r in rx)
    fig = "; ".join(f"{r}: influence {inf[r]:+.1%}, random {rnd[r]:+.1%}" for r in rx)
    verdict = REPRODUCED if wins == len(rx) and all(inf[r] > 0 for r in rx) else PARTLY if wins else NOT
    return Measured(fig, verdict, f"influence beats random for {wins}/{len(rx)} receivers")


def _influence_multi(run: RunOutput) -> Measured:
    single, multi = _gap(run, "single", "beneficial"), _gap(run, "multi", "beneficial")
    rx = sorted(set(single) & set(multi))
    if not rx:
        return Measured("n/a", NOT_RUN, "no multi-target runs")
    harder = sum(multi[r] < single[r] for r in rx)
    fig = "; ".join(f"{r}: multi {multi[r]:+.1%} vs single {single[r]:+.1%}" for r in rx)
    return Measured(fig, REPRODUCED if harder == len(rx) else PARTLY if harder else NOT, f"multi-target weaker for {harder}/{len(rx)} receivers")


# ----------------------------------------------------------------------------- X-REFINE
def _xrefine_flops(run: RunOutput) -> Measured:
    rows = run.table("summary")
    if not rows:
        return Measured("n/a", NOT_RUN, "no X-REFINE summary")
    rel = [r for r in rows if r["method"] == "relevance"]
    met = [r for r in rel if r["met"]]
    best_other: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["method"] != "relevance":
            k = (r["selectivity"], r["modulation"])
            best_other[k] = max(best_other.get(k, 0.0), float(r["flop_reduction"]))
    ahead = sum(float(r["flop_reduction"]) >= best_other.get((r["selectivity"], r["modulation"]), 0.0) for r in rel)
    fig = "; ".join(f"{r['selectivity']}/{r['modulation']}: -{float(r['flop_reduction']):.0%} FLOPs at BER {_e(float(r['ber']))}" for r in rel)
    fig += f" (target: {run.summary.get('target_ber_ratio', '?')}x the full model's BER)"
    if met and len(met) == len(rel) and ahead == len(rel) and all(float(r["flop_reduction"]) > 0 for r in rel):
        return Measured(fig, REPRODUCED, "relevance cuts FLOPs at the target BER, at least as much as magnitude and random")
    return Measured(fig, PARTLY if met else NOT, f"target met in {len(met)}/{len(rel)} settings; ahead of other criteria in {ahead}/{len(rel)}")


LG, CSI, INF, XR = "Learngene (Zhang et al.)", "CSI feedback fine-tuning", "Influence functions (Tuononen et al.)", "X-REFINE (Gizzini, Medjahdi)"

CLAIMS: tuple[Claim, ...] = (
    Claim(LG, "Table I", "SDNet trained on its task beats ZF and MMSE", "SDNet 1.0e-4 ... 2.3e-2; ZF 0.065-0.126; MMSE 0.050-0.117", "learngene_paper", _table1_matched),
    Claim(LG, "Table I", "mismatched train/test tasks raise SDNet's SER", "mismatched above matched", "learngene_paper", _table1_mismatch),
    Claim(LG, "Table I", "SDNet trained on its task at the paper's per-task recipe beats ZF and MMSE", "SDNet 1.0e-4 ... 2.3e-2; ZF 0.065-0.126; MMSE 0.050-0.117", "sdnet_table1", _table1_per_task),
    Claim(LG, "Table I", "mismatched train/test tasks raise SDNet's SER, at the paper's per-task recipe", "mismatched above matched", "sdnet_table1", _table1_mismatch),
    Claim(LG, "Fig. 9", "bottom strategies best; every learngene strategy beats scratch", "embed top/mid/bottom 1.02e-4 / 6.00e-5 / 3.50e-5; inherit top/mid 8.25e-5 / 8.00e-5; scratch 1.17e-4", "learngene_paper", _fig9_strategies),
    Claim(LG, "Fig. 10", "bottom embedding / inheriting converges fastest", "bottom fastest", "learngene_paper", _fig10_convergence),
    Claim(LG, "Fig. 11", "learngene ends below transfer learning and scratch", "learngene < transfer < scratch after 200 epochs", "learngene_paper", _fig11_schemes),
    Claim(LG, "Fig. 12", "learngene below both benchmarks at every SNR 20-30 dB", "1 dB over scratch, 0.6 dB over transfer", "learngene_paper", _fig12_snr),
    Claim(LG, "Fig. 13", "the unit serves N_t = 4 through the upsampling layer, faster than scratch", "learngene adapts faster", "learngene_paper", _fig13_scaling),
    Claim(LG, "Table IV", "model sizes and the transferred ratio", "individual 21,627 / collective 24,027 / unit 2,336 params; 9,917,440 / 14,709,760 / 4,792,320 FLOPs; 10.8 %", "learngene_paper", _table4_complexity),
    Claim(CSI, "Fig. 7", "full-model fine-tuning (FM) beats encoder-only (EO) and TM in RD", "EO and TM marginal; FM significant gain", "csi_feedback_paper", _fig7_schemes),
    Claim(CSI, "Fig. 8", "uniform prior or no update regularizer make the update rate explode", "FM-UP and no-regularizer rates far above FM-SSP", "csi_feedback_paper", _fig8_ablations),
    Claim(CSI, "Table IV", "an intermediate update resolution is the best RD trade-off", "64 bins best; 8 bins much worse; 128 no gain", "csi_feedback_paper", _table4_resolution),
    Claim(CSI, "Fig. 10", "an update interval sweet spot along the track", "8-16 m", "csi_feedback_paper", _fig10_interval),
    Claim(INF, "Fig. 4 (a, b)", "influence-guided single-target fine-tuning beats random", "BER gap reduced toward genie, above random", "influence_paper", _influence_single),
    Claim(INF, "Fig. 4 (c, d)", "multi-target adaptation is less effective", "multi-target gains smaller", "influence_paper", _influence_multi),
    Claim(XR, "abstract", "relevance filtering and pruning cut FLOPs at comparable BER", "significant complexity reduction, robust BER", "xrefine", _xrefine_flops),
)


#: Scales in the order the page lists them: the CPU defaults first, the papers' sizes last
SCALE_ORDER = ("quick", "reduced", "default", "paper-per-task", "paper-per-task-learners", "paper-per-task-learners-redraw", "paper")


def _scale_rank(scale: str) -> int:
    return SCALE_ORDER.index(scale) if scale in SCALE_ORDER else len(SCALE_ORDER)


def find_runs(runs_root: Path) -> dict[str, list[RunOutput]]:
    """Per study kind, the newest run directory of each scale and seed under ``runs_root``
    (by name, which ends in the run's timestamp), ordered by scale (:data:`SCALE_ORDER`)
    then seed. Run directories are ``runs_root``'s children, or its grandchildren (an
    evidence directory's ``<kind>/<run name>/``)."""
    found: dict[str, dict[tuple[str, int | None], RunOutput]] = {}
    if not runs_root.is_dir():
        return {}
    candidates = [d for d in runs_root.iterdir() if d.is_dir()]
    candidates += [g for d in candidates if not (d / "summary.json").is_file() for g in d.iterdir() if g.is_dir()]
    for d in sorted(candidates, key=lambda p: p.name):
        if (d / "summary.json").is_file():
            try:
                run = RunOutput.load(d)
            except (OSError, ValueError):
                continue
            if run.kind in STUDY_SCENARIOS:
                found.setdefault(run.kind, {})[(run.scale, run.seed)] = run
    order = lambda k: (_scale_rank(k[0]), k[0], k[1] is None, k[1] or 0)  # noqa: E731
    return {kind: [v[k] for k in sorted(v, key=order)] for kind, v in found.items()}


#: What a claim may read from a run directory, and so what evidence keeps: a few KiB a run.
EVIDENCE_FILES = ("summary.json", "scenario.resolved.json", "scenario.toml", "environment.json", "*.parquet")


def keep_evidence(run: RunOutput, root: Path) -> RunOutput:
    """Copy ``run``'s :data:`EVIDENCE_FILES` to ``root/<kind>/<run name>/``, removing any
    other run of the same kind, scale and seed kept there; returns the kept copy."""
    kind_dir = root / run.kind
    dest = kind_dir / run.run_dir.name
    if dest.resolve() == run.run_dir.resolve():
        return run
    if kind_dir.is_dir():
        for old in kind_dir.iterdir():
            if old.is_dir() and old.name != dest.name and (old / "summary.json").is_file():
                try:
                    kept = RunOutput.load(old)
                    same = (kept.seed, kept.scale) == (run.seed, run.scale)
                except (OSError, ValueError):
                    same = False
                if same:
                    shutil.rmtree(old)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for pattern in EVIDENCE_FILES:
        for f in run.run_dir.glob(pattern):
            if f.is_file():
                shutil.copy2(f, dest / f.name)
    return RunOutput.load(dest)


def _combine(per_seed: list[tuple[RunOutput, Measured]]) -> Measured:
    """One claim over several seeds: every seed's figure, the most common verdict and how
    many seeds gave it (the spread a reader needs to tell a difference from noise), with the
    reason of every seed that gave it, once per distinct reason."""
    if len(per_seed) == 1:
        return per_seed[0][1]
    verdicts = [m.verdict for _, m in per_seed]
    top = max(dict.fromkeys(verdicts), key=verdicts.count)
    figure = "<br>".join(f"seed {r.seed}: {m.figure}" for r, m in per_seed)
    seeds_by_why: dict[str, list[str]] = {}
    for r, m in per_seed:
        if m.verdict == top:
            seeds_by_why.setdefault(m.why, []).append(str(r.seed))
    if len(seeds_by_why) == 1:
        why = next(iter(seeds_by_why))
    else:  # the seeds agree on the verdict for different reasons: quote each reason
        why = "; ".join(f"seed{'s' if len(s) > 1 else ''} {', '.join(s)}: {w}" for w, s in seeds_by_why.items())
    return Measured(figure, top, f"{why} ({verdicts.count(top)}/{len(verdicts)} seeds)")


def evaluate(runs: dict[str, list[RunOutput]]) -> list[tuple[Claim, Measured, RunOutput | None]]:
    """Each claim with airfleet's measurement over the runs of its study (one per seed),
    once per scale its study was run at (``not run`` without any run)."""
    out = []
    for c in CLAIMS:
        study_runs = runs.get(c.study, [])
        if not study_runs:
            out.append((c, Measured("-", NOT_RUN, "no run directory of this study"), None))
            continue
        for scale in dict.fromkeys(r.scale for r in study_runs):
            per_seed = []
            for run in (r for r in study_runs if r.scale == scale):
                try:
                    per_seed.append((run, c.measure(run)))
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
                    per_seed.append((run, Measured("-", NOT_RUN, f"run output lacks what this claim reads ({type(e).__name__}: {e})")))
            out.append((c, _combine(per_seed), per_seed[-1][0]))
    return out


@functools.cache
def _shipped_study(kind: str) -> dict[str, Any]:
    """The ``[study]`` table of the scenario file the repository ships for ``kind`` (empty if unreadable)."""
    try:
        return dict(tomllib.loads((Path(__file__).resolve().parents[1] / STUDY_SCENARIOS[kind]).read_text()).get("study", {}))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


#: ``[study]`` keys besides ``scale`` that select what a run is, named in its command when a
#: run's value differs from the shipped scenario file's
COMMAND_KEYS = ("task_kind", "epochs", "train_draws")


def _command(kind: str, scale: str, study: dict[str, Any] | None = None) -> str:
    """The command that makes a run of ``kind`` at ``scale`` (with ``study``, the run's
    resolved ``[study]`` table): the study's scenario file, with the scale key, and any of
    :data:`COMMAND_KEYS`, named when the file ships another value."""
    shipped = _shipped_study(kind)
    keys = {"scale": scale} | {k: (study or {})[k] for k in COMMAND_KEYS if k in (study or {})}
    extra = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in keys.items() if k in shipped and v != shipped[k])
    return f"`airfleet run {STUDY_SCENARIOS[kind]}`" + (f" with {extra}" if extra else "")


def _budget(run: RunOutput) -> str:
    """The SDNet training a run did, from its summary's ``config`` (one scale name covers
    different budgets in different studies); ``-`` for a study that states none."""
    c = run.summary.get("config", {})
    try:
        if "collective_tasks" in c:
            return (f"{c['collective_tasks']} collective tasks x {c['collective_epochs']} epochs, {c['target_tasks']} targets x {c['individual_epochs']} epochs; "
                    f"{int(c['individual_samples']):,} samples, batch {c['batch_size']}")
        if "train_samples" in c and "epochs" in c:
            redrawn = "; symbols, pilots and noise redrawn every epoch" if c.get("train_draws") == "per-epoch" else ""
            return f"{len(run.summary.get('tasks', []))} tasks x {c['epochs']} epochs; {int(c['train_samples']):,} samples, batch {c['batch_size']}{redrawn}"
    except (KeyError, TypeError, ValueError):
        pass
    return "-"


def render(runs: dict[str, list[RunOutput]]) -> str:
    """``docs/reproduction.md`` as text."""
    rows = evaluate(runs)
    count = {v: sum(m.verdict == v for _, m, _ in rows) for v in (REPRODUCED, PARTLY, NOT, NOT_RUN)}
    lines = [
        "# Reproduction: the papers' headline claims on airfleet",
        "",
        "Generated by `airfleet reproduction` from the run directories listed below; do not edit.",
        "Verdict rules are in `studies/reproduction.py`; the paper's figures are quoted as printed.",
        "",
        f"**{count[REPRODUCED]} reproduced, {count[PARTLY]} partly, {count[NOT]} not, {count[NOT_RUN]} not run** of {len(rows)} claims"
        + (f" ({len(CLAIMS)} claims, each once per scale its study was run at)." if len(rows) > len(CLAIMS) else "."),
        "",
        "| paper | where | claim | paper's figure | airfleet's figure | scale | command | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, m, run in rows:
        scale = run.scale if run else "-"
        cmd = _command(c.study, scale, run.study) if run else f"`airfleet run {STUDY_SCENARIOS[c.study]}`"
        lines.append(f"| {c.paper} | {c.where} | {c.claim} | {c.paper_figure} | {m.figure} | {scale} | {cmd} | **{m.verdict}**: {m.why} |")
    lines += ["", "## Runs", "", "| study | run directory | seed | scale | training budget | channels | wall (s) | CPU kernels | command |", "|---|---|---|---|---|---|---|---|---|"]
    for kind, scen in STUDY_SCENARIOS.items():
        if not runs.get(kind):
            lines.append(f"| {kind} | not run | - | - | - | - | - | - | `airfleet run {scen}` |")
        for run in runs.get(kind, []):
            wall = run.summary.get("wall_s")
            wall_s = f"{float(wall):.0f}" if wall is not None else "-"
            if int(run.summary.get("sittings") or 1) > 1:
                wall_s += f" ({int(run.summary['sittings'])} sittings)"
            lines.append(f"| {kind} | `{run.run_dir.name}` | {run.seed} | {run.scale} | {_budget(run)} | {run.channels} | {wall_s} | {run.cpu_kernels} | {_command(kind, run.scale, run.study)} |")
    lines += [
        "",
        "Scale: `quick` and `reduced` are a study's CPU default (minutes on two cores); `paper` is the papers'",
        "own sizes, a GPU job; `paper-per-task` is the paper's per-task recipe (samples, batch, epochs per",
        "task) with fewer tasks, as the study's `PER_TASK_SCALE` or scenario file says; `paper-per-task-learners`",
        "is the same recipe on the tasks of the kind SDNet learns at it (`task_kind = \"learner\"`: the fitted",
        f"H-blind detector at most {LEARNER_BOUND}x MMSE on the task's training samples, docs/sdnet_fidelity.md); `default` is a study",
        "without a scale switch, at its scenario file's sizes (stated in the file's header). A claim whose",
        "study was run at several scales has one row per scale. With runs of several seeds (`seed = ...` in a copy of the scenario),",
        "each figure lists every seed's value and the verdict says how many seeds agree.",
        "",
        "Across machines: torch, oneDNN and MKL pick CPU kernels by the instruction set, and",
        "training amplifies their last-bit differences, so the same commit and seed can give",
        "another trained figure on another CPU (`python benchmarks/cpu_isa_spread.py` measures it",
        "on one machine by capping the kernels). Tell such a difference from noise with the seed",
        "spread above; for like-for-like numbers run both machines with the same kernel set, e.g.",
        "`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` (column",
        "`CPU kernels`, from each run's `environment.json`).",
        "",
    ]
    return "\n".join(lines)
