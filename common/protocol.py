"""The message protocol both ends speak: record keys and message types (no Flower import).

One round, as Flower records (see ``clients/app.py`` and ``server/app.py``):

- server -> device, ``query`` (registration, once): ConfigRecord :data:`SCENARIO_KEY`
  holding the resolved scenario as JSON (``{"json": text}``);
- device -> server, its reply: ConfigRecord :data:`CONFIG_KEY` with ``device-id``,
  ``device-class`` and ``task-id``;
- server -> device, ``train`` (one per round the device takes part in): ConfigRecord
  :data:`CONFIG_KEY` with the round's instructions (:data:`ROUND`, :data:`DEVICE_ID`,
  :data:`UNIT_VERSION` and each stage's own keys), and, when the unit is sent,
  ArrayRecord :data:`UNIT_KEY` with its tensors and ConfigRecord :data:`UNIT_META_KEY`;
- device -> server, its reply: MetricRecord :data:`METRICS_KEY` (``device-id``,
  ``task-id``, ``flops``, ``n-params``, ``wall-s`` and every metric as ``m:<name>``),
  ConfigRecord :data:`PAYLOADS_KEY` (real bitstreams as bytes) and, when a stage
  produced one, ArrayRecord :data:`SIDE_KEY` (evaluation only, never counted as feedback).
"""

from __future__ import annotations

__all__ = [
    "CONFIG_KEY",
    "UNIT_KEY",
    "UNIT_META_KEY",
    "METRICS_KEY",
    "PAYLOADS_KEY",
    "SIDE_KEY",
    "SCENARIO_KEY",
    "STATE_ARRAYS_KEY",
    "STATE_CONFIG_KEY",
    "REGISTER",
    "TRAIN",
    "ROUND",
    "DEVICE_ID",
    "DEVICE_CLASS",
    "TASK_ID",
    "UNIT_VERSION",
    "FLOPS",
    "N_PARAMS",
    "WALL_S",
    "METRIC_PREFIX",
]

#: ConfigRecord: instructions (server -> device) and the registration reply
CONFIG_KEY = "config"
#: ArrayRecord: the learngene unit's tensors
UNIT_KEY = "learngene"
#: ConfigRecord: the learngene unit's metadata
UNIT_META_KEY = "learngene-meta"
#: MetricRecord: a device's round metrics
METRICS_KEY = "metrics"
#: ConfigRecord: uplink bitstreams (bytes values)
PAYLOADS_KEY = "payloads"
#: ArrayRecord: evaluation-only side channel
SIDE_KEY = "side"
#: ConfigRecord: the resolved scenario shipped at registration
SCENARIO_KEY = "scenario"
#: records a device keeps in its Flower context between rounds
STATE_ARRAYS_KEY = "airfleet-state"
STATE_CONFIG_KEY = "airfleet-config"

#: message types
REGISTER = "query"
TRAIN = "train"

#: instruction and reply field names
ROUND = "round"
DEVICE_ID = "device-id"
DEVICE_CLASS = "device-class"
TASK_ID = "task-id"
UNIT_VERSION = "unit-version"
FLOPS = "flops"
N_PARAMS = "n-params"
WALL_S = "wall-s"
#: prefix of a device metric's key in the MetricRecord
METRIC_PREFIX = "m:"
