"""Runs that survive (issue #22), without a simulation: registration that says what
happened, internal errors that keep their evidence, atomic checkpoints, a device's kept
state on disk, an unwritable run directory. The Flower runs are in
``tests/test_run_survival_flower.py``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clients.persistence import load_device_state, save_device_state
from cli.main import main
from server.results import RunError, discard_rounds_after, load_checkpoint, save_checkpoint, write_round_part, write_table
from tests.fleet_scenarios import tiny_fleet


# -- a device's kept state --------------------------------------------------------------
def test_device_state_newest_at_or_before_the_round_and_later_ones_dropped(tmp_path: Path) -> None:
    states = {r: {"model/w": np.full((2, 3), r, np.float32), "meta/json": np.frombuffer(b"{}", np.uint8)} for r in (1, 3, 4)}
    for r, st in states.items():
        save_device_state(tmp_path, 7, r, st)
    kept = sorted(p.name for p in (tmp_path / "device-7").glob("round-*.npz"))
    assert kept == ["round-00003.npz", "round-00004.npz"]  # the two newest
    got = load_device_state(tmp_path, 7, 3)  # round 4 did not complete at the base station
    assert set(got) == {"model/w", "meta/json"} and np.array_equal(got["model/w"], states[3]["model/w"])
    assert not (tmp_path / "device-7" / "round-00004.npz").exists()
    assert load_device_state(tmp_path, 8, 3) == {}  # a device that never took part starts empty


def test_a_damaged_device_state_is_one_line_not_a_half_state(tmp_path: Path) -> None:
    save_device_state(tmp_path, 1, 2, {"a": np.zeros(4, np.float32)})
    (tmp_path / "device-1" / "round-00002.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="damaged device state"):
        load_device_state(tmp_path, 1, 2)


# -- the base station's checkpoint ------------------------------------------------------------
def test_checkpoint_round_trip_and_rounds_in_flight_dropped(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    arrays = {"stage/csi_feedback/3/0": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_checkpoint(tmp_path, {"round": 2, "unit_version": "abc"}, arrays)
    meta, got = load_checkpoint(tmp_path)  # type: ignore[misc]
    assert meta == {"round": 2, "unit_version": "abc"}
    assert np.array_equal(got["stage/csi_feedback/3/0"], arrays["stage/csi_feedback/3/0"])
    for r in (1, 2, 3):
        write_round_part(tmp_path, r, pa.table({"round": [r, r], "device_id": [0, 1]}))
    assert discard_rounds_after(tmp_path, 2) == [3]
    assert sorted(p.name for p in (tmp_path / "rounds.parts").iterdir()) == ["round-00001.parquet", "round-00002.parquet"]
    (tmp_path / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(RunError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path)


def test_discard_rounds_after_also_trims_a_consolidated_table(tmp_path: Path) -> None:
    pq.write_table(pa.table({"round": [1, 1, 2, 3], "device_id": [0, 1, 0, 0]}), tmp_path / "rounds.parquet")
    assert discard_rounds_after(tmp_path, 1) == [2, 3]
    assert pq.read_table(tmp_path / "rounds.parquet").column("round").to_pylist() == [1, 1]


def test_a_full_or_unwritable_run_directory_is_one_line_and_keeps_what_was_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_round_part(run_dir, 1, pa.table({"round": [1]}))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match=r"cannot write .*file/x\.parquet.*files already written are kept"):
        write_table(blocker / "x.parquet", pa.table({"a": [1]}))
    assert pq.read_table(run_dir / "rounds.parts" / "round-00001.parquet").num_rows == 1


# -- the CLI: user errors, internal errors ------------------------------------------------------
def test_an_internal_error_keeps_its_traceback_in_error_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import cli.main as cli

    def boom(*a: object, **k: object) -> None:
        raise IndexError("list index out of range")

    monkeypatch.setattr(cli, "run_fleet", boom)
    scenario = tiny_fleet(tmp_path / "s.toml", tmp_path / "cache")
    run_dir = tmp_path / "run"
    assert main(["run", str(scenario), "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "error: run failed: IndexError: list index out of range" in err
    assert str(run_dir / "error.log") in err and "Traceback" not in err  # one line, evidence on disk
    log = (run_dir / "error.log").read_text()
    assert "Traceback (most recent call last)" in log and "in boom" in log and '"torch"' in log
    with pytest.raises(IndexError):  # --debug re-raises
        main(["run", str(scenario), "--run-dir", str(run_dir), "--debug"])


def test_unwritable_runs_dir_and_resume_misuse_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tiny_fleet(tmp_path / "s.toml", tmp_path / "cache")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", str(scenario), "--runs-dir", str(blocker)]) == 1
    assert "cannot create a run directory under" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no scenario.toml" in capsys.readouterr().err
    assert main(["run", str(scenario), "--resume", str(tmp_path)]) == 2
    assert "give no scenario file" in capsys.readouterr().err


# -- registration ----------------------------------------------------------------------------------
class _Answerer:
    """Stands in for the simulation engine: the real ClientApp's ``register`` answers the
    registration of the nodes in ``answering`` (the others never reply)."""

    def __init__(self, state: object, nodes: dict[int, int], answering: set[int]) -> None:
        self.state, self.nodes, self.answering = state, nodes, answering
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        from uuid import uuid4

        from flwr.app import Context, RecordDict

        import clients.app as device

        while not self.stop.is_set():
            for nid, pid in self.nodes.items():
                if pid not in self.answering:
                    continue
                for msg in self.state.get_message_ins(node_id=nid, limit=1):  # type: ignore[attr-defined]
                    ctx = Context(run_id=msg.metadata.run_id, node_id=nid, node_config={"partition-id": pid}, state=RecordDict(), run_config={})
                    reply = device.register(msg, ctx)
                    reply.metadata.__dict__["_message_id"] = str(uuid4())
                    self.state.store_message_res(reply)  # type: ignore[attr-defined]
            self.stop.wait(0.01)

    def __enter__(self) -> _Answerer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _register(tmp_path: Path, answering: set[int], fraction: float = 1.0) -> tuple[object, Path]:
    from common.scenario import load_scenario
    from server.app import FleetServer
    from server.flower_dispatch import standalone_link

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tiny_fleet(tmp_path / "s.toml", tmp_path / "cache", counts=(2, 2), crash_b=False)
    path.write_text(path.read_text().replace("round_timeout_s = 600.0", f"round_timeout_s = 600.0\nregister_timeout_s = 3.0\nmin_registered_fraction = {fraction}"))
    scenario = load_scenario(path)
    grid, state, nodes = standalone_link(4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    server = FleetServer(grid, scenario, run_dir, quiet=True)
    with _Answerer(state, nodes, answering):
        server.register()
    return server, run_dir


@pytest.mark.slow
def test_no_device_registered_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"no device registered within server.register_timeout_s = 3 s \(4/4 nodes connected\)"):
        _register(tmp_path, set())
    setup = pq.read_table(tmp_path / "run" / "setup.parquet").to_pylist()
    assert [r["status"] for r in setup] == ["missing"] * 4


@pytest.mark.slow
def test_some_devices_missing_needs_the_scenario_to_allow_it(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"3/4 devices registered .*min_registered_fraction = 1 \(4 needed\); missing device ids: 2"):
        _register(tmp_path / "all", {0, 1, 3})
    server, run_dir = _register(tmp_path / "some", {0, 1, 3}, fraction=0.75)
    assert sorted(server.devices) == [0, 1, 3] and server.missing == [2]  # type: ignore[attr-defined]
    setup = {r["device_id"]: r for r in pq.read_table(run_dir / "setup.parquet").to_pylist()}
    assert setup[2]["status"] == "missing" and setup[2]["node_id"] is None
    assert {setup[d]["status"] for d in (0, 1, 3)} == {"registered"}


# -- a corrupted cache file is detected, logged, regenerated; never loaded -------------------------
def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_an_array_file_fails_its_checksum(tmp_path: Path) -> None:
    from common.learngene.unit import read_array_file, write_array_file

    write_array_file(tmp_path / "a.bin", {"w": np.arange(64, dtype=np.float32)}, {"k": 1})
    assert read_array_file(tmp_path / "a.bin")[1] == {"k": 1}
    _flip_middle_byte(tmp_path / "a.bin")
    with pytest.raises(ValueError, match="checksum"):
        read_array_file(tmp_path / "a.bin")


def test_a_corrupted_collective_model_is_retrained_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from common.channels import ChannelTask
    from common.learngene.collective import CollectiveConfig, load_or_train_collective

    tasks = tuple(ChannelTask.make("gbsm", 8, 4, task_id=i, seed=2) for i in range(1))
    cfg = CollectiveConfig(tasks=tasks, n_conv=5, samples_per_task=100, epochs_per_task=1, batch_size=50, unit_layers=2, val_samples=50, seed=3)
    first = load_or_train_collective(cfg, tmp_path)
    (model_bin,) = tmp_path.glob("collective-*/model.bin")
    _flip_middle_byte(model_bin)
    with caplog.at_level("WARNING"):
        again = load_or_train_collective(cfg, tmp_path)
    assert not again.from_cache and "unreadable" in caplog.text and "checksum" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert load_or_train_collective(cfg, tmp_path).from_cache  # rewritten whole


def test_a_corrupted_csi_backbone_is_retrained_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from common.csi import pretrain as csi_pretrain
    from common.csi import pretrained_compressor

    cfg = dict(n_ant=8, n_sc=8, width=4, kernel=3, lmbda=64.0, pretrain_samples=48, pretrain_tasks=1, pretrain_steps=4, pretrain_batch=16, cache_dir=str(tmp_path))
    first = pretrained_compressor(cfg)
    (npz,) = tmp_path.rglob("csi-*.npz")
    _flip_middle_byte(npz)
    csi_pretrain._MEMO.clear()  # a new process: only the file
    with caplog.at_level("WARNING"):
        again = pretrained_compressor(cfg)
    assert "CSI backbone cache" in caplog.text
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_a_study_resumes_from_its_own_scenario_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``airfleet run --resume RUN_DIR`` of a study reads RUN_DIR/scenario.toml and reruns the
    study into RUN_DIR (copying the scenario onto itself used to raise SameFileError)."""
    import cli.main as cli
    from server.results import init_run_dir

    seen: list[Path] = []

    def study_run(scenario: object, run_dir: Path, quiet: bool = False) -> dict:  # what run_study does first
        init_run_dir(run_dir, scenario)  # type: ignore[arg-type]
        seen.append(run_dir)
        return {}

    monkeypatch.setattr(cli, "run_study", study_run)
    study = Path(__file__).resolve().parents[1] / "scenarios" / "xrefine.toml"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "scenario.toml").write_text(study.read_text())
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert seen == [run_dir] and (run_dir / "scenario.toml").read_text() == study.read_text()


