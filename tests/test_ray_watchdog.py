"""The run's Ray processes end with its driver, even after ``kill -9`` (issue #22), without
Ray: stand-ins for the raylet (carries the run's token) and for its agents (a child whose
environment does not show the token, as Ray's agents' clobbered one often does; it ignores
SIGTERM, as the agents blocked on a dead GCS do), and a bystander that must stay. The real
runs are measured in ``benchmarks/chaos.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.ray_watchdog import OWNER_ENV, ray_watchdog, run_processes, watch

ROOT = Path(__file__).resolve().parents[1]
AGENT = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
# a raylet stand-in: starts an agent without the token, prints its pid, sleeps
RAYLET = (
    "import os, signal, subprocess, sys, time\n"
    "env = {k: v for k, v in os.environ.items() if k != 'AIRFLEET_RAY_OWNER'}\n"
    f"a = subprocess.Popen([sys.executable, '-c', {AGENT!r}], env=env, stdout=subprocess.PIPE, text=True)\n"
    "a.stdout.readline()\n"
    "print(a.pid, flush=True)\n"
    "time.sleep(600)\n"
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the watchdog reads /proc")


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_until(cond, what: str, limit_s: float = 60.0) -> None:  # noqa: ANN001
    end = time.monotonic() + limit_s  # an upper bound on an event, not a guess at its time
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _raylet(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """A raylet stand-in carrying ``env`` and the pid of its agent stand-in."""
    p = subprocess.Popen([sys.executable, "-c", RAYLET], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    return p, int(p.stdout.readline())


def _kill(*pids: int) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_run_processes_and_their_descendants_end_when_the_block_ends_and_bystanders_stay() -> None:
    bystander, bystander_agent = _raylet(dict(os.environ))
    try:
        with ray_watchdog() as env:
            raylet, agent = _raylet({**os.environ, **env})
            assert set(run_processes(f"{OWNER_ENV}={env[OWNER_ENV]}")) == {raylet.pid, agent}  # the agent by descent alone
        raylet.wait(timeout=60)
        _wait_until(lambda: not _alive(agent), "the agent stand-in to end (SIGTERM ignored: SIGKILL after the grace)")
        assert _alive(bystander.pid) and _alive(bystander_agent)
    finally:
        _kill(bystander.pid, bystander_agent, agent, raylet.pid)
        bystander.wait()
        raylet.wait()


def test_an_agent_orphaned_before_the_driver_ends_is_ended_too() -> None:
    """The raylet dies first (with the driver, in Ray): its agent, now a child of init and
    without the token, is known from an earlier look."""
    token = "test-" + os.urandom(8).hex()
    r, w = os.pipe()
    looked = threading.Event()
    ended: list[list[int]] = []
    t = threading.Thread(target=lambda: ended.append(watch(token, r, os.getpid(), look_s=0.05, on_look=looked.set)))
    t.start()
    raylet, agent = _raylet({**os.environ, OWNER_ENV: token})
    try:
        for _ in range(2):  # a whole look after the agent started
            looked.clear()
            assert looked.wait(60)
        raylet.kill()
        raylet.wait()
        assert _alive(agent) and agent not in run_processes(f"{OWNER_ENV}={token}")  # orphaned: no longer found by descent
        os.close(w)
        t.join(60)
        assert ended == [[agent]]
        _wait_until(lambda: not _alive(agent), "the SIGKILLed agent stand-in to be gone")  # a signal is delivered, not awaited
    finally:
        _kill(agent)
        os.close(r)


def test_the_run_processes_end_after_kill_9_of_the_driver() -> None:
    """The driver starts the watchdog and a raylet stand-in, then is SIGKILLed: the
    stand-ins are ended without the driver doing anything."""
    driver_code = (
        "import os, subprocess, sys, time\n"
        "from cli.ray_watchdog import ray_watchdog\n"
        "with ray_watchdog() as env:\n"
        f"    p = subprocess.Popen([sys.executable, '-c', {RAYLET!r}], env={{**os.environ, **env}}, stdout=subprocess.PIPE, text=True)\n"
        "    print(p.pid, p.stdout.readline().strip(), flush=True)\n"
        "    time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", driver_code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    raylet, agent = map(int, driver.stdout.readline().split())
    try:
        assert _alive(raylet) and _alive(agent)
        driver.kill()
        driver.wait()
        _wait_until(lambda: not _alive(raylet) and not _alive(agent), "the orphaned stand-ins to end")
    finally:
        _kill(raylet, agent)
