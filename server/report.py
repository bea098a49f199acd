"""Summaries and plots of a fleet run, drawn from its tables alone.

``airfleet report RUN_DIR`` calls ``report_run``; the server calls it at the end of a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from server.plotting import pyplot as _plt

__all__ = ["class_summary", "round_latency", "draw_fleet_plots", "draw_csi_rd", "report_run", "format_class_table", "sdnet_vs_mmse_note", "SDNET_NOTE"]


def _plt_ticker():  # noqa: ANN202 - matplotlib.ticker module
    import matplotlib.ticker

    return matplotlib.ticker


#: SER plotted for a zero SER on the log axis (below one error in 10^5 symbols)
SER_FLOOR = 1e-5


def _finite(v: Any) -> bool:
    """``v`` is a number and not NaN or infinite (a table cell that holds a measurement)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def class_summary(rounds: pa.Table) -> list[dict[str, Any]]:
    """One dict per device class: devices, rows by status, mean metrics of its last round.

    SER figures are the mean over the class's devices that replied in the last round in
    which any of them did; bytes are totals over the run.
    """
    rows = rounds.to_pylist()
    out = []
    for cls in dict.fromkeys(r["device_class"] for r in rows):
        mine = [r for r in rows if r["device_class"] == cls]
        ok = [r for r in mine if r["status"] == "ok"]
        last_round = max((r["round"] for r in ok), default=None)
        last = [r for r in ok if r["round"] == last_round]
        s: dict[str, Any] = {
            "class": cls,
            "devices": len({r["device_id"] for r in mine}),
            "ok": len(ok),
            "failed": sum(r["status"] == "failed" for r in mine),
            "timeout": sum(r["status"] == "timeout" for r in mine),
            "late": sum(r["status"] == "late" for r in mine),
            "unavailable": sum(r["status"] == "unavailable" for r in mine),
            "n_params": _mean([r["n_params"] for r in last]),
            "ser": _mean([r.get("ser") for r in last]),
            "ser_zf": _mean([r.get("ser_zf") for r in last]),
            "ser_mmse": _mean([r.get("ser_mmse") for r in last]),
            "ser_hblind_fit": _mean([r.get("ser_hblind_fit") for r in last]),  # NaN for classes without hblind_baseline
            "bytes_down": sum(r["bytes_down"] or 0 for r in mine),
            "bytes_up": sum(r["bytes_up"] or 0 for r in mine),
            "coded_bits": sum(r["coded_bits"] or 0 for r in mine),
            "emulated_s_mean": _mean([r["emulated_s"] for r in ok]),
            "wall_s_mean": _mean([r["wall_s"] for r in ok]),
            # CSI feedback, as the base station measured it (NaN for classes without it)
            "csi_nmse_db": _mean([r.get("bs_nmse_db") for r in last]),
            "csi_bits_per_dim": _mean([r.get("bs_bits_per_dim_total") for r in last]),
        }
        out.append(s)
    return out


def round_latency(rounds: pa.Table) -> list[dict[str, Any]]:
    """Per round: emulated latency (slowest participating device) and measured wall time."""
    rows = rounds.to_pylist()
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        mine = [r for r in rows if r["round"] == rnd]
        ok = [r for r in mine if r["status"] == "ok"]
        out.append(
            {
                "round": rnd,
                "participants": len(ok),
                "emulated_latency_s": max((r["emulated_s"] for r in ok), default=0.0),
                "round_wall_s": max((r["round_wall_s"] or 0.0 for r in mine), default=0.0),
                "bytes_down": sum(r["bytes_down"] or 0 for r in mine),
                "bytes_up": sum(r["bytes_up"] or 0 for r in mine),
            }
        )
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.3f}"
    return str(v)


#: columns that count things (parameters, bytes): shown as whole numbers
_COUNT_COLUMNS = ("n_params", "bytes_down", "bytes_up")


