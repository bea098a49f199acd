"""Longest-work-first order of a round's messages (list scheduling, LPT).

The simulation engine hands a round's messages to its W workers in the order the server
pushes them. A fleet of uneven classes finishes soonest when the longest device rounds
start first: Graham's LPT rule bounds the makespan by 4/3 - 1/(3W) of the optimum
(R. L. Graham, "Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2),
1969), where pushing the slowest class last leaves one worker running it alone at the end.

A device's work is its FLOPs per round, as its last reply reported them; before it has
replied, its class's last reported FLOPs; before any device of its class has, a proxy
from the class's configuration (conv layers x antennas x samples seen), scaled to FLOPs
by the classes already observed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.profiles import DeviceProfile

__all__ = ["WorkEstimates", "config_proxy"]


def config_proxy(cfg: dict) -> float:
    """Relative work of one round of a device class from its table (no unit).

    ``n_conv * n_rx * n_tx * (3 * train_samples * epochs + val_samples)``: an SDNet's
    layer cost grows with its depth and antenna counts; a training step costs about
    three forward passes (forward, backward through activations and weights). 0 for a
    device class with ``workload = "none"``.
    """
    if cfg.get("workload") == "none":
        return 0.0
    per_sample = float(cfg.get("n_conv", 1)) * float(cfg.get("n_rx", 1)) * float(cfg.get("n_tx", 1))
    samples = 3.0 * float(cfg.get("train_samples", 0)) * float(cfg.get("epochs", 1)) + float(cfg.get("val_samples", 0))
    return per_sample * max(samples, 1.0)


@dataclass
class WorkEstimates:
    """Per-device and per-class FLOPs of a round, learnt from replies."""

    by_device: dict[int, int] = field(default_factory=dict)
    by_class: dict[str, int] = field(default_factory=dict)
    _proxy_scale: dict[str, float] = field(default_factory=dict)  # class -> FLOPs / proxy

    def observe(self, profile: DeviceProfile, flops: int) -> None:
        """Record the FLOPs a device reported for a round."""
        self.by_device[profile.device_id] = int(flops)
        self.by_class[profile.class_name] = int(flops)
        proxy = config_proxy(profile.cfg)
        if proxy > 0 and flops > 0:
            self._proxy_scale[profile.class_name] = flops / proxy

    def estimate(self, profile: DeviceProfile) -> float:
        """Expected FLOPs of the device's next round."""
        if profile.device_id in self.by_device:
            return float(self.by_device[profile.device_id])
        if profile.class_name in self.by_class:
            return float(self.by_class[profile.class_name])
        scale = statistics.median(self._proxy_scale.values()) if self._proxy_scale else 1.0
        return config_proxy(profile.cfg) * scale

    def longest_first(self, profiles: Iterable[DeviceProfile]) -> list[DeviceProfile]:
        """``profiles`` by expected work, largest first; ties by device id (deterministic)."""
        return sorted(profiles, key=lambda p: (-self.estimate(p), p.device_id))
