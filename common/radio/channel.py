"""Each device's own channel in a round, per PRB: its post-equalisation gain and its position.

In round ``r`` device ``d`` draws one realisation of its own channel task
(``profile.task``, ``common.channels``) with the class's ``n_rx x n_tx``, evaluated at the
centre of every PRB: the task's frequency response at the baseband offsets
``(k - n_prb // 2) * 12 * SCS`` (k = 0..n_prb-1) around the task's carrier
(``subcarrier_spacing_hz`` of the task set to the PRB bandwidth). Block fading: one
realisation per PRB and round.

- ``gbsm``: the UE is dropped uniformly in the task's circle
  (``layout.ue_drops_m`` of ``derive_seed(seed, "radio-channel", r, d)``: the seed's own
  hashed bits, no generator per device) and
  its channel is the environment's response there (``gbsm.channels_at``, one vectorised
  call per task); frequency selective through the path delays.
- ``umi`` / ``uma`` / ``rma`` / ``cdl`` / ``rayleigh``: the round's devices of one task are
  one draw of the source (``sample_channels(task, n, derive_seed(seed, "radio-channel",
  r, task_id))``, devices in id order; for the Sionna system-level sources they are the
  UTs of one topology, as the source generates a task); the geometric ones place the UE
  at ``layout.ue_positions_m`` of the same seed. ``rayleigh`` is i.i.d. per PRB.
- ``imported``: the file's narrowband channel (its grid is not the cell's): flat, the
  same H on every PRB.

The gain of a PRB is the largest eigenvalue of ``H^H H`` (one layer on the dominant
eigenmode, SVD precoding + MRC combining), with the source's normalisation
``E[|h_ij|^2] = 1``; path loss is applied separately (``common.radio.cell``).
Mobility (class ``speed_mps > 0``, ``common.radio.mobility``): the device is on its
straight track instead of a fresh drop; for ``gbsm`` its channel is the environment's
response at the track position (spatially consistent: a short step between rounds keeps
the channel correlated); for the other sources only its position (path loss) moves, its
small-scale draw is as above.
A task option ``ue_rotation = "random"`` of ``gbsm`` is not applied here (unrotated UE
array).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from common.channels import ChannelTask, sample_channels
from common.channels.layout import ue_drops_m, ue_positions_m
from common.radio.mobility import is_moving, moving_positions_m, track_position_m
from common.seeding import derive_seed

__all__ = ["RoundChannels", "round_channels", "dominant_gain", "prb_task", "GEOMETRIC_SOURCES"]

#: sources whose UEs sit at ``layout.ue_positions_m`` of the draw's seed
GEOMETRIC_SOURCES = ("gbsm", "umi", "uma", "rma")
#: sources taken narrowband and repeated over the PRBs
FLAT_SOURCES = ("imported",)


@dataclass(frozen=True)
class RoundChannels:
    """The round's small-scale channel of each device.

    Attributes
    ----------
    gains : np.ndarray
        ``float64 [n, n_prb]``: largest eigenvalue of ``H^H H`` per PRB (linear).
    position_m : np.ndarray
        ``float64 [n, 3]`` UE positions (BS at the origin, m); NaN rows where the source
        has no geometry (``rayleigh``, ``cdl``, ``imported``).
    """

    gains: np.ndarray
    position_m: np.ndarray


def dominant_gain(H: torch.Tensor) -> np.ndarray:
    """Largest eigenvalue of ``H^H H``: ``H`` complex ``[..., n_rx, n_tx]`` -> ``float64 [...]``."""
    if H.shape[-1] == 1:
        return (H.abs() ** 2).sum(dim=(-2, -1)).double().numpy()
    return torch.linalg.eigvalsh(H.mH @ H)[..., -1].double().numpy()


def prb_task(task: ChannelTask, prb_hz: float) -> ChannelTask:
    """``task`` with its subcarrier spacing set to the PRB bandwidth (the PRB-centre grid)."""
    return ChannelTask.make(task.source, task.n_rx, task.n_tx, task.task_id, task.seed, **{**dict(task.params), "subcarrier_spacing_hz": float(prb_hz)})


def round_channels(profiles: list[Any], n_prb: int, prb_hz: float, seed: int, round_: int) -> RoundChannels:
    """Each device's channel realisation of round ``round_`` (see the module docstring).

    Parameters
    ----------
    profiles : list of common.profiles.DeviceProfile
        The round's devices (``task``, ``device_id``).
    n_prb : int
    prb_hz : float
        PRB bandwidth (12 x SCS), Hz.
    seed : int
        The scenario seed.
    round_ : int

    Returns
    -------
    RoundChannels
    """
    n = len(profiles)
    gains = np.zeros((n, n_prb))
    pos = np.full((n, 3), np.nan)
    groups: dict[ChannelTask, list[int]] = {}
    for i, p in enumerate(profiles):
        groups.setdefault(p.task, []).append(i)
    for task, idx in groups.items():
        idx = sorted(idx, key=lambda i: profiles[i].device_id)
        wide = prb_task(task, prb_hz)
        if task.source == "gbsm":
            from common.channels.gbsm import channels_at, gbsm_environment

            xyz = _gbsm_positions_m([profiles[i] for i in idx], seed, round_)
            H = channels_at(gbsm_environment(task), xyz, n_prb, prb_hz)
        else:
            s = derive_seed(seed, "radio-channel", round_, task.task_id)
            if task.source in FLAT_SOURCES:
                H = sample_channels(task, len(idx), s)[:, None].expand(-1, n_prb, -1, -1)
            else:
                H = sample_channels(wide, len(idx), s, n_prb)
            xyz = ue_positions_m(task, len(idx), s) if task.source in GEOMETRIC_SOURCES else np.full((len(idx), 3), np.nan)
        gains[idx] = dominant_gain(H)
        pos[idx] = xyz
    moving = moving_positions_m(profiles, seed, round_)
    rows = np.isfinite(moving[:, 0])
    pos[rows] = moving[rows]
    return RoundChannels(gains, pos)


def _gbsm_positions_m(profiles: list[Any], seed: int, round_: int) -> np.ndarray:
    """``gbsm`` devices' UE positions in a round (one task), ``float64 [n, 3]`` (m): each
    one's track when its class moves (``common.radio.mobility``), else a fresh drop in its
    task circle, ``layout.ue_drops_m`` of ``derive_seed(seed, "radio-channel", round_,
    device_id)``."""
    seeds = [derive_seed(seed, "radio-channel", round_, p.device_id) for p in profiles]
    xyz = ue_drops_m(profiles[0].task, seeds)
    for i, p in enumerate(profiles):
        if is_moving(p.cfg):
            xyz[i] = track_position_m(p, seed, round_)
    return xyz
