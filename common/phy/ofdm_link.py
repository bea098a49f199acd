"""A small uplink OFDM slot on Sionna's PyTorch resource grid, for neural receivers.

One *slot* (= one *instance* of the influence paper: one channel realisation with its
slot of symbols) is ``n_ofdm_symbols x n_subcarriers`` resource elements (REs) from a
single-antenna UE to an ``n_rx``-antenna receiver:

- grid and pilots: ``sionna.phy.ofdm.ResourceGrid`` with a Kronecker pilot pattern on
  the OFDM symbols ``pilot_symbols`` (QPSK pilots, every subcarrier of those symbols);
  data REs carry Gray QPSK from ``sionna.phy.mapping.Mapper("qam", 2)`` placed by
  ``ResourceGridMapper``;
- channel: ``sionna.phy.channel.tr38901.TDL`` (3GPP TR 38.901 tapped delay line, with
  Doppler from a UE speed drawn uniformly in ``[0, max_speed_mps]``) turned into a
  per-RE frequency response by ``GenerateOFDMChannel`` (normalised, ``E|h|^2 = 1``);
- noise: ``CN(0, N0)`` per RE and antenna with ``N0 = 10^(-snr_db/10)`` (unit symbol
  energy), ``snr_db`` drawn uniformly per slot in ``snr_db_range``.

Baselines (both Sionna): LS channel estimation at the pilots with linear interpolation
followed by LMMSE equalisation and APP demapping (``ls_lmmse_llrs``), and the genie
receiver with the true channel (perfect CSI, zero estimation error) in the same LMMSE
equaliser (``genie_lmmse_llrs``). For one stream, LMMSE with perfect CSI is MRC.

Bit and LLR conventions (Sionna's): bits are ``[n, 2 * n_data]`` in the order the
mapper consumed them (data REs in row-major ``(symbol, subcarrier)`` order, two bits
per RE); an LLR/logit is ``log P(b=1) / P(b=0)`` so the hard decision is ``llr > 0``.

Randomness: bits and noise from a ``torch.Generator`` seeded with
``derive_seed(seed, ...)``; the TDL draw uses Sionna's global generator, which
:func:`simulate_slots` reseeds (``sionna.phy.config.seed``) from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from common.seeding import derive_seed

__all__ = ["OfdmLinkConfig", "OfdmLink", "SlotBatch", "simulate_slots", "receiver_input_channels"]


@dataclass(frozen=True)
class OfdmLinkConfig:
    """Geometry and channel of the slot.

    Parameters
    ----------
    n_subcarriers : int, default 24
        FFT size (no guards, no DC null); ``subcarrier_spacing_hz`` apart.
    n_ofdm_symbols : int, default 14
        OFDM symbols per slot.
    pilot_symbols : tuple of int, default (2, 11)
        OFDM symbols that carry pilots on every subcarrier (Kronecker pattern).
    n_rx : int, default 2
        Receive antennas.
    subcarrier_spacing_hz : float, default 30e3
    carrier_frequency_hz : float, default 3.5e9
    tdl_model : str, default "C"
        TR 38.901 TDL profile ("A".."E").
    delay_spread_s : float, default 300e-9
    max_speed_mps : float, default 30.0
        UE speeds are uniform in ``[0, max_speed_mps]`` m/s per slot.
    snr_db_range : tuple of float, default (-2.0, 16.0)
        Per-slot SNR is uniform in this range (dB).
    """

    n_subcarriers: int = 24
    n_ofdm_symbols: int = 14
    pilot_symbols: tuple[int, ...] = (2, 11)
    n_rx: int = 2
    subcarrier_spacing_hz: float = 30e3
    carrier_frequency_hz: float = 3.5e9
    tdl_model: str = "C"
    delay_spread_s: float = 300e-9
    max_speed_mps: float = 30.0
    snr_db_range: tuple[float, float] = field(default=(-2.0, 16.0))

    def __post_init__(self) -> None:
        if self.n_subcarriers < 2 or self.n_ofdm_symbols < 2 or self.n_rx < 1:
            raise ValueError("expected n_subcarriers >= 2, n_ofdm_symbols >= 2 and n_rx >= 1")
        if not self.pilot_symbols or any(not 0 <= s < self.n_ofdm_symbols for s in self.pilot_symbols):
            raise ValueError(f"pilot_symbols must be non-empty indices below {self.n_ofdm_symbols}, got {self.pilot_symbols}")
        if self.snr_db_range[0] > self.snr_db_range[1]:
            raise ValueError(f"snr_db_range must be (low, high), got {self.snr_db_range}")


def receiver_input_channels(n_rx: int) -> int:
    """Channels of :meth:`SlotBatch.receiver_input`: ``4 n_rx + 1``."""
    return 4 * n_rx + 1


@dataclass
class SlotBatch:
    """``n`` simulated slots.

    Attributes
    ----------
    y : complex64 ``[n, n_rx, S, F]``
        Received resource grids (``S`` OFDM symbols, ``F`` subcarriers).
    h : complex64 ``[n, n_rx, S, F]``
        True channel per RE.
    x : complex64 ``[n, S, F]``
        Transmitted grid (pilots and data).
    bits : uint8 ``[n, 2 * n_data]``
        Data bits in mapper order.
    noise_var : float32 ``[n]``
        ``N0`` per slot (linear).
    snr_db : float32 ``[n]``
    pilot_grid : complex64 ``[S, F]``
        Pilot symbols, zero on data REs.
    data_mask : bool ``[S, F]``
        True on data REs.
    """

    y: torch.Tensor
    h: torch.Tensor
    x: torch.Tensor
    bits: torch.Tensor
    noise_var: torch.Tensor
    snr_db: torch.Tensor
    pilot_grid: torch.Tensor
    data_mask: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: torch.Tensor | slice) -> SlotBatch:
        """The slots ``idx`` (grid-wide tensors shared)."""
        return SlotBatch(self.y[idx], self.h[idx], self.x[idx], self.bits[idx], self.noise_var[idx],
                         self.snr_db[idx], self.pilot_grid, self.data_mask)

    def receiver_input(self) -> torch.Tensor:
        """Input of the neural receiver, ``float32 [n, 4 n_rx + 1, S, F]``.

        Channels: ``Re y, Im y`` per antenna (``2 n_rx``), the raw LS channel at the
        pilot REs ``y p* / |p|^2`` (zero elsewhere, ``2 n_rx``), and ``log10 N0`` as a
        constant plane (the receiver knows its noise level, as the LMMSE baselines do).
        """
        p = self.pilot_grid
        pmask = p.abs() > 0
        h_ls = torch.where(pmask, self.y * p.conj() / p.abs().clamp_min(1e-12) ** 2, torch.zeros_like(self.y))
        n, _, S, F = self.y.shape
        noise = torch.log10(self.noise_var).view(n, 1, 1, 1).expand(n, 1, S, F)
        return torch.cat([self.y.real, self.y.imag, h_ls.real, h_ls.imag, noise], 1).float()

    def grid_to_bits(self, logits_grid: torch.Tensor) -> torch.Tensor:
        """Bit logits on the grid ``[n, 2, S, F]`` -> mapper order ``[n, 2 n_data]``."""
        s_idx, f_idx = torch.nonzero(self.data_mask, as_tuple=True)  # row-major data REs
        lg = logits_grid[:, :, s_idx, f_idx]  # [n, 2, n_data]
        return lg.transpose(1, 2).reshape(lg.shape[0], -1)

    def bits_grid(self) -> torch.Tensor:
        """The data bits on the grid, ``float32 [n, 2, S, F]`` (0 on pilot REs)."""
        n = self.bits.shape[0]
        s_idx, f_idx = torch.nonzero(self.data_mask, as_tuple=True)
        out = torch.zeros(n, 2, *self.data_mask.shape)
        out[:, :, s_idx, f_idx] = self.bits.view(n, -1, 2).transpose(1, 2).float()
        return out


class OfdmLink:
    """The Sionna blocks of one :class:`OfdmLinkConfig` (built once, reused).

    Example
    -------
    >>> link = OfdmLink(OfdmLinkConfig())
    >>> batch = link.simulate(64, seed=1)
    >>> llr = link.genie_lmmse_llrs(batch)   # [64, 2 * n_data]
    """

    def __init__(self, cfg: OfdmLinkConfig) -> None:
        self.cfg = cfg

    @cached_property
    def _blocks(self) -> dict[str, object]:
        from sionna.phy.channel import GenerateOFDMChannel
        from sionna.phy.channel.tr38901 import TDL
        from sionna.phy.mapping import Demapper, Mapper
        from sionna.phy.mimo import StreamManagement
        from sionna.phy.ofdm import LMMSEEqualizer, LSChannelEstimator, ResourceGrid, ResourceGridMapper

        import sionna.phy as sp

        c = self.cfg
        sp.config.seed = derive_seed(0, "ofdm_link", "pilots") % (2**31)  # Kronecker pilots: a fixed QPSK draw
        rg = ResourceGrid(
            num_ofdm_symbols=c.n_ofdm_symbols, fft_size=c.n_subcarriers, subcarrier_spacing=c.subcarrier_spacing_hz,
            num_tx=1, num_streams_per_tx=1, pilot_pattern="kronecker", pilot_ofdm_symbol_indices=list(c.pilot_symbols),
        )
        tdl = TDL(c.tdl_model, delay_spread=c.delay_spread_s, carrier_frequency=c.carrier_frequency_hz,
                  min_speed=0.0, max_speed=c.max_speed_mps, num_rx_ant=c.n_rx, num_tx_ant=1)
        return {
            "rg": rg,
            "mapper": Mapper("qam", 2),
            "rg_mapper": ResourceGridMapper(rg),
            "channel": GenerateOFDMChannel(tdl, rg, normalize_channel=True),
            "ls": LSChannelEstimator(rg, interpolation_type="lin"),
            "lmmse": LMMSEEqualizer(rg, StreamManagement(np.array([[1]]), 1)),
            "demapper": Demapper("app", "qam", 2),
        }

    @property
    def n_data(self) -> int:
        """Data REs per slot."""
        return int(self._blocks["rg"].num_data_symbols)

    def simulate(self, n: int, seed: int) -> SlotBatch:
        """Simulate ``n`` slots; same ``seed`` -> same slots. See :func:`simulate_slots`."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        import sionna.phy as sp

        b = self._blocks
        c = self.cfg
        g = torch.Generator().manual_seed(derive_seed(seed, "ofdm_link", "bits_noise"))
        bits = torch.randint(0, 2, (n, 2 * self.n_data), generator=g, dtype=torch.uint8)
        xs = b["mapper"](bits.float().view(n, 1, 1, -1))  # [n, 1, 1, n_data]
        xg = b["rg_mapper"](xs)  # [n, 1, 1, S, F]
        sp.config.seed = derive_seed(seed, "ofdm_link", "tdl") % (2**31)
        h7 = b["channel"](n)  # [n, 1, n_rx, 1, 1, S, F]
        h = h7[:, 0, :, 0, 0]  # [n, n_rx, S, F]
        lo, hi = c.snr_db_range
        snr_db = lo + (hi - lo) * torch.rand(n, generator=g)
        no = 10.0 ** (-snr_db / 10.0)
        noise = torch.complex(torch.randn(h.shape, generator=g), torch.randn(h.shape, generator=g))
        x = xg[:, 0, 0]
        y = h * x[:, None] + noise * (no / 2).sqrt().view(n, 1, 1, 1)
        pilot_grid = torch.zeros(c.n_ofdm_symbols, c.n_subcarriers, dtype=torch.complex64)
        mask = b["rg"].pilot_pattern.mask[0, 0].bool()  # [S, F], True on pilot REs
        pilot_grid[mask] = x[0][mask]
        return SlotBatch(y=y.to(torch.complex64), h=h.to(torch.complex64), x=x.to(torch.complex64), bits=bits,
                         noise_var=no.float(), snr_db=snr_db.float(), pilot_grid=pilot_grid, data_mask=~mask)

    def _equalize(self, batch: SlotBatch, h_hat: torch.Tensor, err_var: torch.Tensor) -> torch.Tensor:
        b = self._blocks
        y5 = batch.y[:, None]  # [n, 1, n_rx, S, F]
        xh, no_eff = b["lmmse"](y5, h_hat, err_var, batch.noise_var)
        return b["demapper"](xh, no_eff)[:, 0, 0]  # [n, 2 n_data]

    def ls_lmmse_llrs(self, batch: SlotBatch) -> torch.Tensor:
        """LS (pilots, linear interpolation) + LMMSE + APP demapping: ``float32 [n, 2 n_data]``."""
        h_hat, err_var = self._blocks["ls"](batch.y[:, None], batch.noise_var)
        return self._equalize(batch, h_hat, err_var)

    def genie_lmmse_llrs(self, batch: SlotBatch) -> torch.Tensor:
        """LMMSE + APP demapping with the true channel (perfect CSI): ``float32 [n, 2 n_data]``."""
        h7 = batch.h[:, None, :, None, None]  # [n, 1, n_rx, 1, 1, S, F]
        return self._equalize(batch, h7, torch.zeros(h7.shape))


def simulate_slots(cfg: OfdmLinkConfig, n: int, seed: int) -> SlotBatch:
    """``OfdmLink(cfg).simulate(n, seed)`` (builds the Sionna blocks each call)."""
    return OfdmLink(cfg).simulate(n, seed)