def test_a_study_never_reuses_the_units_of_another_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study loads every completed unit under RUN_DIR/work: ``--run-dir`` into a directory
    whose units came from another scenario is refused with one line, before anything runs."""
    study = Path(__file__).resolve().parents[1] / "scenarios" / "xrefine.toml"
    run_dir = tmp_path / "run"
    (run_dir / "work").mkdir(parents=True)
    (run_dir / "scenario.resolved.json").write_text(json.dumps({"name": "xrefine", "seed": 999, "study": {"kind": "xrefine"}}))
    assert main(["run", str(study), "--run-dir", str(run_dir), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds completed units of work of another scenario" in err.splitlines()[0] and "Traceback" not in err
    assert json.loads((run_dir / "scenario.resolved.json").read_text())["seed"] == 999  # nothing overwritten


TINY_TABLE1 = """name = "t1"
seed = 3
[study]
kind = "sdnet_table1"
n_r = 4
n_t = 2
n_conv = 2
snr_db = 5.0
tasks = [100]
train_samples = 200
test_samples = 100
epochs = 2
batch_size = 50
chunk_epochs = 2
jobs = 1
"""


def test_a_study_resumed_with_more_epochs_goes_on_and_other_changes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Raising epochs in RUN_DIR/scenario.toml, then --resume, extends a study whose module
    allows it (sdnet_table1's RESUME_MAY_CHANGE); any other change, or fewer epochs, is one
    line naming the key, and the run directory is left as it was."""
    src = tmp_path / "t1.toml"
    src.write_text(TINY_TABLE1)
    run_dir = tmp_path / "run"
    assert main(["run", str(src), "--run-dir", str(run_dir), "--quiet"]) == 0
    kept = run_dir / "scenario.toml"
    kept.write_text(TINY_TABLE1.replace("\nepochs = 2\n", "\nepochs = 4\n"))
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["per_task"][0]["epochs"] == 4 and summary["sittings"] == 2
    assert [r["epoch"] for r in pq.read_table(run_dir / "ser_epoch.parquet").to_pylist()] == [0, 2, 4]
    capsys.readouterr()
    for epochs, snr, named in ((4, "6.0", "study.snr_db 5.0 -> 6.0"), (3, "5.0", "study.epochs 4 -> 3")):
        kept.write_text(TINY_TABLE1.replace("\nepochs = 2\n", f"\nepochs = {epochs}\n").replace("snr_db = 5.0", f"snr_db = {snr}"))
        assert main(["run", "--resume", str(run_dir), "--quiet"]) != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err.splitlines()[0] and "epochs (may only grow)" in err and "Traceback" not in err
        assert json.loads((run_dir / "scenario.resolved.json").read_text())["study"]["epochs"] == 4  # nothing overwritten


