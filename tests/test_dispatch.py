"""The round's dispatch: longest work first (server.dispatch_order) and the engine's
O(new messages) hand-off (server.flower_dispatch) on a real in-memory SuperLink state."""

from __future__ import annotations

import threading
from queue import Empty, Queue

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.server.superlink.fleet.vce import vce_api

from common.profiles import device_profile
from common.scenario import Scenario
from server.dispatch_order import WorkEstimates, config_proxy
from server.flower_dispatch import dispatch_new_messages, install, standalone_link

_TOML = """
name = "order"
seed = 3
rounds = 1
[channels]
source = "gbsm"
[[fleet]]
name = "watch"
count = 2
n_conv = 4
n_tx = 4
train_samples = 100
[[fleet]]
name = "gateway"
count = 2
n_conv = 12
train_samples = 1000
[[fleet]]
name = "idle"
count = 1
workload = "none"
"""


def _profiles(tmp_path):
    p = tmp_path / "order.toml"
    p.write_text(_TOML)
    from common.scenario import load_scenario

    s: Scenario = load_scenario(p)
    return [device_profile(s, i) for i in range(s.num_devices)]


def test_longest_first_from_config_then_from_reported_flops(tmp_path) -> None:
    profiles = _profiles(tmp_path)  # ids 0-1 watch, 2-3 gateway, 4 idle
    work = WorkEstimates()
    assert [p.device_id for p in work.longest_first(profiles)] == [2, 3, 0, 1, 4]
    assert config_proxy(profiles[4].cfg) == 0.0
    # one watch reported: its class mate shares the figure; the unobserved gateways keep
    # their config proxy, scaled to FLOPs by the watch's figure, so they still lead
    work.observe(profiles[0], 10**9)
    assert work.estimate(profiles[1]) == 10**9
    assert work.estimate(profiles[2]) > 10**9
    assert [p.device_id for p in work.longest_first(profiles)] == [2, 3, 0, 1, 4]
    # reported FLOPs override the config: a gateway that did less work goes behind
    work.observe(profiles[3], 10**6)
    assert [p.device_id for p in work.longest_first(profiles)] == [0, 1, 2, 3, 4]


def _drain(q: Queue, n: int, timeout: float = 5.0) -> list[Message]:
    out = []
    for _ in range(n):
        try:
            out.append(q.get(timeout=timeout))
        except Empty:
            break
    return out


def test_dispatch_hands_out_in_push_order_once_and_one_per_node_per_tick() -> None:
    grid, state, nodes = standalone_link(50)
    ids = list(nodes)
    order = ids[::-1]  # pushed in an order unlike the nodes' registration order
    msgs = [Message(RecordDict({"c": ConfigRecord({"i": i})}), dst_node_id=nid, message_type="train", group_id="1") for i, nid in enumerate(order)]
    second = Message(RecordDict({"c": ConfigRecord({"i": -1})}), dst_node_id=order[0], message_type="train", group_id="1")
    grid.push_messages(msgs + [second])
    q: Queue = Queue()
    stop = threading.Event()
    th = threading.Thread(target=dispatch_new_messages, args=(state, q, nodes, stop))
    th.start()
    try:
        first = _drain(q, 50)
        assert [m.metadata.dst_node_id for m in first] == order
        assert all(m.metadata.delivered_at != "" for m in first)
        late = _drain(q, 1)  # the node's second message: a later tick
        assert [m.content.config_records["c"]["i"] for m in late] == [-1]
        assert _drain(q, 1, timeout=0.2) == []  # nothing is handed out twice
        # Flower's own scan finds nothing left undelivered
        assert all(state.get_message_ins(node_id=nid, limit=None) == [] for nid in ids)
    finally:
        stop.set()
        th.join()


def test_install_replaces_the_engine_function() -> None:
    install()
    assert vce_api.add_messages_to_queue is dispatch_new_messages


def test_flwr_run_components_install_the_adapter_before_the_engine() -> None:
    """``flwr run .`` loads pyproject's ClientApp component in the driver before the
    engine starts its dispatch thread; loading it alone (no ``server.app``) must have
    installed the O(new) hand-off."""
    import subprocess
    import sys
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ref = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]["clientapp"]
    module, attr = ref.split(":")
    code = (
        "import importlib, sys\n"
        f"app = getattr(importlib.import_module({module!r}), {attr!r})\n"
        "from flwr.clientapp import ClientApp\n"
        "from flwr.server.superlink.fleet.vce import vce_api\n"
        "from server.flower_dispatch import dispatch_new_messages\n"
        "assert isinstance(app, ClientApp), type(app)\n"
        "assert 'server.app' not in sys.modules\n"
        "print(vce_api.add_messages_to_queue is dispatch_new_messages)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("True")
