"""Where a moving device is in a round: a straight track at constant speed (issue #13, item 1).

A device class with ``speed_mps > 0`` (``[[fleet]]``, ``RADIO_CLASS_SCHEMA``) moves; with
the default 0 it is dropped afresh in its task circle every round (``common.radio.channel``).

- Start (round 1): for the geometric sources (``gbsm``, ``umi``, ``uma``, ``rma``) the
  device's own drop in its task circle from ``derive_seed(seed, "radio-channel", 1,
  device_id)`` (``gbsm``: ``layout.ue_drops_m``, where a static device is in round 1;
  ``umi`` / ``uma`` / ``rma``: ``layout.ue_positions_m(task, 1, ...)``); for ``rayleigh``,
  ``cdl`` and ``imported`` the task centre, where their path loss is taken when static.
- Heading: ``"random"``, a horizontal direction uniform in [0, 2 pi) drawn once per device
  from ``derive_seed(seed, "radio-heading", device_id)``; ``"away"``, radially away from
  the BS through the start.
- Clock: round ``r`` starts ``(r - 1) x round_interval_s`` seconds of emulated time after
  round 1 (``round_interval_s`` per class, default 1 s: a fixed real-time spacing of
  rounds, independent of how long a round's transfers take), so the device is at
  ``start + speed_mps x (r - 1) x round_interval_s x heading`` (m), at the start's height.

The track is not confined to the task circle or the cell; the ``gbsm`` environment is
evaluated wherever the device is (``gbsm.channels_at``; spatially consistent, so
consecutive rounds a short step apart see correlated channels), the 38.901 path loss at
its 2-D distance (``common.radio.cell``, at least 10 m).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common.channels.layout import task_centre_m, ue_drops_m, ue_positions_m
from common.seeding import derive_seed, numpy_rng

__all__ = ["is_moving", "start_position_m", "heading_xy", "track_position_m", "moving_positions_m", "TRACK_SOURCES"]

#: sources whose moving devices start at their own drop in the task circle
TRACK_SOURCES = ("gbsm", "umi", "uma", "rma")


def is_moving(cfg: Any) -> bool:
    """True when a device class moves between rounds (``speed_mps > 0``)."""
    return float(cfg.get("speed_mps", 0.0)) > 0.0


def start_position_m(task: Any, seed: int, device_id: int) -> np.ndarray:
    """Round-1 position of a moving device, ``float64 [3]`` (m, BS at the origin)."""
    if task.source == "gbsm":  # where a static gbsm device is in round 1
        return ue_drops_m(task, [derive_seed(seed, "radio-channel", 1, device_id)])[0]
    if task.source in TRACK_SOURCES:
        return ue_positions_m(task, 1, derive_seed(seed, "radio-channel", 1, device_id))[0]
    return task_centre_m(task)


def heading_xy(cfg: Any, start_m: np.ndarray, seed: int, device_id: int) -> np.ndarray:
    """Unit horizontal direction of travel, ``float64 [2]``."""
    mode = str(cfg.get("heading", "random"))
    if mode == "away":
        return start_m[:2] / max(float(np.linalg.norm(start_m[:2])), 1e-9)
    phi = float(numpy_rng(seed, "radio-heading", device_id).uniform(0.0, 2.0 * np.pi))
    return np.array([np.cos(phi), np.sin(phi)])


def track_position_m(profile: Any, seed: int, round_: int) -> np.ndarray:
    """Position of a moving device (``common.profiles.DeviceProfile``) in round ``round_``
    (1-based), ``float64 [3]`` in metres (see the module docstring)."""
    cfg = profile.cfg
    start = start_position_m(profile.task, seed, profile.device_id)
    t_s = (round_ - 1) * float(cfg.get("round_interval_s", 1.0))
    pos = start.copy()
    pos[:2] += float(cfg.get("speed_mps", 0.0)) * t_s * heading_xy(cfg, start, seed, profile.device_id)
    return pos


def moving_positions_m(profiles: list[Any], seed: int, round_: int) -> np.ndarray:
    """``float64 [n, 3]``: each moving device's track position in round ``round_``; NaN rows
    for the devices that do not move."""
    out = np.full((len(profiles), 3), np.nan)
    for i, p in enumerate(profiles):
        if is_moving(p.cfg):
            out[i] = track_position_m(p, seed, round_)
    return out
