"""CSI feedback on a device: fine-tune the neural CSI compressor, code the decoder update and
the latent CSI (paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback").

What a device does in a round (:func:`run_stage`):

1. start from the shared pre-trained compressor (:func:`pretrained_compressor`: trained
   deterministically from the config on the *pre-training* channel distribution and cached
   on disk keyed by the config hash, so device and base station hold the same weights
   without sending them), or from its own decoder/encoder of the previous round;
2. draw its own shifted CSI: a UE moving along a straight track through its own
   environment of the built-in spatially consistent ``"gbsm"`` model; the round's window
   holds ``n_finetune`` fine-tuning samples followed by ``n_eval`` evaluation samples;
3. fine-tune with the scheme of its class (:func:`finetune`): ``none`` (No FT), ``eo``
   (encoder only), ``fm`` (full model: the decoder update is quantized with the STE,
   eq. 12-14, priced by the prior, eq. 16-19, and its rate regularizes the loss, eq. 21),
   ``ga`` (genie-aided: full model, the decoder update reaches the base station for free);
4. code the decoder update (``fm``) and the evaluation window's latents into real
   bitstreams, and report actual and estimated bits side by side.

Rates are in bits per CSI dimension: ``bits / (n_samples * n_ant * n_sc)``; the update's
bits are amortized over the ``n_eval`` samples it serves.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from common.stage import DeviceContext, StageResult
from common.channels import ChannelTask, sample_channels
from common.coding import UpdateQuantizer, make_prior
from common.coding.spike_slab import UpdatePrior
from common.coding.update_codec import apply_update, pack_update, quantize_update, update_ideal_bits
from common.models.csi_compressor import (
    CompressorConfig,
    CSICompressor,
    bits_per_dim,
    csi_to_planes,
    nmse_db,
    planes_to_csi,
    rd_loss,
)
from common.schema import Field, validate_section
from common.seeding import derive_seed, numpy_rng

__all__ = [
    "STAGE_SCHEMA",
    "SCHEMES",
    "UPDATE_KEY",
    "LATENT_KEY",
    "TRUTH_KEY",
    "GENIE_KEY",
    "DECODER_TAG_KEY",
    "sync_with_base_station",
    "resolve_cfg",
    "compressor_config",
    "make_prior_from_cfg",
    "csi_task",
    "pretrain_csi",
    "track_positions",
    "track_csi",
    "device_environment",
    "pretrained_compressor",
    "FinetuneResult",
    "finetune",
    "evaluate_window",
    "run_stage",
    "truth_to_csi",
]

SCHEMES = ("none", "eo", "fm", "ga")
#: payload / side-channel keys (the base station reads the same names)
UPDATE_KEY = "csi_update"
LATENT_KEY = "csi_latents"
TRUTH_KEY = "csi_truth"
GENIE_KEY = "csi_genie_decoder"
#: bump when pre-training changes meaning (invalidates the on-disk cache)
PRETRAIN_VERSION = 3
#: latent standard deviation (in quantization bins) at the start of the RD phase
LATENT_STD = 4.0

STAGE_SCHEMA: dict[str, Field] = {
    "scheme": Field(str, "fm", choices=SCHEMES, doc="none (No FT), eo (encoder only), fm (full model), ga (genie-aided)"),
    "n_ant": Field(int, 32, min=4, max=256, doc="BS antennas (CSI rows; multiple of 4)"),
    "n_sc": Field(int, 32, min=4, max=256, doc="OFDM subcarriers (CSI columns; multiple of 4)"),
    "width": Field(int, 64, min=1, max=512, doc="kernels of the hidden conv layers"),
    "kernel": Field(int, 5, min=1, max=9, doc="conv kernel size (odd)"),
    "lmbda": Field(float, 512.0, min=0.0, doc="RD weight on the MSE of the shared pre-trained backbone, eq. (9): lambda * D + R"),
    "finetune_lmbda": Field(float, 32.0, min=0.0, doc="RD weight of fine-tuning, eq. (9) and (21): one point of the scheme's RD curve (at the backbone's 512 the rates are ~2 % of the loss and updates come out dense)"),
    "pretrain_samples": Field(int, 2000, min=8, doc="pre-training CSI samples"),
    "pretrain_tasks": Field(int, 1, min=1, max=64, doc="pre-training environments (gbsm task ids 0..k-1)"),
    "pretrain_steps": Field(int, 600, min=0, doc="pre-training Adam steps"),
    "pretrain_batch": Field(int, 32, min=1),
    "pretrain_lr": Field(float, 1e-3, min=0.0, max=1.0, doc="Adam step of pre-training (the paper's 1e-3; 2e-3 left some initialisations with dead ReLUs)"),
    "dense_latent": Field(bool, True, doc="fully connected layer at the latent end of encoder and decoder"),
    "pretrain_seed": Field(int, 0, min=0, doc="root seed of the pre-training data and weights"),
    "pretrain_los": Field(bool, True, doc="pre-training environments have a direct path (LoS)"),
    "shift_env": Field(str, "same", choices=("same", "new"), doc="same: the pre-training scatterers, UE beyond its circle; new: the device's own environment"),
    "shift_offset_m": Field(float, 10.0, min=0.0, doc="where a device's track starts, m from the environment's centre"),
    "shift_los": Field(bool, False, doc="shift_env = new: the devices' environments have a direct path"),
    "carrier_hz": Field(float, 3.7e9, min=1e8, max=1e11),
    "bandwidth_hz": Field(float, 50e6, min=1e5, max=1e9, doc="n_sc subcarriers span this bandwidth"),
    "radius_m": Field(float, 5.0, min=0.0, doc="radius of each environment's UE circle, m"),
    "spacing_m": Field(float, 1 / 29.6, min=1e-4, doc="distance between CSI samples along the track, m (the paper's QuaDRiGa track: 29.6 samples/m)"),
    "n_finetune": Field(int, 100, min=1, max=100000, doc="fine-tuning samples per round"),
    "n_eval": Field(int, 100, min=1, max=4096, doc="evaluation samples per round (after the window)"),
    "steps": Field(int, 60, min=0, doc="fine-tuning Adam steps"),
    "batch": Field(int, 32, min=1),
    "lr": Field(float, 5e-4, min=0.0, max=1.0),
    "t": Field(float, 1e-3, min=1e-8, max=1.0, doc="update quantization bin width, eq. (12); ~1/30 of the decoder weights' std (van Rozendaal's 5e-3 is 1/6 of it here and erases most of the fine-tuning gain)"),
    "n_bins": Field(int, 256, min=2, max=65535, doc="update quantization bins, eq. (13): updates clip at +-t * n_bins / 2"),
    "sigma": Field(float, 5e-2, min=1e-8, doc="slab standard deviation, eq. (17)"),
    "alpha": Field(float, 1000.0, min=0.0, doc="spike weight, eq. (16)"),
    "prior": Field(str, "spike_slab", choices=("spike_slab", "uniform"), doc="prior coding the update"),
    "regularize_update": Field(bool, True, doc="add the update's rate to the loss, eq. (21)"),
    "update_weight": Field(float, 1.0, min=0.0, doc="weight of the update rate in eq. (21)"),
    "cache_dir": Field(str, "", doc="pre-trained model cache ('' = $AIRFLEET_CACHE_DIR or ~/.cache/airfleet)"),
}

_PRETRAIN_KEYS = (
    "n_ant", "n_sc", "width", "kernel", "dense_latent", "lmbda", "pretrain_samples", "pretrain_tasks", "pretrain_steps",
    "pretrain_batch", "pretrain_lr", "pretrain_seed", "pretrain_los", "carrier_hz", "bandwidth_hz", "radius_m",
)


def resolve_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a ``csi_feedback`` table and fill defaults (``ScenarioError`` on bad input)."""
    out = validate_section(cfg, STAGE_SCHEMA, "csi_feedback")
    compressor_config(out)  # shape checks
    return out


