"""Online fine-tuning of the CSI compressor on a device, and the coding of its evaluation window.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. III. Schemes:

- ``none`` (No FT): the backbone as it is;
- ``eo`` (encoder only, Sec. III-A): the encoder minimises eq. (9), the decoder and the
  density stay, nothing is sent;
- ``fm`` (full model, Sec. III-B): encoder, decoder and density minimise eq. (21): eq. (9)
  with the decoder run on ``base + Q(delta)`` (eq. 12-14 with the straight-through
  estimator) plus the update's rate under the prior (eq. 16-18, 20) amortized over the
  samples it serves; the update is then quantized and range-coded under the prior
  (eq. 15, 19);
- ``ga`` (genie-aided): the full model on eq. (9); the decoder reaches the base station
  for free.

Rates are in bits per CSI dimension, ``bits / (n_samples * n_ant * n_sc)``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from common.coding.update_codec import apply_update, pack_update, quantize_update, update_ideal_bits
from common.csi.config import SCHEMES, make_prior_from_cfg
from common.csi.training import finetune_draws, rd_objective, seeded_rng
from common.models.csi_compressor import CSICompressor, bits_per_dim, csi_to_planes
from common.phy.metrics import nmse_db
from common.runtime import resolve_device, torch_threads
from common.seeding import derive_seed

__all__ = ["FinetuneResult", "finetune", "evaluate_window"]


@dataclass
class FinetuneResult:
    """Outcome of one fine-tuning window.

    Attributes
    ----------
    device_model : CSICompressor
        What the device now uses (for ``fm``: decoder = base + t * k, the exact weights the
        base station will hold after applying the update).
    update_bytes : bytes
        Coded decoder update (``fm``), else empty.
    update_ideal_bits : float
        The prior's information content of the update (estimate, eq. 19), 0 if none.
    n_nonzero : int
        Non-zero quantized update entries (``fm``) or changed decoder weights (``ga``).
    flops : int
        Approximate fine-tuning FLOPs.
    seconds : float
        Wall-clock fine-tuning time, s.
    losses : list of float
        Loss after each step.
    genie_decoder : list of np.ndarray or None
        ``ga`` only: the exact fine-tuned decoder (reaches the BS for free).
    """

    device_model: CSICompressor
    update_bytes: bytes = b""
    update_ideal_bits: float = 0.0
    n_nonzero: int = 0
    flops: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    genie_decoder: list[np.ndarray] | None = None


def finetune(
    base: CSICompressor,
    H_ft: torch.Tensor,
    cfg: dict[str, Any],
    seed: int,
    amortize_samples: int | None = None,
    device: torch.device | None = None,
) -> FinetuneResult:
    """Fine-tune ``base`` on ``H_ft`` with ``cfg["scheme"]`` (``base`` is not modified).

    Runs on one torch thread with its own RNG stream (on the CPU the same numbers in a
    study, a Ray worker or a SuperNode; the caller's global RNG is untouched). The budget is
    ``cfg["epochs"]`` passes over ``H_ft`` when positive, else ``cfg["steps"]`` Adam steps
    (:func:`common.csi.training.finetune_draws`).

    Parameters
    ----------
    base : CSICompressor
        The model both ends currently share (its decoder is the update's reference).
    H_ft : torch.Tensor
        ``complex64 [n, n_ant, n_sc]`` fine-tuning CSI.
    cfg : dict
        A resolved ``csi_feedback`` table.
    seed : int
        Seed of the minibatches and the quantization noise.
    amortize_samples : int, optional
        CSI samples the update is paid over in eq. (21) (default ``cfg["n_eval"]``).
    device : torch.device, optional
        Where the arithmetic runs (default: ``cfg["device"]`` through
        :func:`common.runtime.resolve_device`); the returned model is on the CPU.

    Returns
    -------
    FinetuneResult
    """
    scheme = str(cfg["scheme"])
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    model = copy.deepcopy(base)
    model.eval()
    t0 = time.perf_counter()
    draws = finetune_draws(H_ft.shape[0], cfg, seed) if scheme != "none" else []
    if not draws:
        return FinetuneResult(device_model=model, seconds=time.perf_counter() - t0)
    dev = device if device is not None else resolve_device(str(cfg.get("device", "cpu")))
    model.to(dev)
    x_all = csi_to_planes(H_ft).to(dev)
    lmbda = float(cfg["finetune_lmbda"])
    dims = model.cfg.csi_dims
    n_amort = int(amortize_samples or cfg["n_eval"])
    prior = make_prior_from_cfg(cfg)
    q = prior.quantizer
    enc = [p for _, p in model.encoder_named()]
    dec_named = model.decoder_named()
    dec0 = {n: p.detach().clone() for n, p in dec_named}
    trainable = enc if scheme == "eo" else enc + [p for _, p in dec_named]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    lr, dec_lr = float(cfg["lr"]), float(cfg.get("decoder_lr", 0.0) or 0.0)
    if scheme == "eo" or dec_lr <= 0.0:
        opt = torch.optim.Adam(trainable, lr=lr)
    else:
        opt = torch.optim.Adam([{"params": enc, "lr": lr}, {"params": [p for _, p in dec_named], "lr": dec_lr}])
    losses: list[float] = []
    flops = 0
    with torch_threads(1), seeded_rng(dev, derive_seed(seed, "csi-ft-noise")):
        model.train()
        for idx in draws:
            x = x_all[torch.from_numpy(idx).to(dev)]
            flops += model.train_step_flops(x.shape[0])
            if scheme == "fm":
                # eq. (12) with the STE: the decoder runs on base + Q(delta)
                deltas = {n: q.ste(p - dec0[n]) for n, p in dec_named}
                params = {n: dec0[n] + d for n, d in deltas.items()}
                loss = rd_objective(model, x, lmbda, params)
                if bool(cfg["regularize_update"]):
                    upd_bits = sum(prior.soft_bits(d) for d in deltas.values())  # eq. (20)
                    loss = loss + float(cfg["update_weight"]) * upd_bits / (n_amort * dims)  # eq. (21)
            else:
                loss = rd_objective(model, x, lmbda)  # eq. (9)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval().cpu()
    for p in model.parameters():
        p.requires_grad_(False)
    res = FinetuneResult(device_model=model, losses=losses, flops=flops)
    base_arrays = [dec0[n].cpu().numpy() for n, _ in dec_named]
    if scheme == "fm":
        k = quantize_update(model.decoder_arrays(), base_arrays, q)  # eq. (12)-(14)
        model.load_decoder_arrays(apply_update(base_arrays, k, q))
        res.update_bytes = pack_update(k, prior, base.decoder_tag())
        res.update_ideal_bits = update_ideal_bits(k, prior)  # eq. (19)
        res.n_nonzero = int(np.count_nonzero(k))
    elif scheme == "ga":
        res.genie_decoder = model.decoder_arrays()
        res.n_nonzero = int(sum(np.count_nonzero(a != b) for a, b in zip(res.genie_decoder, base_arrays)))
    res.seconds = time.perf_counter() - t0
    return res


def evaluate_window(device_model: CSICompressor, H_eval: torch.Tensor) -> tuple[bytes, dict[str, float]]:
    """Compress ``H_eval`` (``complex64 [n, n_ant, n_sc]``) and measure it on the device.

    Returns
    -------
    latent_bytes : bytes
        The real latent bitstream.
    metrics : dict
        ``latent_bits_actual`` (framed stream length x 8), ``latent_bits_estimated`` (the
        model's information content, eq. 5), ``nmse_db_device`` (eq. 11, reconstruction with
        the device's own copy of the decoder), ``bits_per_dim_latent`` (actual).
    """
    data = device_model.compress(H_eval)
    est = device_model.estimated_bits(H_eval)
    H_hat = device_model.decompress(data)
    n, dims = H_eval.shape[0], device_model.cfg.csi_dims
    return data, {
        "latent_bits_actual": 8.0 * len(data),
        "latent_bits_estimated": est,
        "nmse_db_device": nmse_db(H_hat, H_eval, reduction="mean"),  # eq. (11)
        "bits_per_dim_latent": bits_per_dim(8.0 * len(data), n, dims),
    }
