"""Error rates with confidence intervals, and NMSE.

Serves every paper's evaluation: symbol and bit error rates of the detectors (the learngene
and influence papers' SER/BER), channel-estimation NMSE (X-REFINE), and the CSI
reconstruction NMSE of eq. (11) of "Online Neural Model Fine-Tuning in Massive MIMO CSI
Feedback" (:func:`nmse_db` with ``reduction="mean"``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from scipy import stats

from common.phy.detection import ML_MAX_CANDIDATES, covariance_ml_detect, hard_qpsk, lmmse_genie, mmse, zf, zf_error_covariance
from common.phy.modulation import indices_to_symbols

if TYPE_CHECKING:
    from common.phy.dataset import DetectionBatch

__all__ = ["baseline_sers", "hblind_fit_indices", "ser", "ser_ratio", "ser_with_ci", "ber", "ber_with_ci", "nmse_db", "binomial_ci"]


def _count(pred: torch.Tensor, true: torch.Tensor, what: str) -> tuple[int, int]:
    if pred.shape != true.shape:
        raise ValueError(f"{what}: predicted shape {tuple(pred.shape)} != true shape {tuple(true.shape)}")
    if true.numel() == 0:
        raise ValueError(f"{what}: empty input")
    return int((pred.long() != true.long()).sum()), int(true.numel())


def binomial_ci(errors: int, trials: int, confidence: float = 0.95, method: str = "wilson") -> tuple[float, float]:
    """Two-sided confidence interval of a binomial proportion.

    Parameters
    ----------
    errors, trials : int
        ``0 <= errors <= trials``, ``trials > 0``.
    confidence : float, default 0.95
    method : {"wilson", "clopper-pearson"}
        Wilson score interval, or the exact Clopper-Pearson interval.

    Returns
    -------
    (lo, hi) : tuple of float
    """
    if trials <= 0 or not 0 <= errors <= trials:
        raise ValueError(f"need 0 <= errors <= trials and trials > 0, got {errors}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    if method == "wilson":
        z = float(stats.norm.ppf(1 - alpha / 2))
        p = errors / trials
        den = 1 + z * z / trials
        centre = (p + z * z / (2 * trials)) / den
        half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
        lo = 0.0 if errors == 0 else max(0.0, centre - half)
        hi = 1.0 if errors == trials else min(1.0, centre + half)
        return lo, hi
    if method == "clopper-pearson":
        lo = 0.0 if errors == 0 else float(stats.beta.ppf(alpha / 2, errors, trials - errors + 1))
        hi = 1.0 if errors == trials else float(stats.beta.ppf(1 - alpha / 2, errors + 1, trials - errors))
        return lo, hi
    raise ValueError(f"method must be 'wilson' or 'clopper-pearson', got {method!r}")


def ser(pred_idx: torch.Tensor, true_idx: torch.Tensor) -> float:
    """Symbol error rate: fraction of symbols ``int64 [n, n_t]`` decided wrongly."""
    e, t = _count(pred_idx, true_idx, "ser")
    return e / t


def ser_ratio(num: float, den: float, symbols: int) -> float:
    """``num / den`` for two SERs measured on ``symbols`` symbols each, a reference ``den``
    of no errors counted as one (``1 / symbols``): finite, and at most ``num`` over the
    reference's true SER when the reference made errors it did not show."""
    return num / max(den, 1.0 / symbols)


def _rate_with_ci(
    pred: torch.Tensor, true: torch.Tensor, what: str, confidence: float, method: str
) -> tuple[float, float, float]:
    e, t = _count(pred, true, what)
    lo, hi = binomial_ci(e, t, confidence, method)
    return e / t, lo, hi


def ser_with_ci(
    pred_idx: torch.Tensor, true_idx: torch.Tensor, confidence: float = 0.95, method: str = "wilson"
) -> tuple[float, float, float]:
    """``(ser, lo, hi)``; symbols are treated as independent trials (an approximation
    within one channel matrix)."""
    return _rate_with_ci(pred_idx, true_idx, "ser", confidence, method)


def ber(pred_bits: torch.Tensor, true_bits: torch.Tensor) -> float:
    """Bit error rate over 0/1 tensors of equal shape."""
    e, t = _count(pred_bits, true_bits, "ber")
    return e / t


def ber_with_ci(
    pred_bits: torch.Tensor, true_bits: torch.Tensor, confidence: float = 0.95, method: str = "wilson"
) -> tuple[float, float, float]:
    """``(ber, lo, hi)`` as ``ser_with_ci``."""
    return _rate_with_ci(pred_bits, true_bits, "ber", confidence, method)


