"""Flower ClientApp: one simulated device.

Two message types:

- ``query`` (registration, once before round 1): the server ships the resolved scenario;
  the device derives its id from its node config (``partition-id``, which Flower's
  simulation engine sets and ``flower-supernode --node-config`` sets in deployment),
  keeps the scenario, and answers with its id and class.
- ``train`` (one per round it takes part in): instructions in ConfigRecord ``config``;
  the learngene unit in ArrayRecord ``learngene`` with its metadata in ConfigRecord
  ``learngene-meta`` when the server sends one. The reply carries MetricRecord
  ``metrics``, ConfigRecord ``payloads`` (real bitstreams as bytes) and, when a stage
  produced one, ArrayRecord ``side`` (evaluation-only, never counted as feedback).

Record keys and message types are in ``common.protocol``, shared with ``server/app.py``.
"""

from __future__ import annotations

import functools

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.device import run_device_round
from clients.persistence import load_device_state, resume_round, save_device_state, state_dir
from common.protocol import (
    CONFIG_KEY,
    DEVICE_CLASS,
    DEVICE_ID,
    FLOPS,
    METRIC_PREFIX,
    METRICS_KEY,
    N_PARAMS,
    PAYLOADS_KEY,
    ROUND,
    SCENARIO_KEY,
    SIDE_KEY,
    STATE_ARRAYS_KEY,
    STATE_CONFIG_KEY,
    TASK_ID,
    UNIT_KEY,
    UNIT_META_KEY,
    WALL_S,
)
from common.profiles import device_profile
from common.runtime import torch_threads
from common.scenario import Scenario

__all__ = ["app"]

app = ClientApp()


def _device_id(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError(
            "node config has no 'partition-id': start the supernode with "
            "--node-config 'partition-id=<device id> num-partitions=<fleet size>'"
        ) from None


def _scenario(context: Context) -> Scenario:
    cfg = context.state.config_records.get(STATE_CONFIG_KEY)
    if cfg is None or "scenario" not in cfg:
        raise RuntimeError("device has not registered (no scenario received)")
    return _parse(str(cfg["scenario"]))


@functools.lru_cache(maxsize=8)
def _parse(text: str) -> Scenario:
    """Validate a scenario once per process: every device an actor runs shares it."""
    return Scenario.from_json(text)


@app.query()
def register(msg: Message, context: Context) -> Message:
    """Keep the scenario; answer with this device's id and class."""
    text = str(msg.content.config_records[SCENARIO_KEY]["json"])
    scenario = _parse(text)
    device_id = _device_id(context)
    profile = device_profile(scenario, device_id)
    context.state.config_records[STATE_CONFIG_KEY] = ConfigRecord({"scenario": text})
    root, done = state_dir(), resume_round()
    if root is not None and done > 0:  # a resumed run: the state this device had after round `done`
        kept = load_device_state(root, device_id, done)
        if kept:
            context.state.array_records[STATE_ARRAYS_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in kept.items()})
    reply = ConfigRecord({DEVICE_ID: device_id, DEVICE_CLASS: profile.class_name, TASK_ID: profile.task.task_id})
    return Message(RecordDict({CONFIG_KEY: reply}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: fine-tune on local data, run the class's stages, reply."""
    scenario = _scenario(context)
    profile = device_profile(scenario, _device_id(context))
    cfg = msg.content.config_records[CONFIG_KEY]
    unit_arrays = unit_meta = None
    if UNIT_KEY in msg.content.array_records:
        unit_arrays = {k: a.numpy() for k, a in msg.content.array_records[UNIT_KEY].items()}
        unit_meta = dict(msg.content.config_records[UNIT_META_KEY])
    kept = context.state.array_records.get(STATE_ARRAYS_KEY)
    state = {k: a.numpy() for k, a in kept.items()} if kept is not None else {}

    if profile.cfg["workload"] == "none":
        res = run_device_round(scenario, profile, int(cfg[ROUND]), unit_arrays, unit_meta, state, instructions=dict(cfg))
    else:
        with torch_threads(int(float(scenario.data["server"]["cpus_per_device"]))):
            res = run_device_round(scenario, profile, int(cfg[ROUND]), unit_arrays, unit_meta, state, instructions=dict(cfg))

    context.state.array_records[STATE_ARRAYS_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in res.state.items()})
    root = state_dir()
    if root is not None and res.state:
        save_device_state(root, profile.device_id, int(cfg[ROUND]), res.state)
    metrics = MetricRecord(
        {
            DEVICE_ID: profile.device_id,
            TASK_ID: profile.task.task_id,
            FLOPS: int(res.flops),
            N_PARAMS: int(res.n_params),
            WALL_S: float(res.wall_s),
            **{f"{METRIC_PREFIX}{k}": float(v) for k, v in res.metrics.items()},
        }
    )
    content = RecordDict({METRICS_KEY: metrics, PAYLOADS_KEY: ConfigRecord(dict(res.payloads))})
    if res.side:
        content[SIDE_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in res.side.items()})
    return Message(content, reply_to=msg)
