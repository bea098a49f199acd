"""A compact fully convolutional OFDM receiver in the spirit of DeepRx.

DeepRx (Honkala, Korpi, Huttunen, IEEE TWC 2021) maps the received resource grid plus
the pilots straight to bit LLRs with a deep ResNet of dilated convolutions over the
(OFDM symbol, subcarrier) plane. This is the CPU-sized version used by the influence
study: a 3x3 stem, ``n_blocks`` pre-activation residual blocks of one dilated 3x3
convolution each (dilations cycle through ``dilations`` so the receptive field
spans the pilots of the slot), and a 1x1 head to ``bits_per_symbol`` logits per RE.

Input: ``float32 [n, C, S, F]`` (for :mod:`common.phy.ofdm_link`:
``C = 4 n_rx + 1``: received grid, raw LS estimates at the pilots, ``log10 N0``).
Output: ``float32 [n, bits_per_symbol, S, F]`` bit logits ``log P(b=1)/P(b=0)``
(Sionna's LLR sign), meaningful on the data REs.

Plain (not depthwise-separable) 3x3 convolutions: on a CPU they run about 4x faster per
parameter here than grouped ones, which matters more than the parameter count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DeepRx", "ResBlock"]


class ResBlock(nn.Module):
    """``x + Conv3x3_d(relu(x))``: one pre-activation dilated 3x3 convolution with a skip.

    Parameters
    ----------
    width : int
        Channels in and out.
    dilation : tuple of int
        ``(symbol, subcarrier)`` dilation.
    """

    def __init__(self, width: int, dilation: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.relu(x))


class DeepRx(nn.Module):
    """Fully convolutional receiver: resource grid -> bit logits per RE.

    Parameters
    ----------
    in_channels : int
        Input planes ``C``.
    width : int, default 16
        Feature channels.
    n_blocks : int, default 3
        Residual blocks.
    dilations : sequence of (int, int), default ((1, 1), (2, 2), (3, 3))
        Per-block (symbol, subcarrier) dilations, cycled.
    bits_per_symbol : int, default 2
        Output logits per RE (2 for QPSK).

    Input / Output
    --------------
    ``x: float32 [n, C, S, F]`` -> ``float32 [n, bits_per_symbol, S, F]``.

    Example
    -------
    >>> DeepRx(9)(torch.zeros(4, 9, 14, 24)).shape
    torch.Size([4, 2, 14, 24])
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 16,
        n_blocks: int = 3,
        dilations: Sequence[tuple[int, int]] = ((1, 1), (2, 2), (3, 3)),
        bits_per_symbol: int = 2,
    ) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or n_blocks < 0 or bits_per_symbol < 1 or not dilations:
            raise ValueError("expected in_channels, width, bits_per_symbol >= 1, n_blocks >= 0 and some dilations")
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(width, tuple(dilations[i % len(dilations)])) for i in range(n_blocks)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, bits_per_symbol, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [n, {self.in_channels}, S, F], got {tuple(x.shape)}")
        return self.head(self.blocks(self.stem(x)))