def compressor_config(cfg: dict[str, Any]) -> CompressorConfig:
    """The architecture a ``csi_feedback`` config asks for."""
    return CompressorConfig(
        n_ant=int(cfg["n_ant"]), n_sc=int(cfg["n_sc"]), width=int(cfg["width"]), kernel=int(cfg["kernel"]),
        dense_latent=bool(cfg["dense_latent"]),
    )


def make_prior_from_cfg(cfg: dict[str, Any]) -> UpdatePrior:
    """The update quantizer and prior of a config (``t``, ``n_bins``, ``prior``, ``sigma``, ``alpha``)."""
    return make_prior(str(cfg["prior"]), UpdateQuantizer(float(cfg["t"]), int(cfg["n_bins"])), float(cfg["sigma"]), float(cfg["alpha"]))


# ----- channel data -------------------------------------------------------------------


def csi_task(cfg: dict[str, Any], family_seed: int, task_id: int, los: bool) -> ChannelTask:
    """A ``"gbsm"`` environment: ``n_ant``-element ULA at the BS, single-antenna UE.

    ``n_sc`` subcarriers span ``bandwidth_hz``; the UE circle has radius ``radius_m``.
    """
    return ChannelTask.make(
        "gbsm", int(cfg["n_ant"]), 1, int(task_id), int(family_seed),
        bs_array="ula", carrier_hz=float(cfg["carrier_hz"]),
        subcarrier_spacing_hz=float(cfg["bandwidth_hz"]) / int(cfg["n_sc"]),
        radius_m=float(cfg["radius_m"]), los=bool(los),
    )


