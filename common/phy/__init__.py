"""PHY for MIMO detection: QPSK, LS estimation, classical detectors, metrics, batches."""

from common.phy.dataset import (
    DetectionBatch,
    build_sdnet_input,
    complex_to_real_channel,
    concat_batches,
    make_detection_batch,
)
from common.phy.detection import covariance_ml_detect, hard_qpsk, lmmse_genie, ml_detect, mmse, zf, zf_error_covariance
from common.phy.estimation import ls_channel_estimate, ls_estimate, orthogonal_pilots
from common.phy.metrics import baseline_sers, ber, ber_with_ci, binomial_ci, nmse_db, ser, ser_with_ci
from common.phy.noise import noise_variance
from common.phy.modulation import indices_to_bits, indices_to_symbols, qpsk_constellation

__all__ = [
    "DetectionBatch",
    "baseline_sers",
    "build_sdnet_input",
    "complex_to_real_channel",
    "concat_batches",
    "make_detection_batch",
    "noise_variance",
    "hard_qpsk",
    "lmmse_genie",
    "ml_detect",
    "covariance_ml_detect",
    "zf_error_covariance",
    "mmse",
    "zf",
    "ls_channel_estimate",
    "ls_estimate",
    "orthogonal_pilots",
    "ber",
    "ber_with_ci",
    "binomial_ci",
    "nmse_db",
    "ser",
    "ser_with_ci",
    "indices_to_bits",
    "indices_to_symbols",
    "qpsk_constellation",
]
