"""Device profiles: what a device is, derived from the scenario and its device id alone.

Both ends derive the same profile: the device to know what to do, the server to sample
availability and to price compute and transfers. Nothing here needs Flower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.channels import ChannelTask
from common.scenario import Scenario
from common.seeding import derive_seed, numpy_rng

__all__ = ["DeviceProfile", "device_profile", "is_available", "emulated_seconds", "radio_emulation"]


@dataclass(frozen=True)
class DeviceProfile:
    """One device.

    Attributes
    ----------
    device_id : int
        0..N-1 (the Flower partition-id of its supernode).
    class_name : str
    cfg : dict
        The resolved device-class table of the scenario.
    task : ChannelTask
        The device's own channel distribution (one of its class's ``tasks``).
    snr_db : float
    n_pilots : int
    seed : int
        The device's seed root: ``derive_seed(scenario seed, "device", device_id)``.
    """

    device_id: int
    class_name: str
    cfg: dict[str, Any]
    task: ChannelTask
    snr_db: float
    n_pilots: int
    seed: int

    @property
    def n_rx(self) -> int:
        return int(self.cfg["n_rx"])

    @property
    def n_tx(self) -> int:
        return int(self.cfg["n_tx"])

    @property
    def n_conv(self) -> int:
        return int(self.cfg["n_conv"])


def device_profile(scenario: Scenario, device_id: int) -> DeviceProfile:
    """The profile of device ``device_id`` (``ValueError`` if the fleet has no such device)."""
    spec = scenario.device(device_id)
    cfg = scenario.classes[spec.class_index]
    seed = derive_seed(scenario.seed, "device", device_id)
    tasks = list(cfg["tasks"])
    task_id = tasks[derive_seed(scenario.seed, "device-task", device_id) % len(tasks)]
    task = scenario.channel_task(task_id, int(cfg["n_rx"]), int(cfg["n_tx"]))
    return DeviceProfile(device_id, spec.class_name, dict(cfg), task, float(cfg["snr_db"]), int(cfg["n_pilots"]), seed)


def is_available(scenario: Scenario, profile: DeviceProfile, round_: int) -> bool:
    """Whether the device takes part in ``round_`` (seeded Bernoulli(availability))."""
    p = float(profile.cfg["availability"])
    if p >= 1.0:
        return True
    return bool(numpy_rng(scenario.seed, "availability", round_, profile.device_id).random() < p)


def emulated_seconds(profile: DeviceProfile, flops: int, bytes_down: int, bytes_up: int) -> tuple[float, float]:
    """Emulated (compute, transfer) seconds of one device round.

    compute = FLOPs actually run / the class's FLOP/s; transfer = downlink bits / downlink
    rate + uplink bits / uplink rate (the serialized message sizes, in bits).
    """
    compute = float(flops) / float(profile.cfg["flops_per_s"])
    transfer = 8.0 * bytes_down / float(profile.cfg["downlink_bps"]) + 8.0 * bytes_up / float(profile.cfg["uplink_bps"])
    return compute, transfer


def radio_emulation(scenario: Scenario, profiles: list[DeviceProfile], rows: list[dict[str, Any]], round_: int) -> list[dict[str, Any]]:
    """Emulated time, airtime and energy of a round's devices over the scenario's
    ``[radio]`` cell (``common.radio.round.price_round``), one dict of row columns per
    device (and ``common.radio.round.OUT_OF_COVERAGE``).

    ``rows`` give each device's ``bytes_down``, ``bytes_unit``, ``bytes_up`` (0 without a
    reply), ``flops`` and ``status``.
    """
    from common.radio.config import CellConfig
    from common.radio.round import price_round

    return price_round(CellConfig.from_data(scenario.data["radio"]), profiles, rows, scenario.seed, round_)