def _to_csi(H: torch.Tensor) -> torch.Tensor:
    """``[n, n_sc, n_ant, 1]`` from a source -> spatial-frequency ``complex64 [n, n_ant, n_sc]``."""
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


# ----- training -----------------------------------------------------------------------


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run with one intra-op thread (bit-identical results in any process)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _rd_loss(model: CSICompressor, x: torch.Tensor, lmbda: float, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """eq. (9) on the training path (``params``: decoder weights to run instead of the model's)."""
    out = functional_call(model, params, (x,)) if params else model(x)
    return rd_loss(x, out["x_hat"], out["bits"], lmbda, model.cfg.csi_dims)


def _batches(n: int, batch: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    rng = numpy_rng(seed, "csi-batches")
    b = min(batch, n)
    for _ in range(steps):
        yield rng.choice(n, size=b, replace=False)


def _pretrain(cfg: dict[str, Any]) -> CSICompressor:
    seed = int(cfg["pretrain_seed"])
    model = CSICompressor(compressor_config(cfg), seed=derive_seed(seed, "csi-init") % (2**31))
    x_all = csi_to_planes(pretrain_csi(cfg))
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main, lr=float(cfg["pretrain_lr"]))
    lmbda = float(cfg["lmbda"])
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "csi-noise") % (2**31))
        model.train()
        n_warm = int(cfg["pretrain_steps"]) // 2
        for i, idx in enumerate(_batches(x_all.shape[0], int(cfg["pretrain_batch"]), int(cfg["pretrain_steps"]), seed)):
            x = x_all[torch.from_numpy(idx)]
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
                loss = _rd_loss(model, x, lmbda)
            opt.zero_grad()
            loss.backward()
            opt.step()
        # quantile tracking: place the tails where the aux loss has its minimum
        model.entropy.fit_quantiles()
    model.eval()
    return model


_MEMO: dict[str, dict[str, np.ndarray]] = {}


def _pretrain_key(cfg: dict[str, Any]) -> str:
    spec = {k: cfg[k] for k in _PRETRAIN_KEYS}
    spec["version"] = PRETRAIN_VERSION
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=10).hexdigest()


