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

Record keys are module constants shared with ``server/app.py``.
"""

from __future__ import annotations

import functools

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.device import run_device_round
from clients.profiles import device_profile
from common.scenario import Scenario

__all__ = ["app", "CONFIG_KEY", "UNIT_KEY", "UNIT_META_KEY", "METRICS_KEY", "PAYLOADS_KEY", "SIDE_KEY", "SCENARIO_KEY"]

CONFIG_KEY = "config"
UNIT_KEY = "learngene"
UNIT_META_KEY = "learngene-meta"
METRICS_KEY = "metrics"
PAYLOADS_KEY = "payloads"
SIDE_KEY = "side"
SCENARIO_KEY = "scenario"
_STATE_ARRAYS = "airfleet-state"
_STATE_CONFIG = "airfleet-config"

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
    cfg = context.state.config_records.get(_STATE_CONFIG)
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
    context.state.config_records[_STATE_CONFIG] = ConfigRecord({"scenario": text})
    reply = ConfigRecord({"device-id": device_id, "device-class": profile.class_name, "task-id": profile.task.task_id})
    return Message(RecordDict({CONFIG_KEY: reply}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: fine-tune on local data, run the class's stages, reply."""
    scenario = _scenario(context)
    profile = device_profile(scenario, _device_id(context))
    if profile.cfg["workload"] != "none":
        import torch

        torch.set_num_threads(max(1, int(float(scenario.data["server"]["cpus_per_device"]))))
    cfg = msg.content.config_records[CONFIG_KEY]
    unit_arrays = unit_meta = None
    if UNIT_KEY in msg.content.array_records:
        unit_arrays = {k: a.numpy() for k, a in msg.content.array_records[UNIT_KEY].items()}
        unit_meta = dict(msg.content.config_records[UNIT_META_KEY])
    kept = context.state.array_records.get(_STATE_ARRAYS)
    state = {k: a.numpy() for k, a in kept.items()} if kept is not None else {}

    res = run_device_round(scenario, profile, int(cfg["round"]), unit_arrays, unit_meta, state, instructions=dict(cfg))

    context.state.array_records[_STATE_ARRAYS] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in res.state.items()})
    metrics = MetricRecord(
        {
            "device-id": profile.device_id,
            "task-id": profile.task.task_id,
            "flops": int(res.flops),
            "n-params": int(res.n_params),
            "wall-s": float(res.wall_s),
            **{f"m:{k}": float(v) for k, v in res.metrics.items()},
        }
    )
    content = RecordDict({METRICS_KEY: metrics, PAYLOADS_KEY: ConfigRecord(dict(res.payloads))})
    if res.side:
        content[SIDE_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in res.side.items()})
    return Message(content, reply_to=msg)
