"""Round deadlines in emulated time, with and without a [radio] cell (the server's
pricing step, no Flower run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.profiles import device_profile
from common.scenario import parse_scenario
from server.app import FleetServer, _Device


def _server(tmp_path: Path, radio: dict[str, Any] | None, deadline: float) -> FleetServer:
    raw: dict[str, Any] = {
        "seed": 3,
        "channels": {"source": "rayleigh", "n_rx": 16, "n_tx": 2, "n_pilots": 2},
        "server": {"round_deadline_s": deadline},
        "fleet": [
            {"name": "phone", "count": 2, "workload": "none", "flops_per_s": 1e10, "uplink_bps": 1e6, "downlink_bps": 1e7},
            {"name": "watch", "count": 2, "workload": "none", "n_tx": 1, "flops_per_s": 1e10, "uplink_bps": 1e4, "downlink_bps": 1e5,
             "distance_m": 400.0, "body_loss_db": 8.0, "ue_power_dbm": 23.0},
        ],
    }
    if radio is not None:
        raw["radio"] = radio
    sc = parse_scenario(raw, "t.toml", check_sources=False)
    srv = FleetServer(None, sc, tmp_path, quiet=True)  # type: ignore[arg-type]
    srv.devices = {d: _Device(device_profile(sc, d), 100 + d) for d in range(sc.num_devices)}
    return srv


def _rows() -> dict[int, dict[str, Any]]:
    return {d: {"device_id": d, "status": "ok", "flops": 10**8, "bytes_down": 12_000, "bytes_unit": 10_000, "bytes_up": 20_000} for d in range(4)}


def test_fixed_rates_unchanged_and_late_by_emulated_time(tmp_path: Path) -> None:
    srv = _server(tmp_path, None, deadline=1.0)
    rows = _rows()
    srv._emulate(1, rows)
    # phone: 0.01 s compute + 96 kbit / 10 Mbit/s + 160 kbit / 1 Mbit/s
    assert rows[0]["emulated_s"] == pytest.approx(0.01 + 0.0096 + 0.16)
    assert rows[2]["emulated_s"] == pytest.approx(0.01 + 0.96 + 16.0)
    assert [rows[d]["status"] for d in range(4)] == ["ok", "ok", "late", "late"]
    assert rows[0].get("airtime_up_s") is None


def test_radio_airtime_decides_who_is_late(tmp_path: Path) -> None:
    srv = _server(tmp_path, {"bandwidth_hz": 5e6, "numerology": 0}, deadline=0.0)
    rows = _rows()
    srv._emulate(1, rows)
    phone, watch = rows[0], rows[2]
    assert watch["airtime_up_s"] > 3 * phone["airtime_up_s"] and watch["mcs_mean_up"] < phone["mcs_mean_up"]
    slowest_phone, fastest_watch = max(rows[0]["emulated_s"], rows[1]["emulated_s"]), min(rows[2]["emulated_s"], rows[3]["emulated_s"])
    assert rows[0]["emulated_compute_s"] == rows[2]["emulated_compute_s"] and fastest_watch > slowest_phone  # same work, same bits
    deadline = (slowest_phone + fastest_watch) / 2
    srv = _server(tmp_path, {"bandwidth_hz": 5e6, "numerology": 0}, deadline=deadline)
    again = _rows()
    srv._emulate(1, again)
    assert [again[d]["status"] for d in range(4)] == ["ok", "ok", "late", "late"]
    for d in range(4):  # late devices' bits and energy still counted, same seed same numbers
        assert again[d]["bits_delivered_up"] == 8 * 20_000 and again[d]["energy_tx_j"] == rows[d]["energy_tx_j"]
