"""SDNet: the CNN MIMO detector of the learngene paper (Sec. III-B, Fig. 2).

Input: the ``(2 n_r + 1) x 2 n_t`` image ``[H_LS ; x_ZF^T]`` with one channel
(``common.phy.dataset.build_sdnet_input``). Layers, in order:

- ``convs[0]``: 3x3 conv ``1 -> widths[0]``, ``bns[0]``, tanh (the "first" conv);
- ``convs[1..n_conv]``: 3x3 convs ``widths[i-1] -> widths[i]``, each with BN and tanh:
  the ``n_conv`` "significant" layers numbered 1..n_conv in the paper (learngene
  candidates: significant layer ``l`` is ``convs[l]``);
- ``convs[n_conv+1]``: 3x3 conv ``widths[n_conv] -> 1``, ``bns[n_conv+1]``, tanh (the "last" conv);
- flatten, ``fc``: Linear to ``2 n_t``, tanh. Loss: MSE against ``x`` (eq. 13).

All convs use 'same' padding, so the image keeps its size. ``widths`` (channels of the
first ``n_conv + 1`` convs, default 8) and ``input_rows`` (rows of the input image that
are kept, default all) let a pruned detector remain an SDNet. ``col_upsample`` is the
learngene upsampling adaptor (``common.learngene``): the input image's columns are
repeated ``col_upsample`` times (nearest neighbour) before the first conv, so a model
for ``n_t = 4`` runs its convs on the same 16-column geometry as one for ``n_t = 8``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.models.bn_tanh import bn_tanh, fusable

__all__ = ["SDNet", "sdnet_symbol_indices", "significant_layer_names"]


class SDNet(nn.Module):
    """The SDNet detector.

    Parameters
    ----------
    n_r, n_t : int
        BS (receive) and UE (transmit) antennas; input ``[n, 1, 2 n_r + 1, 2 n_t]``.
    n_conv : int
        Depth ``N_conv`` (paper: 12 collective, 8 individual); ``N_conv + 2`` convs in all.
    widths : sequence of int, optional
        Output channels of ``convs[0..n_conv]`` (length ``n_conv + 1``); default all 8.
    input_rows : sequence of int, optional
        Indices of the input rows kept (sorted, unique, in ``[0, 2 n_r]``); default all.
    col_upsample : int, default 1
        Nearest-neighbour column repetition applied to the (row-selected) input.

    Input / Output
    --------------
    ``float32 [n, 1, 2 n_r + 1, 2 n_t]`` -> ``float32 [n, 2 n_t]`` in ``(-1, 1)``.
    """

    def __init__(
        self,
        n_r: int,
        n_t: int,
        n_conv: int,
        widths: Sequence[int] | None = None,
        input_rows: Sequence[int] | None = None,
        col_upsample: int = 1,
    ) -> None:
        super().__init__()
        if n_r < 1 or n_t < 1:
            raise ValueError(f"n_r and n_t must be >= 1, got {n_r}, {n_t}")
        if n_conv < 0:
            raise ValueError(f"n_conv must be >= 0, got {n_conv}")
        if col_upsample < 1:
            raise ValueError(f"col_upsample must be >= 1, got {col_upsample}")
        widths = [8] * (n_conv + 1) if widths is None else [int(w) for w in widths]
        if len(widths) != n_conv + 1 or min(widths) < 1:
            raise ValueError(f"widths must be {n_conv + 1} positive ints, got {widths}")
        n_rows = 2 * n_r + 1
        rows = list(range(n_rows)) if input_rows is None else [int(r) for r in input_rows]
        if not rows or rows != sorted(set(rows)) or rows[0] < 0 or rows[-1] >= n_rows:
            raise ValueError(f"input_rows must be sorted unique indices in [0, {n_rows - 1}], got {rows}")
        self.n_r, self.n_t, self.n_conv = int(n_r), int(n_t), int(n_conv)
        self.widths = tuple(widths)
        self.input_rows = tuple(rows)
        self.col_upsample = int(col_upsample)
        self._all_rows = len(rows) == n_rows
        self.register_buffer("_rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        chans = [1, *widths, 1]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1) for i in range(n_conv + 2))
        self.bns = nn.ModuleList(nn.BatchNorm2d(chans[i + 1]) for i in range(n_conv + 2))
        self.fc = nn.Linear(len(rows) * 2 * n_t * col_upsample, 2 * n_t)
        #: train through ``common.models.bn_tanh`` where it applies (set by the training
        #: loop's ``conv_fast_layout``; the same function, computed faster on one or two CPU threads)
        self.fuse_bn_tanh = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample input shape ``(1, 2 n_r + 1, 2 n_t)``."""
        return (1, 2 * self.n_r + 1, 2 * self.n_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"SDNet expects [n, {', '.join(map(str, self.input_shape))}], got {tuple(x.shape)}")
        if not self._all_rows:
            x = x.index_select(2, self._rows)
        if self.col_upsample > 1:
            x = x.repeat_interleave(self.col_upsample, dim=3)
        for conv, bn in zip(self.convs, self.bns):
            z = conv(x)
            x = bn_tanh(z, bn) if self.fuse_bn_tanh and fusable(z, bn) else torch.tanh(bn(z))
        return torch.tanh(self.fc(x.flatten(1)))


def sdnet_symbol_indices(out: torch.Tensor) -> torch.Tensor:
    """Hard QPSK decisions from SDNet's output.

    Parameters
    ----------
    out : torch.Tensor
        ``float [n, 2 n_t]`` as ``[Re; Im]``.

    Returns
    -------
    torch.Tensor
        ``int64 [n, n_t]`` indices ``2 (Re < 0) + (Im < 0)`` (``common.phy.modulation``).
    """
    if out.dim() != 2 or out.shape[1] % 2:
        raise ValueError(f"expected [n, 2 n_t], got {tuple(out.shape)}")
    n_t = out.shape[1] // 2
    return 2 * (out[:, :n_t] < 0).long() + (out[:, n_t:] < 0).long()


def significant_layer_names(model: SDNet) -> list[str]:
    """Module names of the significant conv layers 1..n_conv: ``["convs.1", ..., f"convs.{n_conv}"]``."""
    return [f"convs.{i}" for i in range(1, model.n_conv + 1)]
