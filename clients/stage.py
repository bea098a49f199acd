"""The contract between a device's round and the optional per-paper stages it runs.

A device's round (``clients/app.py``) fine-tunes its SDNet detector and then runs the
stages its class enables (``influence``, ``prune``, ``csi_feedback``), each a function

    run_stage(ctx: DeviceContext, cfg: dict) -> StageResult

living in the module that owns that paper's method. Stages never talk to Flower: the
device app moves ``payloads`` into the reply's ConfigRecord and ``side`` into an
evaluation-only ArrayRecord, and persists ``state`` for the next round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from common.channels import ChannelTask

__all__ = ["DeviceContext", "StageResult"]


@dataclass
class DeviceContext:
    """What a stage may read about the device and its round.

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
        ``device-id``, ``unit-version`` and stage keys such as ``csi-decoder-tag``).
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


@dataclass
class StageResult:
    """What a stage gives back.

    Attributes
    ----------
    metrics : dict[str, float]
        Flat names with the unit in the name where there is one (``ser_after``,
        ``nmse_db``, ``flops_pruned``); prefixed by the app with the stage name.
    flops : int
        Floating-point operations the device actually ran in this stage (for the
        emulated compute time).
    payloads : dict[str, bytes]
        Uplink bitstreams for the base station (real, decodable bytes).
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
