"""What an update cost on the air: tables and plots of a run with a ``[radio]`` cell.

Drawn from ``rounds.parquet`` alone (the ``common.records`` radio columns):

- ``radio_cost_table``: per class and payload kind, the mean bits of one transfer and
  what they cost: PRB·slots, airtime (s) and radio energy (J: transmit energy for what a
  device sends, receive energy for what it receives). A kind's cost is its share of the device's transfer in that round, priced at the
  device's own delivered bits per PRB·slot, per second on the air and per joule; kinds:
  ``unit`` (the learngene unit, downlink), ``round message`` (the rest of the downlink
  message), each uplink payload (``csi_update``, ``csi_latents``, ...), and ``reply``
  (the whole serialized uplink message).
- ``late_per_round``: devices late for ``[server] round_deadline_s`` and devices out of
  coverage (their link gave up), per round and class.
- ``draw_radio_plots``: CDF of uplink airtime per update per class; energy per device
  round split into compute and radio per class; PRB utilisation per round; MCS
  histogram; late devices per round.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from server.plotting import pyplot

__all__ = ["has_radio", "radio_cost_table", "format_radio_cost_table", "late_per_round", "format_late_per_round", "draw_radio_plots"]

_REPLIED = ("ok", "late")


def has_radio(rounds: pa.Table) -> bool:
    """Whether the run priced its transfers over a radio cell."""
    return "airtime_up_s" in rounds.column_names and rounds.column("airtime_up_s").null_count < rounds.num_rows


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _kinds(row: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(kind, link, bits) of one device round."""
    out = []
    unit = 8.0 * (row.get("bytes_unit") or 0)
    if unit > 0:
        out.append(("unit", "down", unit))
    out.append(("round message", "down", 8.0 * (row.get("bytes_down") or 0) - unit))
    for k, v in row.items():
        if k.startswith("payload_bits_") and v:
            out.append((k[len("payload_bits_"):], "up", float(v)))
    out.append(("reply", "up", 8.0 * (row.get("bytes_up") or 0)))
    return out


def radio_cost_table(rounds: pa.Table) -> list[dict[str, Any]]:
    """One dict per (class, payload kind): mean bits, PRB·slots, airtime and energy of one
    transfer of that kind, over the device rounds that replied (on time or late)."""
    rows = [r for r in rounds.to_pylist() if r["status"] in _REPLIED and r.get("airtime_up_s") is not None]
    acc: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
    for r in rows:
        for kind, link, bits in _kinds(r):
            if bits <= 0:
                continue
            delivered = r[f"bits_delivered_{link}"] or 0
            if delivered <= 0:
                continue
            f = bits / delivered
            energy = f * (r["energy_tx_j"] if link == "up" else (r.get("energy_rx_j") or 0.0))
            acc.setdefault((r["device_class"], kind, link), []).append((bits, f * r[f"radio_prb_slots_{link}"], f * r[f"airtime_{link}_s"], energy))
    out = []
    for (cls, kind, link), vals in acc.items():
        out.append(
            {
                "class": cls,
                "kind": kind,
                "link": link,
                "transfers": len(vals),
                "bits": _mean([v[0] for v in vals]),
                "prb_slots": _mean([v[1] for v in vals]),
                "airtime_s": _mean([v[2] for v in vals]),
                "energy_j": _mean([v[3] for v in vals]),
            }
        )
    return out


def format_radio_cost_table(cost: list[dict[str, Any]]) -> str:
    """Plain text of :func:`radio_cost_table` (bits -> PRB·slots -> airtime -> energy)."""
    head = ["class", "kind", "link", "n", "bits", "PRB*slots", "airtime ms", "radio energy mJ"]
    body = [
        [
            c["class"], c["kind"], c["link"], str(c["transfers"]), f"{c['bits']:.0f}", f"{c['prb_slots']:.1f}",
            f"{1e3 * c['airtime_s']:.2f}", "-" if math.isnan(c["energy_j"]) else f"{1e3 * c['energy_j']:.3f}",
        ]
        for c in cost
    ]
    table = [head] + body
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def late_per_round(rounds: pa.Table) -> list[dict[str, Any]]:
    """Per round: devices that replied or went out of coverage; of them late and out of
    coverage, in total and per class (``replied`` counts on-time and late replies)."""
    rows = rounds.to_pylist()
    classes = list(dict.fromkeys(r["device_class"] for r in rows))
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        mine = [r for r in rows if r["round"] == rnd]
        late = {c: sum(r["status"] == "late" and r["device_class"] == c for r in mine) for c in classes}
        ooc = {c: sum(r["status"] == "out_of_coverage" and r["device_class"] == c for r in mine) for c in classes}
        out.append(
            {
                "round": rnd,
                "replied": sum(r["status"] in _REPLIED for r in mine),
                "late": sum(late.values()),
                "late_by_class": late,
                "out_of_coverage": sum(ooc.values()),
                "out_of_coverage_by_class": ooc,
            }
        )
    return out


