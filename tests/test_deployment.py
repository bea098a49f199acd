"""The same ServerApp/ClientApp on Flower's deployment engine.

Starts a real ``flower-superlink`` and two ``flower-supernode`` processes on loopback,
submits the app with ``flwr run . <connection>``, checks the rows and stops them all.
Runtime dependency installation is disabled so the run uses this environment.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fleet_scenarios import tiny_fleet

pytestmark = pytest.mark.flower

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flower-superlink not installed")
def test_superlink_and_two_supernodes(tmp_path: Path) -> None:
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    scen = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", counts=(1, 1), crash_b=False)
    run_dir = tmp_path / "run"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        log = open(tmp_path / "superlink.log", "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [str(BIN / "flower-superlink"), "--insecure", "--port", str(port), "--disable-runtime-dependency-installation", "--database", ":flwr-in-memory:"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            )
        )
        _wait_port(port, 60)
        for i in range(2):
            log = open(tmp_path / f"supernode{i}.log", "w")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                        "--port", str(_free_port()), "--node-config", f"partition-id={i} num-partitions=2",
                    ],
                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                )
            )
        res = subprocess.run(
            [
                str(BIN / "flwr"), "run", ".", "test", "--stream",
                "--run-config", f'scenario="{scen}" run-dir="{run_dir}"',
            ],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        deadline = time.monotonic() + 120  # --stream returns when the run ends; files are final then
        while not (run_dir / "summary.json").is_file() and time.monotonic() < deadline:
            time.sleep(1)
        rows = pq.read_table(run_dir / "rounds.parquet").to_pylist()
        assert sorted((r["round"], r["device_id"]) for r in rows) == [(1, 0), (1, 1), (2, 0), (2, 1)]
        assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
        assert {r["device_id"]: r["device_class"] for r in rows} == {0: "a", 1: "b"}
        assert all(r["bytes_down"] > 0 and r["bytes_up"] > 0 for r in rows)
        assert all(r["bytes_unit"] > 0 for r in rows if r["round"] == 1)
        assert all(r["bytes_unit"] == 0 for r in rows if r["round"] == 2)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
    assert all(p.poll() is not None for p in procs)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flower-superlink not installed")
def test_a_supernode_killed_mid_round_and_restarted_takes_part_again(tmp_path: Path) -> None:
    """Issue #22: a SuperNode killed in round 2 fails its device's row of that round; started
    again, it comes back with a new node id, is registered before round 3 and takes part."""
    import signal

    home = tmp_path / "flwr-home"
    home.mkdir()
    port = _free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    scen = tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", counts=(1, 1), rounds=3, crash_b=False)
    scen.write_text(
        scen.read_text()
        .replace("round_timeout_s = 600.0", "round_timeout_s = 30.0")
        .replace("train_samples = 100", "train_samples = 1000")
        .replace("epochs = 1\n", "epochs = 4\n")
    )
    run_dir = tmp_path / "run"
    procs: list[subprocess.Popen] = []

    def supernode(i: int, tag: str) -> subprocess.Popen:
        log = open(tmp_path / f"supernode{i}{tag}.log", "w")
        p = subprocess.Popen(
            [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}", "--port", str(_free_port()), "--node-config", f"partition-id={i} num-partitions=2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,  # its own group: killed with its ClientApp process
        )
        procs.append(p)
        return p

    try:
        procs.append(subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--port", str(port), "--disable-runtime-dependency-installation", "--database", ":flwr-in-memory:"],
            env=env, stdout=open(tmp_path / "superlink.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
        ))
        _wait_port(port, 60)
        victim = [supernode(0, ""), supernode(1, "")][1]
        run = subprocess.Popen(
            [str(BIN / "flwr"), "run", ".", "test", "--stream", "--run-config", f'scenario="{scen}" run-dir="{run_dir}"'],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        end = time.monotonic() + 600
        while not (run_dir / "rounds.parts" / "round-00001.parquet").is_file():  # the event: round 1 done, round 2 under way
            assert run.poll() is None and time.monotonic() < end, "round 1 never completed"
            time.sleep(0.2)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        supernode(1, "-restarted")
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, out[-3000:]
        while not (run_dir / "summary.json").is_file() and time.monotonic() < end:
            time.sleep(0.5)
        rows = {(r["round"], r["device_id"]): r for r in pq.read_table(run_dir / "rounds.parquet").to_pylist()}
        assert all(rows[(k, 0)]["status"] == "ok" for k in (1, 2, 3))
        assert rows[(1, 1)]["status"] == "ok" and rows[(2, 1)]["status"] in ("timeout", "failed"), rows[(2, 1)]
        back = rows[(3, 1)]
        assert back["status"] == "ok" and back["node_id"] != rows[(1, 1)]["node_id"] and back["bytes_unit"] > 0, back
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
