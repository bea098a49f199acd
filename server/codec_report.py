"""What an update cost, codec by codec: the report of a run with ``unit_update`` stages.

Drawn from a run directory's tables alone (``rounds.parquet``, ``scenario.resolved.json``,
``unit_versions.parquet``), at the end of the run and by ``airfleet report RUN_DIR``:

- ``codec_rounds.parquet``: per device class (its uplink codec) and round, over the
  devices that replied (on time or late): mean uplink bits of the coded unit update and
  bits per parameter, mean downlink bits (the whole serialized round message, and of it
  the coded unit steps), mean airtime up and down (s), mean radio energy (J: transmit +
  receive) and compute energy, late and out-of-coverage devices, mean SER; and the
  cumulative uplink bits per device through that round.
- ``codec_summary.parquet``: per class, the means over rounds and the SER of the last round.
- ``codec_pareto.parquet``: the classes no other class beats on both cumulative uplink bits
  and last-round SER (lower is better for both): the Pareto front of the rate-accuracy plot.
- ``rate_accuracy.png``: mean SER per round against cumulative uplink bits per device
  (through that round), one line per codec.

Bits are the lengths of the streams that were sent (``payload_bits_unit_update``, the
serialized ``bytes_down``); the codec's ideal (entropy) bits are shown as ``ideal``, labelled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from server.plotting import pyplot

__all__ = ["has_unit_updates", "codec_rounds", "codec_summary", "pareto_front", "format_codec_tables", "write_codec_report", "codec_tables_text"]

_REPLIED = ("ok", "late")
_UP = "payload_bits_unit_update"


def has_unit_updates(scenario: dict[str, Any]) -> bool:
    """Whether a resolved scenario has a class with a ``unit_update`` stage."""
    return any("unit_update" in c for c in scenario.get("fleet", []))


def _label(stage: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(stage.get("options", {}).items()))
    return f"{stage['codec']}({opts})" if opts else str(stage["codec"])


def _mean(xs: list[Any]) -> float:
    v = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(v) / len(v) if v else math.nan


def codec_rounds(rounds: pa.Table, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per (class with a unit_update stage, round); see the module docstring."""
    codecs = {c["name"]: _label(c["unit_update"]) for c in scenario.get("fleet", []) if "unit_update" in c}
    rows = [r for r in rounds.to_pylist() if r["device_class"] in codecs]
    out: list[dict[str, Any]] = []
    for cls, codec in codecs.items():
        cum = 0.0
        for rnd in sorted({r["round"] for r in rows}):
            mine = [r for r in rows if r["device_class"] == cls and r["round"] == rnd]
            rep = [r for r in mine if r["status"] in _REPLIED]
            up = _mean([r.get(_UP) for r in rep])
            cum += 0.0 if math.isnan(up) else up
            out.append(
                {
                    "class": cls,
                    "codec": codec,
                    "round": rnd,
                    "replied": len(rep),
                    "late": sum(r["status"] == "late" for r in mine),
                    "out_of_coverage": sum(r["status"] == "out_of_coverage" for r in mine),
                    "failed": sum(r["status"] in ("failed", "timeout") for r in mine),
                    "up_bits": up,
                    "up_ideal_bits": _mean([r.get("unit_update_ideal_bits") for r in rep]),
                    "bits_per_param": _mean([r.get("unit_update_bits_per_param") for r in rep]),
                    "down_bits": _mean([8.0 * r["bytes_down"] for r in rep if r.get("bytes_down") is not None]),
                    "down_step_bits": _mean([r.get("unit_update_down_bits") for r in rep]),
                    "airtime_up_s": _mean([r.get("airtime_up_s") for r in rep]),
                    "airtime_down_s": _mean([r.get("airtime_down_s") for r in rep]),
                    "energy_radio_j": _mean([(r.get("energy_tx_j") or 0.0) + (r.get("energy_rx_j") or 0.0) for r in rep if r.get("energy_tx_j") is not None]),
                    "energy_compute_j": _mean([r.get("energy_compute_j") for r in rep]),
                    "ser": _mean([r.get("ser") for r in rep]),
                    "cum_up_bits": cum,
                }
            )
    return out


