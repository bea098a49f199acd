"""The ``csi_feedback`` stage's table, the record keys both halves use, and its StageSpec.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates". The table sets the backbone of Fig. 1 and its RD
weight (eq. 9), the fine-tuning scheme (Sec. III: No FT, encoder only, full model,
genie-aided) and its RD weight (eq. 9, 21), the update quantizer (eq. 12-14: bin width
``t``, ``n_bins`` bins) and the update prior (eq. 16-18: slab ``sigma``, spike weight
``alpha``), the fine-tuning budget (``steps``, or ``epochs`` over the window as the paper
counts it) and the torch ``device`` fine-tuning runs on. Its :data:`SPEC` runs the compressor's and the quantizer's own checks, so a
table either would refuse fails at scenario validation, not in a device's first round.
"""

from __future__ import annotations

from typing import Any

from common.coding import UpdateQuantizer, make_prior
from common.coding.registry import Codec, make_codec
from common.coding.spike_slab import UpdatePrior
from common.models.csi_compressor import CompressorConfig
from common.runtime import DEVICE_CHOICES
from common.schema import Field, ScenarioError
from common.stage_spec import StageSpec

__all__ = [
    "SCHEMES",
    "UPDATE_KEY",
    "LATENT_KEY",
    "TRUTH_KEY",
    "GENIE_KEY",
    "DECODER_TAG_KEY",
    "STAGE_SCHEMA",
    "SPEC",
    "resolve_cfg",
    "compressor_config",
    "make_prior_from_cfg",
    "update_codec",
]

#: fine-tuning schemes: No FT, encoder only (Sec. III-A), full model (Sec. III-B), genie-aided
SCHEMES = ("none", "eo", "fm", "ga")
#: uplink payload: the coded decoder update (eq. 12-19; empty unless ``fm``)
UPDATE_KEY = "csi_update"
#: uplink payload: the range-coded latents of the evaluation window
LATENT_KEY = "csi_latents"
#: evaluation-only side channel: the true CSI of the window, float32 [n, 2, n_ant, n_sc]
TRUTH_KEY = "csi_truth"
#: evaluation-only side channel (``ga``): the fine-tuned decoder, float32 [n_decoder_params]
GENIE_KEY = "csi_genie_decoder"
#: instruction key: the CRC-32 tag of the decoder the base station holds for this device
DECODER_TAG_KEY = "csi-decoder-tag"

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
    "dense_latent": Field(bool, False, doc="fully connected layer at the latent end of encoder and decoder (not the paper's Fig. 1; at 64 x 64 it grows the coded decoder from 108,930 to 371,586 weights)"),
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
    "steps": Field(int, 60, min=0, doc="fine-tuning Adam steps (when epochs = 0)"),
    "epochs": Field(int, 0, min=0, doc="fine-tuning passes over the n_finetune window, ceil(n_finetune / batch) steps each (the paper: 1,000); 0 counts steps instead"),
    "batch": Field(int, 32, min=1),
    "lr": Field(float, 5e-4, min=0.0, max=1.0),
    "decoder_lr": Field(float, 1e-4, min=0.0, max=1.0, doc="Adam step of the decoder and its density (fm, ga), default t/10 (the paper's lr); 0: lr. Adam moves a weight by about its step whatever the gradient's size, so at a step near t every decoder weight crosses an update bin each step and FM's quantized decoder random-walks"),
    "t": Field(float, 1e-3, min=1e-8, max=1.0, doc="update quantization bin width, eq. (12); ~1/30 of the decoder weights' std (van Rozendaal's 5e-3 is 1/6 of it here and erases most of the fine-tuning gain)"),
    "n_bins": Field(int, 256, min=2, max=65535, doc="update quantization bins, eq. (13): updates clip at +-t * n_bins / 2"),
    "sigma": Field(float, 5e-2, min=1e-8, doc="slab standard deviation, eq. (17)"),
    "alpha": Field(float, 1000.0, min=0.0, doc="spike weight, eq. (16)"),
    "prior": Field(str, "spike_slab", choices=("spike_slab", "uniform"), doc="prior coding the update"),
    "regularize_update": Field(bool, True, doc="add the update's rate to the loss, eq. (21)"),
    "update_weight": Field(float, 1.0, min=0.0, doc="weight of the update rate in eq. (21)"),
    "device": Field(str, "class", choices=("class", *DEVICE_CHOICES), doc="torch device of fine-tuning: class (default: the device class's own device setting), cpu, cuda, or auto (CUDA when present); the fleet pre-trains the shared backbone on the CPU so that both ends build the same weights"),
    "cache_dir": Field(str, "", doc="pre-trained model cache ('' = $AIRFLEET_CACHE_DIR or ~/.cache/airfleet, sub-folder csi_pretrain/)"),
}


