"""The stage contract: one optional capability of a device class, with a half on each end.

A stage (influence-guided fine-tuning, relevance pruning, CSI feedback, ...) is enabled
per device class by a table ``[fleet.<name>]`` in the scenario. Both ends agree on its
:class:`StageSpec` (name, schema, its own checks, the uplink payload keys it owns), which
lives with the paper's method under ``common/<method>/`` (the spec and the registry of
stages are in ``common.stage_spec``, below ``common.scenario``, and re-exported here). Then:

- the **device half** (:class:`DeviceStage`, registered in ``clients/stages``) runs inside
  a device's round: ``run_device(ctx, cfg) -> StageResult`` with metrics, FLOPs, payloads
  (real bytes), an evaluation-only side channel and the state it keeps;
- the **base-station half** (:class:`BaseStationStage`, registered in ``server/stages``,
  optional) adds the stage's instructions to a device's round message and ingests the
  reply's payloads (decodes, applies, measures).

The round loops on both ends iterate over the registered stages and name none. Nothing
here imports Flower: the apps move ``payloads`` into the reply's ConfigRecord and ``side``
into an evaluation-only ArrayRecord, and persist ``state`` for the next round.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

# the spec half lives below the scenario (which validates class tables with it); re-exported
from common.stage_spec import STAGE_MODULES, StageSpec, stage_names, stage_spec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from common.channels import ChannelTask
    from common.learngene.unit import LearngeneUnit
    from common.profiles import DeviceProfile

__all__ = [
    "StageSpec",
    "DeviceContext",
    "StageResult",
    "DeviceStage",
    "BaseStationStage",
    "STAGE_MODULES",
    "stage_spec",
    "stage_names",
]


@dataclass
class DeviceContext:
    """What a stage's device half may read about the device and its round.

    Attributes
    ----------
    device_id : int
        Fleet-wide device index (0..N-1).
    device_class : str
        Name of the device class in the scenario.
    round : int
        Server round, from 1.
    seed : int
        Seed root for this device and round (derive sub-seeds with ``common.seeding``).
    task : ChannelTask
        The device's own channel distribution.
    snr_db : float
        Operating SNR in dB.
    model : torch.nn.Module | None
        The device's detector after this round's local fine-tuning (SDNet).
    train, val : Any
        The device's local detection data (``common.phy`` batches), or None.
    state : dict[str, np.ndarray]
        What the stage persisted in earlier rounds (empty in the first).
    instructions : dict[str, Any]
        The server's instructions for this round (its ConfigRecord: ``round``,
        ``device-id``, ``unit-version`` and the keys base-station halves add).
    torch_device : str
        The class's ``device`` setting (``cpu``, ``cuda`` or ``auto``): where the device
        computes, and its stages too unless their own table says otherwise.
    unit : LearngeneUnit | None
        The learngene unit version the detector inherited this round (``Theta_lg``).
    unit_params : dict[str, str]
        Unit tensor name -> the detector's parameter name that inherited it.
    """

    device_id: int
    device_class: str
    round: int
    seed: int
    task: ChannelTask
    snr_db: float
    model: torch.nn.Module | None = None
    train: Any = None
    val: Any = None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    instructions: dict[str, Any] = field(default_factory=dict)
    torch_device: str = "cpu"
    unit: LearngeneUnit | None = None
    unit_params: dict[str, str] = field(default_factory=dict)


@dataclass
class StageResult:
    """What a stage's device half gives back.

    Attributes
    ----------
    metrics : dict[str, float]
        Flat names with the unit in the name where there is one (``ser_after``,
        ``nmse_db``, ``flops_pruned``); prefixed by the round with the stage name.
    flops : int
        Floating-point operations the device actually ran in this stage (for the
        emulated compute time).
    payloads : dict[str, bytes]
        Uplink bitstreams for the base station (real, decodable bytes); keys among the
        spec's ``payload_keys``.
    side : dict[str, np.ndarray]
        Evaluation-only side channel (e.g. ground-truth CSI), never counted as feedback.
    state : dict[str, np.ndarray]
        Arrays to persist on the device for its next round.
    model : torch.nn.Module | None
        A replacement detector (e.g. after pruning), or None to keep the current one.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    flops: int = 0
    payloads: dict[str, bytes] = field(default_factory=dict)
    side: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    model: torch.nn.Module | None = None


@runtime_checkable
class DeviceStage(Protocol):
    """The device half of a stage.

    A half may also define ``receive_unit(unit, instructions, cfg) -> (unit, metrics)``:
    run before the device builds its detector, it returns the learngene unit to train
    from (e.g. moved forward by coded steps the base station sent) and metrics.
    """

    spec: StageSpec

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        """Run the stage in a device's round; ``cfg`` is the class's validated table."""
        ...


class BaseStationStage(ABC):
    """The base-station half of a stage: one instance per run, holding its state.

    Parameters
    ----------
    cfg_by_class : dict of str -> dict
        The validated stage table of every device class that enables the stage.
    seed : int
        The scenario seed.

    Subclasses set ``spec`` and override what they need; by default a stage adds no
    instructions and ingests nothing.
    """

    spec: ClassVar[StageSpec]

    def __init__(self, cfg_by_class: dict[str, dict[str, Any]], seed: int) -> None:
        self.cfg_by_class = dict(cfg_by_class)
        self.seed = int(seed)

    @classmethod
    def from_scenario(cls, cfg_by_class: dict[str, dict[str, Any]], scenario: Any) -> BaseStationStage:
        """The instance for a run, given the ``common.scenario.Scenario`` (not imported here:
        the scenario imports this module); override to read fleet-level tables."""
        return cls(cfg_by_class, scenario.seed)

    def begin_round(self, rnd: int, unit: LearngeneUnit | None) -> None:
        """Before round ``rnd``'s instructions: the manufacturer's learngene unit (or None)."""

    def end_round(self, rnd: int) -> dict[str, list[dict[str, Any]]]:
        """After round ``rnd``'s replies are ingested: rows to append to run tables
        (``<name>.parquet``), e.g. the unit versions the stage published."""
        return {}

    def instructions(self, device: DeviceProfile) -> dict[str, Any]:
        """Keys this stage adds to ``device``'s round instructions (ConfigRecord values)."""
        return {}

    def ingest(self, device: DeviceProfile, payloads: dict[str, bytes], side: dict[str, np.ndarray]) -> dict[str, float]:
        """Take ``device``'s reply: its payloads among ``spec.payload_keys`` and the side channel.

        Returns metrics (prefixed ``bs_`` by the server). Raise to reject the reply: the
        device's row is recorded as failed and the stage's state must stay as it was.
        """
        return {}

    def acknowledge(self, device: DeviceProfile, instructions: dict[str, Any], payloads: dict[str, bytes]) -> None:
        """Take ``device``'s late reply (it arrived, but after ``[server] round_deadline_s``):
        its payloads among ``spec.payload_keys`` are not ingested, but the device did
        complete its round with ``instructions`` (the ConfigRecord it was sent). A stage
        whose instructions move state the device keeps (e.g. a unit version) records here
        what the device now holds, so that later rounds do not send it again. Not called
        for replies that never arrived (timeouts): the server cannot know what those did."""

    def checkpoint(self) -> dict[str, np.ndarray]:
        """The stage's state after a completed round, as flat named arrays (written with the
        round by the server; ``restore`` takes it back on ``airfleet run --resume``). A
        stage whose later rounds depend on what it ingested must return all of it, so that
        a resumed run's tables equal an uninterrupted one's."""
        return {}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`checkpoint` returned (empty: nothing was kept)."""