def _fmt_count(v: Any) -> str:
    if _finite(v):
        return str(round(v))
    return _fmt(v)


def format_class_table(summary: list[dict[str, Any]]) -> str:
    """A plain-text per-class table (what ``make run`` prints at the end)."""
    cols = [
        ("class", "class"),
        ("devices", "devices"),
        ("ok", "ok rows"),
        ("failed", "failed"),
        ("n_params", "params"),
        ("ser", "SER SDNet"),
        ("ser_zf", "SER ZF"),
        ("ser_mmse", "SER MMSE"),
        ("bytes_down", "bytes down"),
        ("bytes_up", "bytes up"),
        ("emulated_s_mean", "emul. s/round"),
        ("wall_s_mean", "wall s/round"),
    ]
    fitted = any(_finite(s.get("ser_hblind_fit")) for s in summary)
    if fitted:
        cols.insert(cols.index(("ser_mmse", "SER MMSE")) + 1, ("ser_hblind_fit", "SER fit"))
    if any(_finite(s.get("csi_nmse_db")) for s in summary):
        cols += [("csi_nmse_db", "CSI NMSE dB"), ("csi_bits_per_dim", "CSI bits/dim")]
    table = [[h for _, h in cols]] + [[(_fmt_count if k in _COUNT_COLUMNS else _fmt)(s[k]) for k, _ in cols] for s in summary]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [n for n in (sdnet_vs_mmse_note(summary), sdnet_chance_note(summary), FIT_NOTE if fitted else None) if n]
    return "\n".join(lines + notes)


#: the one line printed under the class table while no class's SDNet beats MMSE
SDNET_NOTE = (
    "note: no class's SDNet is below MMSE: with this few samples and steps per device SDNet "
    "generalises only about as well as ZF; it needs ~8,100 samples and ~1,000+ steps per task "
    "(exact ML is far below MMSE; docs/sdnet_fidelity.md)"
)


#: the line under the class table that says what its "SER fit" column is
FIT_NOTE = (
    "note: SER fit: ML on x_ZF under the ZF-error covariance fitted from the device's own training samples "
    "(no H; classes with hblind_baseline): what those samples teach a model-based detector with one n_t x n_t covariance, "
    "and where SDNet's held-out SER has stayed on every task mapped (docs/sdnet_fidelity.md, Experiment 11)"
)


#: an MMSE SER below this leaves SDNet no room to be below it (one error in 1,000 symbols)
NEAR_ERROR_FREE_SER = 1e-3


def sdnet_vs_mmse_note(summary: list[dict[str, Any]]) -> str | None:
    """One line on which classes' SDNet is below MMSE and why the others' is not: the reason
    is measured (``_why_not_below_mmse``) for classes that report ``ser_hblind_fit``. With
    no class below MMSE and none reporting it, ``SDNET_NOTE``; ``None`` when every class
    with both SERs is below MMSE."""
    pairs = [(s["class"], s.get("ser", math.nan), s.get("ser_mmse", math.nan)) for s in summary]
    pairs = [(c, a, b) for c, a, b in pairs if _finite(a) and _finite(b)]
    fit = {s["class"]: s["ser_hblind_fit"] for s in summary if _finite(s.get("ser_hblind_fit"))}
    if pairs and not any(a < b for _, a, b in pairs) and not fit:
        return SDNET_NOTE
    below = [c for c, a, b in pairs if a < b]
    rest = [f"{c} ({_why_not_below_mmse(b, fit.get(c))})" for c, a, b in pairs if a >= b]
    if rest and not below:
        return f"note: no class's SDNet is below MMSE: {', '.join(rest)} (docs/sdnet_fidelity.md, Experiment 11)"
    if below and rest:
        return f"note: SDNet is below MMSE in {', '.join(below)}; not in {', '.join(rest)} (docs/sdnet_fidelity.md, Experiment 11)"
    return None