def nmse_db(estimate: torch.Tensor, reference: torch.Tensor, *, reduction: Literal["sum", "mean"]) -> float:
    """Normalised mean squared error of ``estimate`` against ``reference``, in dB.

    Parameters
    ----------
    estimate, reference : torch.Tensor
        Real or complex tensors of equal shape; with ``reduction="mean"`` batch-first
        (``[batch, ...]``, e.g. CSI ``complex64 [batch, n_ant, n_sc]``).
    reduction : {"sum", "mean"}
        ``"sum"``: ratio of the total error energy to the total reference energy,
        ``10 log10( sum|est - ref|^2 / sum|ref|^2 )`` over the whole tensor (sums in the
        tensors' precision; a zero-energy reference raises ``ValueError``).
        ``"mean"``: mean over the batch of the per-sample ratios, eq. (11) of the CSI
        feedback paper, ``10 log10 E[ ||ref - est||^2 / ||ref||^2 ]`` (per-sample sums in
        the tensors' precision, the ratio and mean in float64; a sample's reference energy
        is floored at 1e-30).

    Returns
    -------
    float
        dB; ``"sum"`` floors the error energy at 1e-300, ``"mean"`` gives ``-inf`` for an
        exact estimate.
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(estimate.shape)} vs {tuple(reference.shape)}")
    if reduction == "sum":
        num = float((estimate - reference).abs().pow(2).sum())
        den = float(reference.abs().pow(2).sum())
        if den == 0:
            raise ValueError("reference has zero energy")
        return 10 * math.log10(max(num, 1e-300) / den)
    if reduction == "mean":
        # eq. (11) of the CSI feedback paper
        err = (reference - estimate).abs().pow(2).flatten(1).sum(1).double()
        ref = reference.abs().pow(2).flatten(1).sum(1).double().clamp_min(1e-30)
        return float(10.0 * torch.log10((err / ref).mean()))
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def hblind_fit_indices(test: DetectionBatch, train: DetectionBatch) -> torch.Tensor:
    """The fitted H-blind detector: ML from ``x_ZF`` alone (``covariance_ml_detect``) under the
    ZF-error covariance fitted from labelled training samples (``zf_error_covariance`` of
    ``train``'s ``x_ZF - x``; no ``H`` of any sample is used). What a model-based ``x_ZF``
    detector with one ``n_t x n_t`` Hermitian matrix (64 real parameters at ``n_t = 8``)
    learns from the samples SDNet is given; on the default channel model it tracks the
    H-blind ML bound that SDNet's held-out SER stays above (``docs/sdnet_fidelity.md``,
    Experiment 11). Needs ``4**n_t <= ML_MAX_CANDIDATES``. Returns ``int64 [n, n_t]``."""
    return covariance_ml_detect(test.x_zf, zf_error_covariance(train.x_zf, indices_to_symbols(train.symbols)))


def baseline_sers(batch: DetectionBatch, fit_from: DetectionBatch | None = None) -> dict[str, float]:
    """SER of the classical detectors on a ``common.phy.dataset.DetectionBatch``.

    Parameters
    ----------
    batch : DetectionBatch
        Where the SERs are measured.
    fit_from : DetectionBatch, optional
        Labelled samples to fit ``hblind_fit_indices``'s covariance from (a device's training
        set); adds ``ser_hblind_fit`` when given and ``4**n_t <= ML_MAX_CANDIDATES``.

    Returns
    -------
    dict
        ``ser_zf`` (eq. 9 with ``H_LS``), ``ser_mmse`` (eq. 11 with ``H_LS``),
        ``ser_lmmse_genie`` (eq. 11 with the true ``H``), and ``ser_hblind_fit`` when fitted.
    """
    out = {
        "ser_zf": ser(hard_qpsk(zf(batch.y, batch.H_ls)), batch.symbols),
        "ser_mmse": ser(hard_qpsk(mmse(batch.y, batch.H_ls, batch.noise_var)), batch.symbols),
        "ser_lmmse_genie": ser(hard_qpsk(lmmse_genie(batch.y, batch.H, batch.noise_var)), batch.symbols),
    }
    if fit_from is not None and 4 ** batch.x_zf.shape[-1] <= ML_MAX_CANDIDATES:
        out["ser_hblind_fit"] = ser(hblind_fit_indices(batch, fit_from), batch.symbols)
    return out
