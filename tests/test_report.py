"""The fleet report from tables alone: the per-class table and the CSI RD plot."""

from __future__ import annotations

import math
from pathlib import Path

from common.records import rounds_table
from server.report import FIT_NOTE, SDNET_NOTE, class_summary, draw_fleet_plots, format_class_table


def _row(rnd: int, did: int, cls: str, metrics: dict[str, float]) -> dict:
    return {
        "round": rnd, "device_id": did, "device_class": cls, "status": "ok", "n_params": 10, "flops": 100,
        "bytes_down": 200, "bytes_up": 300, "coded_bits": 0, "emulated_s": 1.0, "wall_s": 0.5, "round_wall_s": 0.6,
        "metrics": metrics,
    }


def test_csi_classes_get_their_rd_plot_and_table_columns(tmp_path: Path) -> None:
    rows = [_row(r, 0, "phone", {"ser": 0.1}) for r in (1, 2)] + [
        _row(r, 1, "ue", {"bs_nmse_db": -2.0 * r, "bs_bits_per_dim_total": 0.5 * r}) for r in (1, 2)
    ]
    table = rounds_table(rows)
    summary = {s["class"]: s for s in class_summary(table)}
    assert summary["ue"]["csi_nmse_db"] == -4.0 and summary["ue"]["csi_bits_per_dim"] == 1.0
    assert math.isnan(summary["phone"]["csi_nmse_db"])
    assert "CSI NMSE dB" in format_class_table(list(summary.values()))
    paths = draw_fleet_plots(table, tmp_path, {"ue": "fm"})
    assert (tmp_path / "csi_rd.png") in paths and (tmp_path / "csi_rd.png").stat().st_size > 1000
    # a fleet without CSI feedback gets neither
    plain = rounds_table(rows[:2])
    assert "CSI NMSE dB" not in format_class_table(class_summary(plain))
    (tmp_path / "plain").mkdir()
    assert all(p.name != "csi_rd.png" for p in draw_fleet_plots(plain, tmp_path / "plain"))


def test_class_table_says_why_when_no_sdnet_beats_mmse() -> None:
    above = [_row(1, 0, "phone", {"ser": 0.05, "ser_zf": 0.05, "ser_mmse": 0.03}), _row(1, 1, "gw", {"ser": 0.04, "ser_zf": 0.04, "ser_mmse": 0.04})]
    text = format_class_table(class_summary(rounds_table(above)))
    assert text.splitlines()[-1] == SDNET_NOTE and "docs/sdnet_fidelity.md" in SDNET_NOTE
    below = above + [_row(1, 2, "iot", {"ser": 0.001, "ser_zf": 0.05, "ser_mmse": 0.03})]
    mixed = format_class_table(class_summary(rounds_table(below)))
    assert SDNET_NOTE not in mixed
    last = mixed.splitlines()[-1]
    assert last.startswith("note: SDNet is below MMSE in iot; not in ") and "phone (too few samples" in last and "gw (" in last
    tiny = format_class_table(class_summary(rounds_table(below + [_row(1, 5, "watch", {"ser": 0.001, "ser_zf": 6e-4, "ser_mmse": 6e-4})])))
    assert "watch (MMSE is (nearly) error-free)" in tiny.splitlines()[-1]
    chance = format_class_table(class_summary(rounds_table(above + [_row(1, 4, "tag", {"ser": 0.7, "ser_zf": 0.0, "ser_mmse": 0.0})])))
    assert chance.splitlines()[-1].startswith("note: SDNet of tag is near chance")
    # a fleet without detection figures (CSI only) gets no note
    csi = [_row(1, 3, "ue", {"bs_nmse_db": -2.0})]
    assert SDNET_NOTE not in format_class_table(class_summary(rounds_table(csi)))


def test_fitted_hblind_column_and_line_appear_only_when_a_class_reports_it(tmp_path: Path) -> None:
    plain = [_row(1, 0, "phone", {"ser": 0.05, "ser_zf": 0.05, "ser_mmse": 0.03})]
    text = format_class_table(class_summary(rounds_table(plain)))
    assert "SER fit" not in text and FIT_NOTE not in text
    fitted = plain + [_row(1, 1, "sensor", {"ser": 0.02, "ser_zf": 0.05, "ser_mmse": 0.03, "ser_hblind_fit": 0.0125})]
    summary = {s["class"]: s for s in class_summary(rounds_table(fitted))}
    assert summary["sensor"]["ser_hblind_fit"] == 0.0125 and math.isnan(summary["phone"]["ser_hblind_fit"])
    lines = format_class_table(list(summary.values())).splitlines()
    header = lines[0].split()
    assert header.index("fit") == header.index("MMSE") + 2  # "SER fit" right after "SER MMSE"
    assert "0.013" in lines[3] and lines[-1] == FIT_NOTE
    # the reason a class is not below MMSE is read off its SER fit
    why = [_row(1, 0, "phone", {"ser": 0.05, "ser_zf": 0.05, "ser_mmse": 0.03, "ser_hblind_fit": 0.032}),
           _row(1, 1, "gw", {"ser": 0.2, "ser_zf": 0.15, "ser_mmse": 0.12, "ser_hblind_fit": 0.075})]
    note = format_class_table(class_summary(rounds_table(why))).splitlines()[-2]
    assert note.startswith("note: no class's SDNet is below MMSE: ") and SDNET_NOTE not in note
    assert "phone (SER fit is not below MMSE" in note and "gw (SER fit is below MMSE: room" in note
    assert (tmp_path / "ser_vs_round.png") in draw_fleet_plots(rounds_table(fitted), tmp_path)