def _why_not_below_mmse(ser_mmse: float, ser_fit: float | None) -> str:
    """Why a class's SDNet is not below MMSE, measured where the class reports ``ser_hblind_fit``:
    a fitted H-blind SER at or above MMSE says the task's samples hold nothing below MMSE for
    a detector that does not use the sample's H (where SDNet has stayed); below it, the class's
    budget is what is short."""
    if ser_mmse < NEAR_ERROR_FREE_SER:
        return "MMSE is (nearly) error-free"
    if ser_fit is None:
        return "too few samples and steps for its task"
    if ser_fit >= ser_mmse:
        return "SER fit is not below MMSE: its samples teach an H-blind detector nothing MMSE lacks"
    return "SER fit is below MMSE: room its SDNet does not reach at this budget"


#: a class SDNet SER at or above this is reported as near chance (QPSK guessing: 0.75)
NEAR_CHANCE_SER = 0.5


def sdnet_chance_note(summary: list[dict[str, Any]]) -> str | None:
    """One line naming the classes whose SDNet SER is near chance (``>= NEAR_CHANCE_SER``)."""
    near = [s["class"] for s in summary if isinstance(s.get("ser"), float) and s["ser"] >= NEAR_CHANCE_SER]
    if not near:
        return None
    return f"note: SDNet of {', '.join(near)} is near chance (QPSK guessing: 0.75): too few samples and steps to learn the task; read it as untrained"


#: legend names of the SER plot's lines
_SER_LABELS = {"ser": "SDNet", "ser_zf": "ZF", "ser_mmse": "MMSE", "ser_hblind_fit": "fit (H-blind)"}


