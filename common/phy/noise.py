"""Noise power from an SNR in dB: the one SNR convention of airfleet.

SNR is the received signal power per receive antenna (per subcarrier, for OFDM) over the
noise power, with unit-power channel entries (``E|h_ij|^2 = 1``) and unit-energy symbols
on each of ``n_streams`` transmit streams. The received signal power per antenna is then
``n_streams``, so ``snr = n_streams / sigma_n^2`` and

    sigma_n^2 = n_streams * 10**(-snr_db / 10)

(the MIMO detection model, eq. (1) of the learngene paper, with ``n_streams = n_t``; the
single-stream OFDM link with ``n_streams = 1``).
"""

from __future__ import annotations

from typing import overload

import torch

__all__ = ["noise_variance"]


@overload
def noise_variance(snr_db: float, n_streams: int = 1) -> float: ...


@overload
def noise_variance(snr_db: torch.Tensor, n_streams: int = 1) -> torch.Tensor: ...


def noise_variance(snr_db: float | torch.Tensor, n_streams: int = 1) -> float | torch.Tensor:
    """``sigma_n^2 = n_streams * 10**(-snr_db / 10)`` (module docstring).

    Parameters
    ----------
    snr_db : float or float tensor [...]
        SNR per receive antenna, dB.
    n_streams : int, default 1
        Transmit streams of unit-energy symbols (``n_t`` for MIMO detection).

    Returns
    -------
    float or torch.Tensor
        A Python float for a float ``snr_db``; for a tensor, float32 of the same shape
        (computed in float64).
    """
    if isinstance(snr_db, torch.Tensor):
        return torch.as_tensor(float(n_streams) * 10.0 ** (-snr_db.to(torch.float64) / 10.0), dtype=torch.float32)
    return float(n_streams) * 10.0 ** (-float(snr_db) / 10.0)
