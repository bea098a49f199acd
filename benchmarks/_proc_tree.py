"""Peak resident memory of a benchmark child's whole process tree, from /proc.

A Flower simulation is a tree: the driver (ServerApp, SuperLink state, simulation
engine), Ray's raylet/GCS and its worker processes. :func:`measure` runs one command,
samples the tree's summed RSS every 0.2 s, and returns the last JSON object the
command printed together with the peak, in bytes. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

__all__ = ["tree_rss_bytes", "measure"]


def tree_rss_bytes(root_pid: int) -> int:
    """Summed resident set size (bytes) of ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, stack = 0, [root_pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def measure(cmd: list[str], cwd: Path) -> tuple[dict, int]:
    """Run ``cmd``; return (the last line it printed that is a JSON object, peak tree RSS in bytes)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed with exit code {proc.returncode}")
    last = [ln for ln in out.splitlines() if ln.startswith("{")][-1]  # a profiler may print after it
    return json.loads(last), peak
