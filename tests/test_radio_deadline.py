"""Round deadlines in emulated time, with and without a [radio] cell (the server's
pricing step, no Flower run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.profiles import device_profile
from common.scenario import parse_scenario
from server.app import FleetServer, _Device


def _server(tmp_path: Path, radio: dict[str, Any] | None, deadline: float, watch: dict[str, Any] | None = None) -> FleetServer:
    raw: dict[str, Any] = {
        "seed": 3,
        "channels": {"source": "rayleigh", "n_rx": 16, "n_tx": 2, "n_pilots": 2},
        "server": {"round_deadline_s": deadline},
        "fleet": [
            {"name": "phone", "count": 2, "workload": "none", "flops_per_s": 1e10, "uplink_bps": 1e6, "downlink_bps": 1e7},
            {"name": "watch", "count": 2, "workload": "none", "n_tx": 1, "flops_per_s": 1e10, "uplink_bps": 1e4, "downlink_bps": 1e5,
             "distance_m": 400.0, "body_loss_db": 8.0, "ue_power_dbm": 23.0, **(watch or {})},
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


def test_a_device_beyond_coverage_gives_up_at_a_finite_time_and_its_cost_is_counted(tmp_path: Path) -> None:
    """Watches 1 km out at -10 dBm: the downlink (BS 40 dBm) reaches them, their uplink
    cannot (about -20 dB SINR after combining): it gives up after MAX_CONSECUTIVE_NACK."""
    from common.radio.transfer import MAX_CONSECUTIVE_NACK

    srv = _server(tmp_path, {"bandwidth_hz": 5e6, "numerology": 0, "shadowing_db": 0.0}, deadline=5.0, watch={"distance_m": 1000.0, "body_loss_db": 0.0, "ue_power_dbm": -10.0})
    rows = _rows()
    srv._emulate(1, rows)
    assert [rows[d]["status"] for d in range(4)] == ["ok", "ok", "out_of_coverage", "out_of_coverage"]
    for d in (2, 3):
        r = rows[d]
        assert "out of coverage" in r["error"]
        assert r["bits_delivered_down"] == 8 * 12_000  # the downlink made it
        assert 0 <= r["bits_delivered_up"] < 8 * 20_000
        assert r["radio_slots_up"] >= MAX_CONSECUTIVE_NACK and r["harq_retx"] >= MAX_CONSECUTIVE_NACK and r["energy_tx_j"] > 0
        # it gave up after its downlink, its compute and at least MAX_CONSECUTIVE_NACK uplink slots
        ready = r["airtime_down_s"] + r["emulated_compute_s"]
        assert ready + MAX_CONSECUTIVE_NACK * 1e-3 <= r["emulated_s"] < 1.0
    assert rows[0]["bits_delivered_up"] == 8 * 20_000


def test_a_round_loop_over_the_cell_writes_radio_columns_report_and_late_rows(tmp_path: Path) -> None:
    """The real round loop (loopback Grid, ClientApps in-process, no Ray) with a [radio] cell
    and a deadline only the cell-edge class misses."""
    import pyarrow.parquet as pq
    from flwr.supercore.task_identity import TaskIdentity

    from common.scenario import load_scenario
    from server.results import init_run_dir
    from tests.fleet_scenarios import tiny_fleet
    from tests.test_byte_accounting import LoopbackGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    path = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", counts=(2, 2), rounds=2, crash_b=False)
    text = path.read_text().replace("round_timeout_s = 600.0", "round_timeout_s = 600.0\nround_deadline_s = 30.0")
    text = text.replace('name = "b"', 'name = "b"\ndistance_m = 400.0\nbody_loss_db = 8.0\nflops_per_s = 1e7')
    path.write_text(text + '\n[radio]\nbandwidth_hz = 5e6\nnumerology = 0\n')
    scenario = load_scenario(path)
    run_dir = tmp_path / "run"
    init_run_dir(run_dir, scenario)
    summary = FleetServer(LoopbackGrid(scenario.num_devices), scenario, run_dir, quiet=True).run()
    rows = pq.read_table(run_dir / "rounds.parquet").to_pylist()
    assert {r["status"] for r in rows if r["device_class"] == "a"} == {"ok"}
    assert {r["status"] for r in rows if r["device_class"] == "b"} == {"late"}  # 1e7 FLOP/s: compute alone misses 30 s
    for r in rows:
        assert r["airtime_up_s"] > 0 and r["bits_delivered_up"] == 8 * r["bytes_up"] and r["bits_delivered_down"] == 8 * r["bytes_down"]
        assert r["emulated_s"] >= r["emulated_compute_s"]
    kinds = {(c["class"], c["kind"]) for c in summary["radio_cost"]}
    assert {("a", "unit"), ("b", "unit"), ("a", "reply")} <= kinds
    assert [d["late"] for d in summary["late_per_round"]] == [2, 2]
    assert (run_dir / "radio_airtime_cdf.png").is_file() and (run_dir / "radio_late.png").is_file()


def test_base_station_stages_ignore_out_of_coverage_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real round loop (loopback Grid): class b's uplink cannot reach the BS (1 km,
    -10 dBm); its replies are recorded out of coverage and never ingested."""
    import pyarrow.parquet as pq
    from flwr.supercore.task_identity import TaskIdentity

    from common.scenario import load_scenario
    from server.results import init_run_dir
    from tests.fleet_scenarios import tiny_fleet
    from tests.test_byte_accounting import LoopbackGrid

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    path = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", counts=(2, 2), rounds=1, crash_b=False)
    text = path.read_text().replace('name = "b"', 'name = "b"\ndistance_m = 1000.0\nue_power_dbm = -10.0')
    path.write_text(text + '\n[radio]\nbandwidth_hz = 5e6\nnumerology = 0\nshadowing_db = 0.0\nfading = "rayleigh"\n')
    scenario = load_scenario(path)
    run_dir = tmp_path / "run"
    init_run_dir(run_dir, scenario)
    ingested: list[int] = []
    monkeypatch.setattr(FleetServer, "_ingest", lambda self, did, row: ingested.append(did))
    summary = FleetServer(LoopbackGrid(scenario.num_devices), scenario, run_dir, quiet=True).run()
    rows = pq.read_table(run_dir / "rounds.parquet").to_pylist()
    status = {r["device_id"]: (r["device_class"], r["status"]) for r in rows}
    assert sorted(st for _, st in status.values()) == ["ok", "ok", "out_of_coverage", "out_of_coverage"]
    assert all(cls == ("a" if st == "ok" else "b") for cls, st in status.values())
    assert sorted(ingested) == sorted(d for d, (_, st) in status.items() if st == "ok")
    for r in rows:
        assert r["emulated_s"] < 10.0 and (r["status"] == "ok" or r["energy_tx_j"] > 0)
    assert summary["late_per_round"][0]["out_of_coverage"] == 2
