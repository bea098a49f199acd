"""The Ray processes a run starts end with its driver, even after ``kill -9`` (issue #22).

Ray starts its GCS and raylet with ``PR_SET_PDEATHSIG``: they die with the driver, and the
device workers follow within seconds. The raylet's two agents (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``, started even with the dashboard off) see the raylet die at once
but then try to tell the dead GCS about it, with a fixed 60 s timeout, before they exit:
after a SIGKILL of the driver they outlived it by 61 s (measured, Ray 2.55), and a run
resumed at once ran beside them.

:func:`ray_watchdog` starts a small process in its own session (a Ctrl-C or a kill of the
driver's process group does not reach it) holding the read end of a pipe whose write end
only the driver holds: the pipe reads end-of-file the moment the driver exits, however it
exits. The run's processes are those whose environment carries the run's token
(:data:`OWNER_ENV`, set before Ray starts: the GCS, the raylet, the workers) and all their
descendants (the agents: they overwrite the start of their environment block when they
set their process title, so the token is not always readable there). While the driver
lives the watchdog notes them once a second (pid and start time); when the pipe closes it
ends those still alive: SIGTERM, then SIGKILL after a short grace. Processes of other runs,
and of a Ray cluster the run only joined (``--ray-address``), are never touched. Linux
(``/proc``); elsewhere the watchdog finds nothing to end.

The watchdog runs this file as a script: it imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["OWNER_ENV", "ray_watchdog", "run_processes", "still_running", "end_processes", "watch"]

#: environment variable whose value marks the processes of a run's Ray instance
OWNER_ENV = "AIRFLEET_RAY_OWNER"

#: seconds between two looks at the run's processes while the driver lives
LOOK_S = 1.0

#: seconds between SIGTERM and SIGKILL
GRACE_S = 2.0


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a live process; None if it is gone
    or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))


def run_processes(entry: str, driver: int | None = None) -> dict[int, int]:
    """pid -> start time of the run's live processes: those whose environment holds
    ``entry`` (``NAME=value``: ``OWNER_ENV=<token>``) and all their descendants (this
    process excluded). ``driver`` is never taken for one (its other children are not the
    run's), whatever it shows."""
    mark = entry.encode()
    procs: dict[int, tuple[int, int]] = {}
    for p in Path("/proc").glob("[0-9]*"):
        if (st := _stat(int(p.name))) is not None:
            procs[int(p.name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = []
    for pid in procs:
        if pid == driver:
            continue
        with contextlib.suppress(OSError):
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                todo.append(pid)
    found: dict[int, int] = {}
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = procs[pid][1]
            todo += children.get(pid, [])
    found.pop(os.getpid(), None)
    return found


def still_running(seen: dict[int, int]) -> list[int]:
    """The pids of ``seen`` (pid -> start time) still running as the same process."""
    return sorted(pid for pid, start in seen.items() if (st := _stat(pid)) is not None and st[1] == start)


def end_processes(seen: dict[int, int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process of ``seen`` (pid -> start time) that still runs, SIGKILL those
    left after ``grace_s``; the pids that were running. A pid whose start time differs is
    another process that reused it: never signalled."""

    running = still_running(seen)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in still_running(seen):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.monotonic() + wait_s
        while still_running(seen) and time.monotonic() < end:
            time.sleep(0.05)
        if not still_running(seen):
            break
    return running


@contextlib.contextmanager
def ray_watchdog() -> Iterator[dict[str, str]]:
    """Start the watchdog; yield the environment variables to set before Ray starts.

    On leaving the block (the run ended, or raised) the driver closes its end of the pipe
    and the watchdog ends what is left of the run's processes; if the driver dies
    instead, its exit closes the pipe just the same.
    """
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    r, w = os.pipe()  # not inheritable: no process Ray starts holds the write end
    try:
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), token, str(r), str(os.getpid())],
            pass_fds=(r,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(r)
    try:
        yield {OWNER_ENV: token}
    finally:
        os.close(w)


def watch(token: str, fd: int, driver: int | None = None, look_s: float = LOOK_S, on_look: Callable[[], None] | None = None) -> list[int]:
    """Note the run's processes every ``look_s`` until the pipe ``fd`` reads end-of-file,
    then end them (:func:`end_processes`); the pids that were running. ``on_look`` is
    called after each look (tests)."""
    entry = f"{OWNER_ENV}={token}"
    seen: dict[int, int] = {}
    while True:
        seen |= run_processes(entry, driver)
        if on_look is not None:
            on_look()
        ready, _, _ = select.select([fd], [], [], look_s)
        if ready and not os.read(fd, 4096):
            break
    return end_processes(seen | run_processes(entry, driver))


if __name__ == "__main__":
    for _sig in (signal.SIGINT, signal.SIGHUP):  # the terminal's signals are the driver's to act on
        signal.signal(_sig, signal.SIG_IGN)
    watch(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