def test_a_resumed_study_reports_the_wall_time_of_all_its_sittings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json's wall_s is the sum over sittings: a stopped sitting's time is kept, and
    the resumed one adds to it (not only the last sitting's)."""
    import time

    import studies.xrefine as xrefine

    calls = {"n": 0}

    def slow_then_stop(cfg: dict, seed: int, run_dir: Path, progress: object) -> dict:
        calls["n"] += 1
        time.sleep(0.3)
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return {}

    monkeypatch.setattr(xrefine, "run", slow_then_stop)
    monkeypatch.setattr(xrefine, "report", lambda run_dir: [])
    study = Path(__file__).resolve().parents[1] / "scenarios" / "xrefine.toml"
    run_dir = tmp_path / "run"
    assert main(["run", str(study), "--run-dir", str(run_dir), "--quiet"]) != 0
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sittings"] == 2 and summary["wall_s"] >= 0.6


def _stat(pid: int | str) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process from /proc, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    return [int(d.name) for d in Path("/proc").glob("[0-9]*") if (st := _stat(d.name)) and st[1] == pid and st[0] != "Z"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_sigterm_stops_a_study_and_its_worker_processes_and_keeps_the_sitting(tmp_path: Path) -> None:
    """``kill PID`` of a study training in worker processes: exit 130 with the resume line,
    the sitting recorded, and no worker left training (one would race the resumed run for the
    same checkpoint files). The workers used to outlive their parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[1]
    scen = tmp_path / "t1.toml"
    scen.write_text('name = "t1"\nseed = 3\n[study]\nkind = "sdnet_table1"\nn_r = 8\nn_t = 2\nn_conv = 2\ntasks = [100, 101]\n'
                    "train_samples = 4000\ntest_samples = 100\nepochs = 500\nbatch_size = 50\nchunk_epochs = 1\njobs = 2\n")
    run_dir = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("w") as err_file:  # a file, not a pipe: a worker left running would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "run", str(scen), "--run-dir", str(run_dir), "--quiet"], cwd=root, stderr=err_file, text=True)
    workers: list[int] = []
    try:
        t0 = time.monotonic()
        while not list((run_dir / "work").glob("task*-partial.npz")):  # both workers are training
            assert proc.poll() is None and time.monotonic() - t0 < 240, "the study ended or never started training"
            time.sleep(0.5)
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        time.sleep(1)
        alive = [p for p in workers if (st := _stat(p)) and st[0] != "Z"]
    finally:
        for pid in [proc.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    err = log.read_text()
    assert rc == 130 and "continue with: airfleet run --resume" in err and "Traceback" not in err
    assert len(json.loads((run_dir / "sittings.json").read_text())) == 1
    assert alive == []