def compressor_config(cfg: dict[str, Any]) -> CompressorConfig:
    """The architecture a ``csi_feedback`` table asks for.

    Raises
    ------
    ValueError
        The compressor cannot take it (``n_ant``/``n_sc`` not multiples of 4, even ``kernel``).
    """
    return CompressorConfig(
        n_ant=int(cfg["n_ant"]), n_sc=int(cfg["n_sc"]), width=int(cfg["width"]), kernel=int(cfg["kernel"]),
        dense_latent=bool(cfg["dense_latent"]),
    )


def make_prior_from_cfg(cfg: dict[str, Any]) -> UpdatePrior:
    """The update quantizer (eq. 12-14: ``t``, ``n_bins``) and its prior (eq. 16-18: ``prior``,
    ``sigma``, ``alpha``) of a table.

    Raises
    ------
    ValueError
        The quantizer or the prior refuses the values.
    """
    return make_prior(str(cfg["prior"]), UpdateQuantizer(float(cfg["t"]), int(cfg["n_bins"])), float(cfg["sigma"]), float(cfg["alpha"]))


#: the start of an update coder's ValueError -> the table key it is about
_PRIOR_ERROR_KEYS = {"bin width t": "t", "n_bins": "n_bins", "slab sigma": "sigma", "alpha": "alpha"}


def update_codec(cfg: dict[str, Any], base_tag: int = 0) -> Codec:
    """The registry's ``spike_slab`` codec for a table's quantizer and prior (eq. 12-18),
    bound to the decoder with CRC ``base_tag``: its payload is, byte for byte, the update
    frame the stage sends (``common.coding.update_codec.pack_update``)."""
    return make_codec(
        "spike_slab", step=float(cfg["t"]), n_bins=int(cfg["n_bins"]), sigma=float(cfg["sigma"]), alpha=float(cfg["alpha"]),
        prior=str(cfg["prior"]), base_tag=int(base_tag),
    )


def _check(cfg: dict[str, Any]) -> None:
    """The compressor's and the update coder's own checks of a schema-valid table; a value
    they refuse is named by its key (``ScenarioError``: the caller prefixes the table)."""
    for key in ("n_ant", "n_sc"):
        if int(cfg[key]) <= 0 or int(cfg[key]) % 4:
            raise ScenarioError(key, f"the CSI compressor needs n_ant and n_sc positive multiples of 4, got {cfg[key]}")
    if int(cfg["kernel"]) <= 0 or int(cfg["kernel"]) % 2 == 0:
        raise ScenarioError("kernel", f"the CSI compressor needs a positive odd kernel, got {cfg['kernel']}")
    try:
        compressor_config(cfg)
    except ValueError as e:
        raise ValueError(f"the CSI compressor cannot take this table: {e}") from None
    try:
        make_prior_from_cfg(cfg)
    except ValueError as e:
        msg = str(e)
        key = next((k for prefix, k in _PRIOR_ERROR_KEYS.items() if msg.startswith(prefix)), None)
        if key is None:
            raise ValueError(f"the CSI update coder cannot take this table: {msg}") from None
        raise ScenarioError(key, f"the CSI update coder cannot take this value: {msg}") from None


SPEC = StageSpec("csi_feedback", STAGE_SCHEMA, payload_keys=(UPDATE_KEY, LATENT_KEY), check=_check)


def resolve_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a ``csi_feedback`` table and fill its defaults (idempotent).

    Raises
    ------
    ScenarioError
        A key outside :data:`STAGE_SCHEMA`, a value out of range, or a table the compressor
        or the update coder refuses (the message says which).
    """
    return SPEC.validate(cfg, "csi_feedback")