def draw_fleet_plots(rounds: pa.Table, out_dir: Path, csi_schemes: dict[str, str] | None = None) -> list[Path]:
    """metric vs round per class, bytes per round per class, emulated round latency, and,
    when classes send CSI feedback (``csi_schemes``: class -> scheme), their RD plot."""
    plt = _plt()
    rows = [r for r in rounds.to_pylist()]
    classes = list(dict.fromkeys(r["device_class"] for r in rows))
    rounds_ = sorted({r["round"] for r in rows})
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cls in classes:
        for metric, style in (("ser", "-o"), ("ser_zf", ":"), ("ser_mmse", "--"), ("ser_hblind_fit", "-.")):
            ys = [_mean([r.get(metric) for r in rows if r["device_class"] == cls and r["round"] == k and r["status"] == "ok"]) for k in rounds_]
            if all(math.isnan(y) for y in ys):
                continue
            label = f"{cls} {_SER_LABELS[metric]}"
            ax.plot(rounds_, [max(y, SER_FLOOR) for y in ys], style, label=label)  # a zero SER sits on the floor, inside the axes
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(_plt_ticker().MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("SER (mean over devices)")
    ax.set_title("Detection SER per device class")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    paths.append(out_dir / "ser_vs_round.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.8 / max(1, len(classes))
    for i, cls in enumerate(classes):
        down = [sum(r["bytes_down"] or 0 for r in rows if r["device_class"] == cls and r["round"] == k) for k in rounds_]
        up = [sum(r["bytes_up"] or 0 for r in rows if r["device_class"] == cls and r["round"] == k) for k in rounds_]
        xs = [k - 0.4 + (i + 0.5) * width for k in rounds_]
        ax.bar(xs, down, width, label=f"{cls} down")
        ax.bar(xs, up, width, bottom=down, label=f"{cls} up", alpha=0.6)
    ax.set_xlabel("round")
    ax.set_ylabel("bytes (serialized messages)")
    ax.set_title("Bytes moved per round per class")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    paths.append(out_dir / "bytes_per_round.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    lat = round_latency(rounds)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r["round"] for r in lat], [r["emulated_latency_s"] for r in lat], "-o", label="emulated (slowest device)")
    ax.plot([r["round"] for r in lat], [r["round_wall_s"] for r in lat], "-s", label="measured wall time")
    ax.set_xlabel("round")
    ax.set_ylabel("seconds")
    ax.set_title("Round latency")
    ax.legend()
    ax.grid(True, alpha=0.3)
    paths.append(out_dir / "round_latency.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if "bs_nmse_db" in rounds.column_names:
        paths.append(draw_csi_rd(rows, csi_schemes or {}, out_dir / "csi_rd.png"))
    return paths


_SCHEME_LABELS = {"none": "No FT", "eo": "EO", "fm": "FM", "ga": "GA"}


def draw_csi_rd(rows: list[dict[str, Any]], schemes: dict[str, str], path: Path) -> Path:
    """Rate (latent + update bits per CSI dimension, as decoded at the base station) vs
    NMSE (dB) of every device round with CSI feedback; one series per class (its scheme)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cls in dict.fromkeys(r["device_class"] for r in rows):
        pts = [
            (r["bs_bits_per_dim_total"], r["bs_nmse_db"])
            for r in rows
            if r["device_class"] == cls and r["status"] == "ok" and _finite(r.get("bs_nmse_db"))
        ]
        if pts:
            label = f"{cls} ({_SCHEME_LABELS.get(schemes.get(cls, ''), schemes.get(cls, '?'))})"
            ax.scatter(*zip(*pts), label=label, alpha=0.75)
    ax.set_xlabel("rate: latent + update bits per CSI dimension (actual)")
    ax.set_ylabel("NMSE at the base station (dB)")
    ax.set_title("CSI feedback: rate vs distortion per device round")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_run(run_dir: str | Path) -> list[Path]:
    """Redraw every plot of a fleet run directory from its tables (a study's own ``report``
    redraws a study's; ``airfleet report`` picks the right one)."""
    run_dir = Path(run_dir)
    resolved = run_dir / "scenario.resolved.json"
    if not resolved.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no scenario.resolved.json)")
    data = json.loads(resolved.read_text())
    if "study" in data:
        raise ValueError(f"{run_dir} is a {data['study']['kind']} study run: redraw it with studies.load_study(kind).report")
    rounds_path = run_dir / "rounds.parquet"
    if not rounds_path.is_file() and not (run_dir / "rounds.parts").is_dir():
        raise FileNotFoundError(f"{run_dir} has no rounds.parquet")
    from server.results import consolidate_rounds

    schemes = {c["name"]: c["csi_feedback"].get("scheme", "fm") for c in data.get("fleet", []) if "csi_feedback" in c}
    table = consolidate_rounds(run_dir)
    paths = draw_fleet_plots(table, run_dir, schemes)
    from server.radio_report import draw_radio_plots, has_radio

    if has_radio(table):
        paths += draw_radio_plots(table, run_dir)
    from server.codec_report import write_codec_report

    paths += write_codec_report(run_dir, table)  # runs with unit_update stages: codec tables, rate-accuracy
    sig = run_dir / "collective" / "significance.parquet"
    if sig.is_file():
        paths.append(draw_significance(pq.read_table(sig), run_dir / "gradient_significance.png"))
    return paths


def draw_significance(table: pa.Table, path: Path) -> Path:
    """Heatmap of gradient significance (task x layer), eq. (20)."""
    plt = _plt()
    rows = table.to_pylist()
    tasks = sorted({r["task"] for r in rows})
    layers = sorted({r["layer"] for r in rows})
    grid = [[float("nan")] * len(tasks) for _ in layers]
    for r in rows:
        grid[layers.index(r["layer"])][tasks.index(r["task"])] = r["significance"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(tasks)), [str(t) for t in tasks])
    ax.set_yticks(range(len(layers)), [str(l) for l in layers])
    ax.set_xlabel("task (sequential order)")
    ax.set_ylabel("layer")
    ax.set_title("Gradient significance of the collective model, eq. (20)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
