"""Driver CPU of the simulation engine's dispatch and of the ServerApp's pulls, no Ray.

On a real in-memory SuperLink (``server.flower_dispatch.standalone_link``) with N nodes
and a round's N instructions pushed, times:

- one dispatch tick handing all N out (``first_tick_ms``) and one tick after that, with
  the N still stored because no reply has been pulled yet (``later_tick_ms``: what every
  0.1 s tick of the round costs), for Flower's ``add_messages_to_queue`` and airfleet's
  ``dispatch_new_messages``;
- one ``Grid.pull_messages`` over all N pending ids and over the oldest 64 (what
  ``FleetServer._exchange`` asks each poll).

    python benchmarks/dispatch_tick.py [--n 100 1000]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from queue import Queue

from flwr.app import ConfigRecord, Message, RecordDict

from server.flower_dispatch import dispatch_new_messages, flower_add_messages_to_queue, standalone_link


class _Ticks(threading.Event):
    """A stop event that stops a dispatch loop after ``n`` ticks, recording each tick's end."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.ends = n, [time.perf_counter()]

    def is_set(self) -> bool:
        return len(self.ends) > self.n

    def wait(self, timeout: float | None = None) -> bool:
        self.ends.append(time.perf_counter())
        return True


def _one(n: int, fn: Callable) -> dict:
    grid, state, nodes = standalone_link(n)
    msgs = [Message(RecordDict({"config": ConfigRecord({"round": 1, "device-id": i})}), dst_node_id=nid, message_type="train", group_id="1") for i, nid in enumerate(nodes)]
    ids = list(grid.push_messages(msgs))
    ticks = _Ticks(2)
    fn(state, Queue(), nodes, ticks)
    first, later = (b - a for a, b in zip(ticks.ends, ticks.ends[1:]))
    t0 = time.perf_counter()
    grid.pull_messages(ids[:64])
    t1 = time.perf_counter()
    grid.pull_messages(ids)
    t2 = time.perf_counter()
    return {"first_tick_ms": round(1e3 * first, 2), "later_tick_ms": round(1e3 * later, 2), "pull_oldest_64_ms": round(1e3 * (t1 - t0), 3), "pull_all_ms": round(1e3 * (t2 - t1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = [{"n_nodes": n, "flower": _one(n, flower_add_messages_to_queue), "airfleet": _one(n, dispatch_new_messages)} for n in args.n]
    print(json.dumps({"benchmark": "dispatch_tick", "results": rows}, indent=2))


if __name__ == "__main__":
    main()