def _cache_dir(cfg: dict[str, Any]) -> Path:
    if cfg.get("cache_dir"):
        return Path(str(cfg["cache_dir"]))
    env = os.environ.get("AIRFLEET_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "airfleet") / "csi_pretrain"


def pretrained_compressor(cfg: dict[str, Any]) -> CSICompressor:
    """The shared pre-trained compressor for ``cfg`` (a fresh copy each call).

    Trained deterministically (one thread, seeds from ``pretrain_seed``) on
    :func:`pretrain_csi`, then cached in memory and on disk as
    ``<cache_dir>/csi-<hash>.npz`` (NumPy arrays only, loaded with ``allow_pickle=False``);
    the hash covers every key that changes the result.
    """
    cfg = resolve_cfg(cfg)
    key = _pretrain_key(cfg)
    model = CSICompressor(compressor_config(cfg))
    names = list(model.state_dict().keys())
    state = _MEMO.get(key)
    path = _cache_dir(cfg) / f"csi-{key}.npz"
    if state is None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                loaded = {n: z[n] for n in names}
            if all(loaded[n].shape == tuple(v.shape) for n, v in model.state_dict().items()):
                state = loaded
        except (OSError, KeyError, ValueError):
            state = None  # unreadable cache file: retrain
    if state is None:
        trained = _pretrain(cfg)
        state = {n: v.detach().numpy().copy() for n, v in trained.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **state)
        os.replace(tmp, path)
    _MEMO[key] = state
    model.load_state_dict({n: torch.from_numpy(np.array(v)) for n, v in state.items()})
    model.eval()
    return model


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
        The prior's information content of the update (estimate), 0 if none.
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


def finetune(base: CSICompressor, H_ft: torch.Tensor, cfg: dict[str, Any], seed: int, amortize_samples: int | None = None) -> FinetuneResult:
    """Fine-tune ``base`` on ``H_ft`` with ``cfg["scheme"]`` (``base`` is not modified).

    Parameters
    ----------
    base : CSICompressor
        The model both ends currently share (its decoder is the update's reference).
    H_ft : torch.Tensor
        ``complex64 [n, n_ant, n_sc]`` fine-tuning CSI.
    cfg : dict
        A resolved ``csi_feedback`` config.
    seed : int
        Seed of the minibatches and the quantization noise.
    amortize_samples : int, optional
        CSI samples the update is paid over in eq. (21) (default ``cfg["n_eval"]``).

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
    steps = int(cfg["steps"]) if scheme != "none" else 0
    if steps == 0 or scheme == "none":
        return FinetuneResult(device_model=model, seconds=time.perf_counter() - t0)
    x_all = csi_to_planes(H_ft)
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
    opt = torch.optim.Adam(trainable, lr=float(cfg["lr"]))
    losses: list[float] = []
    # one intra-op thread: the same numbers in a study, a Ray worker or a SuperNode
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "csi-ft-noise") % (2**31))
        model.train()
        for idx in _batches(x_all.shape[0], int(cfg["batch"]), steps, seed):
            x = x_all[torch.from_numpy(idx)]
            if scheme == "fm":
                # eq. (12) with the STE: the decoder runs on base + Q(delta)
                deltas = {n: q.ste(p - dec0[n]) for n, p in dec_named}
                params = {n: dec0[n] + d for n, d in deltas.items()}
                loss = _rd_loss(model, x, lmbda, params)
                if bool(cfg["regularize_update"]):
                    upd_bits = sum(prior.soft_bits(d) for d in deltas.values())
                    loss = loss + float(cfg["update_weight"]) * upd_bits / (n_amort * dims)  # eq. (21)
            else:
                loss = _rd_loss(model, x, lmbda)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    res = FinetuneResult(device_model=model, losses=losses)
    res.flops = model.train_step_flops(min(int(cfg["batch"]), x_all.shape[0])) * steps
    base_arrays = [dec0[n].numpy() for n, _ in dec_named]
    if scheme == "fm":
        k = quantize_update(model.decoder_arrays(), base_arrays, q)
        model.load_decoder_arrays(apply_update(base_arrays, k, q))
        res.update_bytes = pack_update(k, prior, base.decoder_tag())
        res.update_ideal_bits = update_ideal_bits(k, prior)
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
        model's information content), ``nmse_db_device`` (reconstruction with the device's
        own copy of the decoder), ``bits_per_dim_latent`` (actual).
    """
    data = device_model.compress(H_eval)
    est = device_model.estimated_bits(H_eval)
    H_hat = device_model.decompress(data)
    n, dims = H_eval.shape[0], device_model.cfg.csi_dims
    return data, {
        "latent_bits_actual": 8.0 * len(data),
        "latent_bits_estimated": est,
        "nmse_db_device": nmse_db(H_eval, H_hat),
        "bits_per_dim_latent": bits_per_dim(8.0 * len(data), n, dims),
    }


# ----- the fleet stage ----------------------------------------------------------------


def device_environment(cfg: dict[str, Any], task: ChannelTask) -> ChannelTask:
    """The environment a device's track runs through, fixed across rounds.

    ``shift_env = "same"``: the pre-training environment (the shift is the UE leaving the
    circle the backbone saw); ``"new"``: the device's own environment, derived from its
    channel task.
    """
    if cfg["shift_env"] == "same":
        return csi_task(cfg, derive_seed(int(cfg["pretrain_seed"]), "csi-pretrain-env"), 0, bool(cfg["pretrain_los"]))
    return csi_task(cfg, derive_seed(task.seed, "csi-device-env"), task.task_id, bool(cfg["shift_los"]))


#: instruction key: the CRC-32 tag of the decoder the base station holds for this device
DECODER_TAG_KEY = "csi-decoder-tag"


def _kept(model: CSICompressor, state: dict[str, np.ndarray], prefix: str) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Encoder and decoder arrays kept in ``state`` under ``prefix`` (None if incomplete)."""
    enc = [state.get(f"{prefix}enc.{n}") for n, _ in model.encoder_named()]
    dec = [state.get(f"{prefix}dec.{n}") for n, _ in model.decoder_named()]
    if any(a is None for a in enc) or any(a is None for a in dec):
        return None
    return enc, dec  # type: ignore[return-value]


def _model_to_state(model: CSICompressor, prefix: str = "") -> dict[str, np.ndarray]:
    out = {f"{prefix}enc.{n}": a for (n, _), a in zip(model.encoder_named(), model.encoder_arrays())}
    out.update({f"{prefix}dec.{n}": a for (n, _), a in zip(model.decoder_named(), model.decoder_arrays())})
    return out


def sync_with_base_station(model: CSICompressor, state: dict[str, np.ndarray], bs_tag: int | None) -> int:
    """Load into ``model`` (the pre-trained compressor) the encoder/decoder pair the base
    station's decoder matches.

    A device keeps its current pair (``enc.*``/``dec.*``) and the pair its last update was
    made against (``prev.*``). When the base station rejected the last uplink it still
    holds the previous decoder, and the device must go back to it, or every later update
    would be refused as made against another decoder.

    Parameters
    ----------
    model : CSICompressor
        A fresh copy of the shared pre-trained compressor; loaded in place.
    state : dict
        What the stage kept from earlier rounds.
    bs_tag : int or None
        The base station's decoder tag from the round's instructions (``None``: not sent,
        keep the current pair, as the offline studies do).

    Returns
    -------
    int
        0: in step (current pair); 1: went back to the pair before the last update;
        2: reset to the pre-trained compressor (the base station holds the shared one).

    Raises
    ------
    ValueError
        The base station holds a decoder the device has none of.
    """
    current, previous = _kept(model, state, ""), _kept(model, state, "prev.")
    candidates = [(0, current)] if bs_tag is None else [(0, current), (1, previous)]
    for code, pair in candidates:
        if pair is not None and (bs_tag is None or model.tag_of(pair[1]) == int(bs_tag)):
            model.load_encoder_arrays(pair[0])
            model.load_decoder_arrays(pair[1])
            return code
    if bs_tag is None or model.decoder_tag() == int(bs_tag):
        return 2 if current is not None else 0
    raise ValueError(
        f"the base station holds decoder {int(bs_tag):#010x} for this device, which matches neither its current "
        "decoder, the one before its last update, nor the pre-trained one"
    )


def run_stage(ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
    """One device round of CSI feedback (contract of :mod:`common.stage`).

    Parameters
    ----------
    ctx : DeviceContext
        ``ctx.task`` and ``ctx.device_id`` fix the device's track (its heading; with
        ``shift_env = "new"`` also its environment), ``ctx.round`` the window on it (round r
        starts ``shift_offset_m + (r - 1) * (n_finetune + n_eval) * spacing_m`` metres from
        the environment's centre), ``ctx.seed`` the fine-tuning randomness, ``ctx.state`` the
        current encoder and decoder (``"enc.<name>"`` / ``"dec.<name>"`` arrays) and the pair
        the last update was made against (``"prev.…"``), ``ctx.instructions`` the base
        station's decoder tag (:data:`DECODER_TAG_KEY`; see :func:`sync_with_base_station`).
    cfg : dict
        The device class's ``csi_feedback`` table (:data:`STAGE_SCHEMA`).

    Returns
    -------
    StageResult
        ``payloads = {"csi_update": bytes (empty unless fm), "csi_latents": bytes}``;
        ``side = {"csi_truth": float32 [n_eval, 2, n_ant, n_sc]}`` plus, for ``ga`` only,
        ``"csi_genie_decoder": float32 [n_decoder_params]``; ``state``: both encoder and
        decoder pairs; metrics with actual and estimated bits, per-dimension rates,
        device-side NMSE (dB), fine-tuning FLOPs and ``resync`` (0 in step, 1 went back to
        the decoder the base station kept, 2 reset to the pre-trained one).
    """
    cfg = resolve_cfg(cfg)
    model = pretrained_compressor(cfg)
    tag = ctx.instructions.get(DECODER_TAG_KEY)
    resync = sync_with_base_station(model, ctx.state, None if tag is None else int(tag))
    task = device_environment(cfg, ctx.task)
    n_ft, n_ev = int(cfg["n_finetune"]), int(cfg["n_eval"])
    track_seed = derive_seed(ctx.task.seed, "csi-track", ctx.task.task_id, ctx.device_id)
    start = float(cfg["shift_offset_m"]) + (max(int(ctx.round), 1) - 1) * (n_ft + n_ev) * float(cfg["spacing_m"])
    H = track_csi(cfg, task, start, n_ft + n_ev, track_seed)
    H_ft, H_ev = H[:n_ft], H[n_ft:]
    res = finetune(model, H_ft, cfg, seed=derive_seed(ctx.seed, "csi-finetune"))
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
    side = {TRUTH_KEY: csi_to_planes(H_ev).numpy().astype(np.float32)}
    if res.genie_decoder is not None:
        side[GENIE_KEY] = np.concatenate([a.ravel() for a in res.genie_decoder]).astype(np.float32)
    return StageResult(
        metrics=metrics,
        flops=int(res.flops + model.forward_flops() * n_ev),  # + encode and check the window
        payloads={UPDATE_KEY: res.update_bytes, LATENT_KEY: latents},
        side=side,
        state={**_model_to_state(res.device_model), **_model_to_state(model, "prev.")},
    )


def truth_to_csi(truth: np.ndarray) -> torch.Tensor:
    """``float32 [n, 2, n_ant, n_sc]`` side-channel planes -> ``complex64 [n, n_ant, n_sc]``."""
    return planes_to_csi(torch.from_numpy(np.asarray(truth, dtype=np.float32)))
