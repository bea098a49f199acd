"""Byte columns against an independent oracle: the bytes Flower's own push path produces.

A loopback Grid runs the real ServerApp round loop (``FleetServer``) and the real
ClientApp in-process (no Ray), and pushes every message, both ways, through Flower's
``push_objects`` — the function its deployment Grid and SuperNodes use to put a
message's deflated objects on the wire — recording the length of every object pushed.
The recorded bytes of a message's content (everything but the Message envelope, which
airfleet leaves out by design) must equal the ``bytes_down`` / ``bytes_up`` (+
``bytes_side``) columns, which airfleet computes with its own layout cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import push_objects
from flwr.supercore.task_identity import TaskIdentity

from clients.app import app as client_app
from common.scenario import load_scenario
from server.app import FleetServer
from server.results import init_run_dir
from tests.fleet_scenarios import tiny_fleet


def _pushed_content_bytes(msg: Message) -> int:
    """Bytes Flower's push path sends for ``msg``, less the Message envelope itself."""
    msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's Grid does before pushing
    sent: dict[str, int] = {}
    push_objects(get_all_nested_objects(msg), lambda oid, content: sent.__setitem__(oid, len(content)), keep_objects=True)
    return sum(sent.values()) - sent[msg.object_id]


class LoopbackGrid(Grid):
    """Every node is a ClientApp in this process; messages go through ``push_objects``."""

    def __init__(self, n_nodes: int) -> None:
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, node_config={"partition-id": i, "num-partitions": n_nodes}, state=RecordDict(), run_config={})
            for i in range(n_nodes)
        }
        self.replies: dict[str, Message] = {}
        self.down: dict[tuple[str, int], int] = {}  # (group, node) -> content bytes pushed to it
        self.up: dict[tuple[str, int], int] = {}

    def set_run(self, run_id: int) -> None:  # noqa: D102 - the loopback has one run
        pass

    @property
    def run(self):  # noqa: ANN201, D102
        raise NotImplementedError

    def create_message(self, *args, **kwargs) -> Message:  # noqa: ANN002, ANN003, D102
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            self.down[(msg.metadata.group_id, nid)] = _pushed_content_bytes(msg)
            mid = msg.metadata.message_id
            reply = client_app(msg, self.contexts[nid])
            self.up[(msg.metadata.group_id, nid)] = _pushed_content_bytes(reply)
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            self.replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def test_byte_columns_equal_the_bytes_flower_pushes(tmp_path: Path) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what Flower sets in an app process
    scenario = load_scenario(tiny_fleet(tmp_path / "tiny.toml", tmp_path / "cache", counts=(2, 1), rounds=2, crash_b=False))
    run_dir = tmp_path / "run"
    init_run_dir(run_dir, scenario)
    grid = LoopbackGrid(scenario.num_devices)
    FleetServer(grid, scenario, run_dir, quiet=True).run()
    node_of = {r["device_id"]: r["node_id"] for r in pq.read_table(run_dir / "setup.parquet").to_pylist()}
    for s in pq.read_table(run_dir / "setup.parquet").to_pylist():
        assert s["bytes_down"] == grid.down[("register", s["node_id"])]
        assert s["bytes_up"] == grid.up[("register", s["node_id"])]
    rows = pq.read_table(run_dir / "rounds.parquet").to_pylist()
    checked = 0
    for r in rows:
        key = (str(r["round"]), node_of[r["device_id"]])
        if key not in grid.down:
            continue
        assert r["bytes_down"] == grid.down[key], r
        assert r["bytes_up"] + r["bytes_side"] == grid.up[key], r
        checked += 1
    assert checked == len(rows) == 6
    # the unit travels once, in round 1: round 1's messages are larger by at least its 2,336 floats
    r1 = {r["device_id"]: r for r in rows if r["round"] == 1}
    r2 = {r["device_id"]: r for r in rows if r["round"] == 2}
    assert all(r1[d]["bytes_down"] - r2[d]["bytes_down"] >= 4 * 2_336 for d in r1 if r1[d]["status"] == "ok")