def format_late_per_round(late: list[dict[str, Any]]) -> str:
    """One line of :func:`late_per_round`."""
    return ", ".join(
        f"r{d['round']}: {d['late']}/{d['replied']} late {d['late_by_class']}, {d.get('out_of_coverage', 0)} out of coverage {d.get('out_of_coverage_by_class', {})}"
        for d in late
    )


def draw_radio_plots(rounds: pa.Table, out_dir: Path) -> list[Path]:
    """The radio plots of a run (see the module docstring); one PNG each."""
    plt = pyplot()
    rows = [r for r in rounds.to_pylist() if r.get("airtime_up_s") is not None]
    replied = [r for r in rows if r["status"] in _REPLIED]
    classes = list(dict.fromkeys(r["device_class"] for r in rows))
    rounds_ = sorted({r["round"] for r in rows})
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        paths.append(out_dir / name)
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cls in classes:
        xs = sorted(1e3 * r["airtime_up_s"] for r in replied if r["device_class"] == cls)
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=cls)
    ax.set_xlabel("uplink airtime per update (ms)")
    ax.set_ylabel("CDF over device rounds")
    ax.set_title("Uplink airtime per update")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.grid(True, alpha=0.3)
    save(fig, "radio_airtime_cdf.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    comp = [1e3 * _mean([r["energy_compute_j"] for r in replied if r["device_class"] == c]) for c in classes]
    tx = [1e3 * _mean([r["energy_tx_j"] for r in replied if r["device_class"] == c]) for c in classes]
    ax.bar(classes, comp, label="compute")
    rx = [1e3 * _mean([r.get("energy_rx_j") or 0.0 for r in replied if r["device_class"] == c]) for c in classes]
    ax.bar(classes, tx, bottom=[0.0 if math.isnan(c) else c for c in comp], label="radio: uplink transmit")
    ax.bar(classes, rx, bottom=[(0.0 if math.isnan(c) else c) + (0.0 if math.isnan(t) else t) for c, t in zip(comp, tx)], label="radio: downlink receive")
    ax.set_ylabel("energy per device round (mJ)")
    ax.set_title("Energy per device round")
    ax.legend()
    save(fig, "radio_energy.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for link in ("down", "up"):
        ax.plot(rounds_, [_mean([r[f"prb_util_{link}"] for r in rows if r["round"] == k]) for k in rounds_], "-o", label=f"{link}link")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("round")
    ax.set_ylabel("PRB utilisation while transferring")
    ax.set_title("PRB utilisation per round")
    ax.legend()
    ax.grid(True, alpha=0.3)
    save(fig, "radio_prb_utilisation.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bins = list(range(0, 30))
    for cls in classes:
        for link in ("down", "up"):
            xs = [r[f"mcs_mean_{link}"] for r in replied if r["device_class"] == cls and r[f"mcs_mean_{link}"] is not None]
            if xs:
                ax.hist(xs, bins=bins, histtype="step", label=f"{cls} {link}")
    ax.set_xlabel("mean MCS index of a device round (TS 38.214 table 1)")
    ax.set_ylabel("device rounds")
    ax.set_title("MCS histogram")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save(fig, "radio_mcs_hist.png")

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    late = late_per_round(rounds)
    bottom = [0] * len(late)
    for cls in classes:
        ys = [d["late_by_class"].get(cls, 0) for d in late]
        ax.bar([d["round"] for d in late], ys, bottom=bottom, label=cls)
        bottom = [b + y for b, y in zip(bottom, ys)]
    ax.set_xlabel("round")
    ax.set_ylabel("late devices")
    ax.set_title("Devices that missed the round deadline")
    ax.legend()
    save(fig, "radio_late.png")
    return paths