def codec_summary(per_round: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per class: means over its rounds, late devices in total, SER of its first and last round."""
    out = []
    for cls in dict.fromkeys(r["class"] for r in per_round):
        mine = [r for r in per_round if r["class"] == cls]
        last = mine[-1]
        out.append(
            {
                "class": cls,
                "codec": last["codec"],
                "bits_per_param": _mean([r["bits_per_param"] for r in mine]),
                "up_bits_per_round": _mean([r["up_bits"] for r in mine]),
                "up_ideal_bits_per_round": _mean([r["up_ideal_bits"] for r in mine]),
                "down_bits_per_round": _mean([r["down_bits"] for r in mine]),
                "down_step_bits_per_round": _mean([r["down_step_bits"] for r in mine]),
                "airtime_up_s": _mean([r["airtime_up_s"] for r in mine]),
                "airtime_down_s": _mean([r["airtime_down_s"] for r in mine]),
                "energy_radio_j": _mean([r["energy_radio_j"] for r in mine]),
                "late": sum(r["late"] for r in mine),
                "ser_first": mine[0]["ser"],
                "ser_last": last["ser"],
                "rounds": len(mine),
                "cum_up_bits": last["cum_up_bits"],
            }
        )
    return out


def pareto_front(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Classes not dominated in (cumulative uplink bits, last-round SER), by rising bits.

    One dominates another when it is no worse on both and better on one; classes without a
    finite SER are left out.
    """
    pts = [s for s in summary if math.isfinite(s["ser_last"]) and math.isfinite(s["cum_up_bits"])]

    def dominated(a: dict[str, Any]) -> bool:
        return any(
            b["cum_up_bits"] <= a["cum_up_bits"] and b["ser_last"] <= a["ser_last"] and (b["cum_up_bits"] < a["cum_up_bits"] or b["ser_last"] < a["ser_last"])
            for b in pts
        )

    front = [{"class": s["class"], "codec": s["codec"], "cum_up_bits": s["cum_up_bits"], "ser_last": s["ser_last"], "bits_per_param": s["bits_per_param"]} for s in pts if not dominated(s)]
    return sorted(front, key=lambda s: s["cum_up_bits"])


def _text(head: list[str], body: list[list[str]]) -> str:
    table = [head] + body
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _f(v: float, spec: str) -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def format_codec_tables(summary: list[dict[str, Any]], front: list[dict[str, Any]]) -> str:
    """Plain text: the per-codec table and the Pareto front."""
    head = ["codec", "bits/param", "up bits/rnd", "ideal", "down bits/rnd", "of it steps", "airtime up ms", "airtime down ms", "radio mJ", "late", "SER first", "SER last", "cum up bits"]
    body = [
        [
            s["codec"], _f(s["bits_per_param"], ".3f"), _f(s["up_bits_per_round"], ".0f"), _f(s["up_ideal_bits_per_round"], ".0f"),
            _f(s["down_bits_per_round"], ".0f"), _f(s["down_step_bits_per_round"], ".0f"), _f(1e3 * s["airtime_up_s"], ".2f"),
            _f(1e3 * s["airtime_down_s"], ".2f"), _f(1e3 * s["energy_radio_j"], ".3f"), str(s["late"]), _f(s["ser_first"], ".4f"),
            _f(s["ser_last"], ".4f"), _f(s["cum_up_bits"], ".0f"),
        ]
        for s in summary
    ]
    pf = _text(["codec", "cum up bits", "SER last", "bits/param"], [[p["codec"], _f(p["cum_up_bits"], ".0f"), _f(p["ser_last"], ".4f"), _f(p["bits_per_param"], ".3f")] for p in front])
    return "unit update codecs (means per device and round; ideal = the codec's entropy estimate):\n" + _text(head, body) + "\n\nPareto front (cumulative uplink bits vs last-round SER):\n" + pf


def draw_rate_accuracy(per_round: list[dict[str, Any]], path: Path) -> Path:
    """SER per round against cumulative uplink bits per device, one line per codec."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    for cls in dict.fromkeys(r["class"] for r in per_round):
        mine = [r for r in per_round if r["class"] == cls and math.isfinite(r["ser"]) and r["cum_up_bits"] > 0]
        if mine:
            ax.plot([r["cum_up_bits"] for r in mine], [r["ser"] for r in mine], marker="o", label=mine[0]["codec"])
    ax.set_xscale("log")
    ax.set_xlabel("cumulative uplink bits per device (unit updates, through the round)")
    ax.set_ylabel("mean SER in the round")
    ax.set_title("Rate-accuracy of unit update codecs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_codec_report(run_dir: str | Path, rounds: pa.Table | None = None) -> list[Path]:
    """Write the codec tables and the rate-accuracy plot of ``run_dir`` (nothing when the
    run has no unit_update stage); returns the files written."""
    run_dir = Path(run_dir)
    scenario = json.loads((run_dir / "scenario.resolved.json").read_text())
    if not has_unit_updates(scenario):
        return []
    if rounds is None:
        rounds = pq.read_table(run_dir / "rounds.parquet")
    per_round = codec_rounds(rounds, scenario)
    summary = codec_summary(per_round)
    front = pareto_front(summary)
    paths = []
    for name, rows in (("codec_rounds", per_round), ("codec_summary", summary), ("codec_pareto", front)):
        p = run_dir / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
        paths.append(p)
    paths.append(draw_rate_accuracy(per_round, run_dir / "rate_accuracy.png"))
    return paths


def codec_tables_text(run_dir: str | Path) -> str:
    """The printed tables of a run's written codec report ('' when it has none)."""
    run_dir = Path(run_dir)
    summary, front = run_dir / "codec_summary.parquet", run_dir / "codec_pareto.parquet"
    if not summary.is_file() or not front.is_file():
        return ""
    return format_codec_tables(pq.read_table(summary).to_pylist(), pq.read_table(front).to_pylist())
