"""CSI feedback with online fine-tuning ("Online Neural Model Fine-Tuning in Massive MIMO
CSI Feedback: Taming the Communication Cost of Model Updates"): the shared pre-trained
neural CSI compressor, its fine-tuning on a device's shifted CSI, the entropy-coded
decoder update and latents, and the base station that decodes them.

Modules: ``config`` (the stage's table, record keys and StageSpec), ``data`` (pre-training
CSI, device tracks and their per-round windows, eq. 2), ``training`` (the RD objective of
eq. 9 and the minibatch draws), ``pretrain`` (the backbone and its disk cache),
``finetuning`` (the schemes of Sec. III, eq. 9, 12-21, and the coded evaluation window),
``translation`` (the TM benchmark of the study: translation modules around a frozen
backbone), ``sync`` (the device's encoder/decoder pairs against the base station's decoder tag),
``device`` (a device's round), ``base_station`` (per-device decoders, decoding, eq. 11).
The compressor itself is :mod:`common.models.csi_compressor`, the codecs
:mod:`common.coding`.
"""

from common.csi.base_station import FeedbackServer
from common.csi.config import (
    DECODER_TAG_KEY,
    GENIE_KEY,
    LATENT_KEY,
    SCHEMES,
    SPEC,
    STAGE_SCHEMA,
    TRUTH_KEY,
    UPDATE_KEY,
    compressor_config,
    make_prior_from_cfg,
    resolve_cfg,
)
from common.csi.data import csi_task, csi_to_truth, device_environment, pretrain_csi, round_window, track_csi, track_positions, truth_to_csi
from common.csi.device import DeviceRound, device_round, uplink
from common.csi.finetuning import FinetuneResult, evaluate_window, finetune
from common.csi.pretrain import pretrained_compressor
from common.csi.sync import sync_with_base_station

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
    "csi_task",
    "pretrain_csi",
    "track_positions",
    "track_csi",
    "device_environment",
    "round_window",
    "csi_to_truth",
    "truth_to_csi",
    "pretrained_compressor",
    "FinetuneResult",
    "finetune",
    "evaluate_window",
    "sync_with_base_station",
    "DeviceRound",
    "device_round",
    "uplink",
    "FeedbackServer",
]
