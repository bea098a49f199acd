"""CSI the compressor is pre-trained on, fine-tuned on and evaluated on.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. II-A and IV. The spatial-frequency CSI of
eq. (2), ``H: complex64 [n, n_ant, n_sc]`` (a ULA of ``n_ant`` BS antennas, a
single-antenna UE, ``n_sc`` subcarriers), comes from the built-in spatially consistent
``"gbsm"`` model instead of DeepMIMO/QuaDRiGa:

- pre-training: UEs uniform in the circles of ``pretrain_tasks`` environments (the
  paper's generic "O1" data);
- the shift: a UE moving along a straight track, ``spacing_m`` between samples (the
  paper's QuaDRiGa track, 29.6 samples/m), through the pre-training environment beyond its
  circle (``shift_env = "same"``) or through the device's own (``"new"``); round ``r`` of
  a device takes the next ``n_finetune + n_eval`` samples of its track (Fig. 6: fine-tune
  on the first ``n_finetune``, code and evaluate the next ``n_eval``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.channels import ChannelTask, sample_channels
from common.models.csi_compressor import csi_to_planes, planes_to_csi
from common.seeding import derive_seed, numpy_rng

__all__ = [
    "csi_task",
    "pretrain_csi",
    "track_positions",
    "track_csi",
    "device_environment",
    "round_window",
    "csi_to_truth",
    "truth_to_csi",
]


def csi_task(cfg: dict[str, Any], family_seed: int, task_id: int, los: bool) -> ChannelTask:
    """A legacy ``"gbsm"`` environment: ``n_ant``-element ULA at the BS, single-antenna UE.

    The legacy geometry because the pipeline's LoS pre-training needs ``los`` (the 38.901
    model is NLoS only).

    ``n_sc`` subcarriers span ``bandwidth_hz``; the UE circle has radius ``radius_m``.
    """
    return ChannelTask.make(
        "gbsm", int(cfg["n_ant"]), 1, int(task_id), int(family_seed),
        bs_array="ula", carrier_hz=float(cfg["carrier_hz"]),
        subcarrier_spacing_hz=float(cfg["bandwidth_hz"]) / int(cfg["n_sc"]),
        radius_m=float(cfg["radius_m"]), los=bool(los), model="legacy",
    )


def _to_csi(H: torch.Tensor) -> torch.Tensor:
    """``[n, n_sc, n_ant, 1]`` from a source -> spatial-frequency ``complex64 [n, n_ant, n_sc]`` (eq. 2)."""
    return H[..., 0].transpose(1, 2).contiguous().to(torch.complex64)


def pretrain_csi(cfg: dict[str, Any]) -> torch.Tensor:
    """Pre-training CSI ``complex64 [pretrain_samples, n_ant, n_sc]``.

    UEs uniform in the circles of ``pretrain_tasks`` environments (family seed derived from
    ``pretrain_seed``), shuffled deterministically.
    """
    k = int(cfg["pretrain_tasks"])
    n = int(cfg["pretrain_samples"])
    fam = derive_seed(int(cfg["pretrain_seed"]), "csi-pretrain-env")
    parts = []
    for j in range(k):
        nj = n // k + (1 if j < n % k else 0)
        if nj:
            task = csi_task(cfg, fam, j, bool(cfg["pretrain_los"]))
            parts.append(_to_csi(sample_channels(task, nj, derive_seed(fam, "ue", j), int(cfg["n_sc"]))))
    H = torch.cat(parts)
    perm = numpy_rng(int(cfg["pretrain_seed"]), "csi-pretrain-shuffle").permutation(H.shape[0])
    return H[torch.from_numpy(perm)]


def track_positions(task: ChannelTask, start_m: float, n: int, spacing_m: float, track_seed: int) -> np.ndarray:
    """``n`` positions ``float64 [n, 3]`` (m) on a straight track through ``task``'s circle.

    The track starts at the circle's centre and heads in an azimuth drawn from
    ``track_seed``; position ``i`` lies ``start_m + i * spacing_m`` metres along it.
    """
    from common.channels.layout import task_centre_m

    az = numpy_rng(track_seed, "csi-track-azimuth").uniform(0, 2 * np.pi)
    d = np.array([np.cos(az), np.sin(az), 0.0])
    s = float(start_m) + np.arange(int(n)) * float(spacing_m)
    return task_centre_m(task)[None, :] + s[:, None] * d[None, :]


def track_csi(cfg: dict[str, Any], task: ChannelTask, start_m: float, n: int, track_seed: int) -> torch.Tensor:
    """Spatially consistent CSI ``complex64 [n, n_ant, n_sc]`` along the track (``spacing_m`` apart)."""
    from common.channels.gbsm import channels_along_track

    pos = track_positions(task, start_m, n, float(cfg["spacing_m"]), track_seed)
    return _to_csi(channels_along_track(task, pos, int(cfg["n_sc"]), seed=track_seed))


def device_environment(cfg: dict[str, Any], task: ChannelTask) -> ChannelTask:
    """The environment a device's track runs through, fixed across rounds.

    ``shift_env = "same"``: the pre-training environment (the shift is the UE leaving the
    circle the backbone saw); ``"new"``: the device's own environment, derived from its
    channel task.
    """
    if cfg["shift_env"] == "same":
        return csi_task(cfg, derive_seed(int(cfg["pretrain_seed"]), "csi-pretrain-env"), 0, bool(cfg["pretrain_los"]))
    return csi_task(cfg, derive_seed(task.seed, "csi-device-env"), task.task_id, bool(cfg["shift_los"]))


def round_window(cfg: dict[str, Any], task: ChannelTask, device_id: int, rnd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A device's CSI of round ``rnd``: the fine-tuning and the evaluation window (Fig. 6).

    Parameters
    ----------
    cfg : dict
        A resolved ``csi_feedback`` table.
    task : ChannelTask
        The device's channel task: with ``device_id`` it fixes the track's heading (and,
        with ``shift_env = "new"``, the environment, :func:`device_environment`).
    device_id : int
        Fleet-wide device index.
    rnd : int
        Server round, from 1 (0 counts as 1): the window starts
        ``shift_offset_m + (rnd - 1) * (n_finetune + n_eval) * spacing_m`` metres from the
        environment's centre.

    Returns
    -------
    H_ft : torch.Tensor
        ``complex64 [n_finetune, n_ant, n_sc]``.
    H_eval : torch.Tensor
        ``complex64 [n_eval, n_ant, n_sc]``: the samples right after ``H_ft`` on the track.
    """
    env = device_environment(cfg, task)
    n_ft, n_ev = int(cfg["n_finetune"]), int(cfg["n_eval"])
    track_seed = derive_seed(task.seed, "csi-track", task.task_id, device_id)
    start = float(cfg["shift_offset_m"]) + (max(int(rnd), 1) - 1) * (n_ft + n_ev) * float(cfg["spacing_m"])
    H = track_csi(cfg, env, start, n_ft + n_ev, track_seed)
    return H[:n_ft], H[n_ft:]


def csi_to_truth(H: torch.Tensor) -> np.ndarray:
    """``complex64 [n, n_ant, n_sc]`` -> the side channel's ``float32 [n, 2, n_ant, n_sc]`` planes."""
    return csi_to_planes(H).numpy().astype(np.float32)


def truth_to_csi(truth: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`csi_to_truth`: ``float32 [n, 2, n_ant, n_sc]`` -> ``complex64 [n, n_ant, n_sc]``."""
    return planes_to_csi(torch.from_numpy(np.asarray(truth, dtype=np.float32)))
