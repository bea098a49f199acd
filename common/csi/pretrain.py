"""The shared pre-trained CSI compressor (the backbone both ends hold without sending it).

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. II-B: the backbone of Fig. 1 trained with
Adam on the RD loss of eq. (9) (uniform noise on the latents in place of quantization,
the rate of eq. 5 from the DeepFactorized density), then the density's tail quantiles
fitted for range coding.

The backbone is trained deterministically from the table (one torch thread, seeds from
``pretrain_seed``) and cached in memory and on disk keyed by a hash of every key that
changes it, so a device and the base station build the same weights independently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.csi.config import compressor_config, resolve_cfg
from common.csi.data import pretrain_csi
from common.csi.training import minibatches, rd_objective, seeded_rng
from common.models.csi_compressor import CSICompressor, csi_to_planes
from common.fingerprint import code_fingerprint
from common.npz_files import load_model_arrays, model_arrays
from common.runtime import cache_root, torch_threads
from common.seeding import derive_seed

__all__ = [
    "PRETRAIN_VERSION",
    "PRETRAIN_CODE",
    "PRETRAIN_KEYS",
    "LATENT_STD",
    "train_backbone",
    "pretrain_key",
    "pretrain_cache_dir",
    "pretrained_compressor",
]

_log = logging.getLogger(__name__)

#: bump when pre-training changes meaning (invalidates the on-disk cache)
PRETRAIN_VERSION = 3
#: the table keys that change the pre-trained weights (with the version, the cache key)
#: packages/modules whose source is part of the cache key (any edit retrains)
PRETRAIN_CODE: tuple[str, ...] = ("common.csi", "common.models.csi_compressor", "common.coding", "common.channels", "common.phy", "common.seeding")
PRETRAIN_KEYS = (
    "n_ant", "n_sc", "width", "kernel", "dense_latent", "lmbda", "pretrain_samples", "pretrain_tasks", "pretrain_steps",
    "pretrain_batch", "pretrain_lr", "pretrain_seed", "pretrain_los", "carrier_hz", "bandwidth_hz", "radius_m",
)
#: latent standard deviation (in quantization bins) at the start of the RD phase
LATENT_STD = 4.0

#: cache key -> state dict (NumPy arrays) of the backbones built in this process
_MEMO: dict[str, dict[str, np.ndarray]] = {}


def train_backbone(cfg: dict[str, Any], device: torch.device | None = None) -> CSICompressor:
    """Pre-train the compressor of a resolved table on :func:`common.csi.data.pretrain_csi`.

    The first half of ``pretrain_steps`` trains the autoencoder on continuous latents
    (``lmbda * MSE``, no noise, no rate); then the latents are stretched to std
    :data:`LATENT_STD` and the second half minimises eq. (9). Runs on one torch thread with
    its own RNG stream (the caller's global RNG is untouched), on ``device`` (default the
    CPU; the result is returned on the CPU).

    Returns
    -------
    CSICompressor
        In eval mode, its density's quantiles fitted.
    """
    dev = device if device is not None else torch.device("cpu")
    seed = int(cfg["pretrain_seed"])
    model = CSICompressor(compressor_config(cfg), seed=derive_seed(seed, "csi-init") % (2**31)).to(dev)
    x_all = csi_to_planes(pretrain_csi(cfg)).to(dev)
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main, lr=float(cfg["pretrain_lr"]))
    lmbda = float(cfg["lmbda"])
    with torch_threads(1), seeded_rng(dev, derive_seed(seed, "csi-noise")):
        model.train()
        n_warm = int(cfg["pretrain_steps"]) // 2
        for i, idx in enumerate(minibatches(x_all.shape[0], int(cfg["pretrain_batch"]), int(cfg["pretrain_steps"]), seed)):
            x = x_all[torch.from_numpy(idx).to(dev)]
            if i == n_warm and n_warm > 0:
                # the warm-up's latents have an arbitrary scale (often std ~0.1), which unit
                # bins and U(-1/2, 1/2) noise would erase: stretch them to std LATENT_STD and
                # start the RD phase with fresh optimizer statistics
                with torch.no_grad():
                    std = float(model.encoder(x_all[: min(256, x_all.shape[0])]).std())
                model.scale_latents(LATENT_STD / max(std, 1e-6))
                opt = torch.optim.Adam(main, lr=float(cfg["pretrain_lr"]))
            if i < n_warm:
                # warm-up: the autoencoder on continuous latents (no noise, no rate) with
                # the RD phase's distortion weight, so that the latents carry the CSI before
                # quantization noise and the rate term can push them to zero
                loss = lmbda * (model.decoder(model.encoder(x)) - x).pow(2).mean()
            else:
                loss = rd_objective(model, x, lmbda)  # eq. (9)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.cpu()
        # quantile tracking: place the tails where the aux loss has its minimum
        model.entropy.fit_quantiles()
    model.eval()
    return model


def pretrain_key(cfg: dict[str, Any], device: torch.device | None = None) -> str:
    """Hex cache key of a resolved table: a hash of :data:`PRETRAIN_KEYS`, the version, the
    source of the code that trains (:data:`PRETRAIN_CODE`, ``common.fingerprint``) and, for a
    device other than the CPU, its type (other kernels give other weights)."""
    spec: dict[str, Any] = {k: cfg[k] for k in PRETRAIN_KEYS}
    spec["version"] = PRETRAIN_VERSION
    spec["code"] = code_fingerprint(*PRETRAIN_CODE)
    if device is not None and device.type != "cpu":
        spec["device"] = device.type
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=10).hexdigest()


def pretrain_cache_dir(cfg: dict[str, Any]) -> Path:
    """Folder of the backbone cache: the table's ``cache_dir`` itself if set, else
    ``common.runtime.cache_root() / "csi_pretrain"``."""
    configured = str(cfg.get("cache_dir") or "")
    return cache_root(configured) if configured else cache_root(None) / "csi_pretrain"


def pretrained_compressor(cfg: dict[str, Any], device: torch.device | None = None) -> CSICompressor:
    """The shared pre-trained compressor for ``cfg`` (a fresh copy each call, on the CPU).

    Trained by :func:`train_backbone` on ``device`` (default the CPU: the fleet's two ends
    must build the same weights, so they both train there), then cached in memory and on
    disk as ``<pretrain_cache_dir>/csi-<pretrain_key>.npz`` (NumPy arrays only, loaded with
    ``allow_pickle=False``; an unreadable or mis-shaped file is retrained and replaced).
    """
    cfg = resolve_cfg(cfg)
    key = pretrain_key(cfg, device)
    model = CSICompressor(compressor_config(cfg))
    names = list(model.state_dict().keys())
    state = _MEMO.get(key)
    path = pretrain_cache_dir(cfg) / f"csi-{key}.npz"
    if state is None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                loaded = {n: z[n] for n in names}
            if all(loaded[n].shape == tuple(v.shape) for n, v in model.state_dict().items()):
                state = loaded
            else:
                _log.warning("CSI backbone cache %s holds other shapes; retraining", path)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:  # a zip member's CRC-32 catches a flipped bit
            _log.warning("CSI backbone cache %s unreadable (%s); retraining", path, e)
            state = None
    if state is None:
        trained = train_backbone(cfg, device)
        state = model_arrays(trained)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **state)
        os.replace(tmp, path)
    _MEMO[key] = state
    load_model_arrays(model, state)
    model.eval()
    return model
