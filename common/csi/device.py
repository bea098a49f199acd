"""A device's round of CSI feedback: sync, fine-tune, code the decoder update and the latents.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates". In round ``r`` a device

1. starts from the shared pre-trained compressor (:mod:`common.csi.pretrain`) and loads
   the encoder/decoder pair that matches the base station's decoder
   (:mod:`common.csi.sync`);
2. draws the round's window on its track (:func:`common.csi.data.round_window`): the
   first ``n_finetune`` samples fine-tune, the next ``n_eval`` are coded (Fig. 6);
3. fine-tunes with its class's scheme (:mod:`common.csi.finetuning`: eq. 9, or eq. 21
   with the update quantized by eq. 12-14 and priced by eq. 16-19);
4. codes the decoder update (``fm``) and the evaluation window's latents into real
   bitstreams and reports actual and estimated bits side by side, and the NMSE of eq. (11)
   on its own decoder.

Rates are in bits per CSI dimension, ``bits / (n_samples * n_ant * n_sc)``; the update's
bits are amortized over the ``n_eval`` samples it serves. The base station's half is
:mod:`common.csi.base_station`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.channels import ChannelTask
from common.csi.config import GENIE_KEY, LATENT_KEY, TRUTH_KEY, UPDATE_KEY, resolve_cfg
from common.csi.data import csi_to_truth, round_window
from common.csi.finetuning import FinetuneResult, evaluate_window, finetune
from common.csi.pretrain import pretrained_compressor
from common.csi.sync import PREVIOUS_PREFIX, model_to_state, sync_with_base_station
from common.models.csi_compressor import bits_per_dim
from common.seeding import derive_seed

__all__ = ["DeviceRound", "device_round", "uplink"]


@dataclass
class DeviceRound:
    """What a device's round of CSI feedback gives back.

    Attributes
    ----------
    metrics : dict of str -> float
        ``latent_bits_actual``, ``latent_bits_estimated``, ``nmse_db_device`` (eq. 11),
        ``bits_per_dim_latent``, ``update_bits_actual``, ``update_bits_estimated``
        (eq. 19), ``bits_per_dim_update``, ``bits_per_dim_total``, ``update_nonzero``,
        ``finetune_flops``, ``finetune_s`` (wall clock, s) and ``resync`` (0 in step, 1 went
        back to the decoder the base station kept, 2 reset to the pre-trained one).
    flops : int
        Fine-tuning plus one encoder/decoder pass per evaluation sample.
    payloads : dict of str -> bytes
        ``csi_update`` (empty unless ``fm``) and ``csi_latents``: real bitstreams.
    side : dict of str -> np.ndarray
        Evaluation only: ``csi_truth`` float32 ``[n_eval, 2, n_ant, n_sc]`` and, for ``ga``,
        ``csi_genie_decoder`` float32 ``[n_decoder_params]``.
    state : dict of str -> np.ndarray
        Both encoder/decoder pairs (:mod:`common.csi.sync`), for the next round.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    flops: int = 0
    payloads: dict[str, bytes] = field(default_factory=dict)
    side: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)


def uplink(res: FinetuneResult, latents: bytes, H_eval: torch.Tensor) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """A window's uplink: the payloads and the evaluation-only side channel.

    Parameters
    ----------
    res : FinetuneResult
        The window's fine-tuning (its coded update; ``ga``: its exact decoder).
    latents : bytes
        The window's latent bitstream.
    H_eval : torch.Tensor
        ``complex64 [n, n_ant, n_sc]``: the CSI the latents code (the ground truth).

    Returns
    -------
    payloads : dict
        ``{csi_update: bytes, csi_latents: bytes}``.
    side : dict
        ``{csi_truth: float32 [n, 2, n_ant, n_sc]}`` plus, for ``ga``,
        ``csi_genie_decoder: float32 [n_decoder_params]`` (the decoder arrays flattened in order).
    """
    side = {TRUTH_KEY: csi_to_truth(H_eval)}
    if res.genie_decoder is not None:
        side[GENIE_KEY] = np.concatenate([a.ravel() for a in res.genie_decoder]).astype(np.float32)
    return {UPDATE_KEY: res.update_bytes, LATENT_KEY: latents}, side


def device_round(
    cfg: dict[str, Any],
    task: ChannelTask,
    device_id: int,
    rnd: int,
    seed: int,
    state: dict[str, np.ndarray],
    bs_tag: int | None,
) -> DeviceRound:
    """One device round of CSI feedback (module docstring).

    Parameters
    ----------
    cfg : dict
        The device class's ``csi_feedback`` table (resolved here).
    task : ChannelTask
        The device's channel task: with ``device_id`` it fixes the track (its heading; with
        ``shift_env = "new"`` also its environment).
    device_id : int
        Fleet-wide device index.
    rnd : int
        Server round, from 1: the window on the track (:func:`common.csi.data.round_window`).
    seed : int
        Seed root of this device and round (the fine-tuning's minibatches and noise).
    state : dict of str -> np.ndarray
        What the device kept from its earlier rounds (empty in the first).
    bs_tag : int or None
        The CRC-32 tag of the decoder the base station holds for this device (``None``: not
        sent, keep the current pair).

    Returns
    -------
    DeviceRound

    Raises
    ------
    ValueError
        The base station holds a decoder the device has none of.
    """
    cfg = resolve_cfg(cfg)
    model = pretrained_compressor(cfg)
    resync = sync_with_base_station(model, state, bs_tag)
    H_ft, H_ev = round_window(cfg, task, device_id, rnd)
    n_ev = int(cfg["n_eval"])
    res = finetune(model, H_ft, cfg, seed=derive_seed(seed, "csi-finetune"))
    latents, m = evaluate_window(res.device_model, H_ev)
    dims = model.cfg.csi_dims
    upd_bits = 8.0 * len(res.update_bytes)
    metrics = dict(m)
    metrics.update(
        {
            "update_bits_actual": upd_bits,
            "update_bits_estimated": res.update_ideal_bits,
            "bits_per_dim_update": bits_per_dim(upd_bits, n_ev, dims),
            "bits_per_dim_total": bits_per_dim(upd_bits + m["latent_bits_actual"], n_ev, dims),
            "update_nonzero": float(res.n_nonzero),
            "finetune_flops": float(res.flops),
            "finetune_s": res.seconds,
            "resync": float(resync),
        }
    )
    payloads, side = uplink(res, latents, H_ev)
    return DeviceRound(
        metrics=metrics,
        flops=int(res.flops + model.forward_flops() * n_ev),  # + encode and check the window
        payloads=payloads,
        side=side,
        state={**model_to_state(res.device_model), **model_to_state(model, PREVIOUS_PREFIX)},
    )
