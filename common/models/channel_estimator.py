"""Feed-forward DNN channel estimator for SISO-OFDM (the X-REFINE network).

Input: the initial per-subcarrier estimate (LS at the pilots, linearly interpolated;
``common.phy.ofdm.OfdmBatch.features``) as real features ``[re_0..re_{K-1}, im_0..im_{K-1}]``.
Three hidden fully connected layers with ReLU, then a linear output layer giving the
full-band channel in the same layout. ``kept_subcarriers`` (input filtering) and
``hidden`` (per-layer widths) let a filtered / pruned estimator remain this class:
the forward pass still takes the full ``[n, 2K]`` input and reads only the kept
subcarriers' re/im features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ChannelEstimator", "fit_estimator", "predict"]


class ChannelEstimator(nn.Module):
    """FC estimator ``2K_in -> h1 -> h2 -> h3 -> 2K`` (ReLU hidden, linear output).

    Parameters
    ----------
    n_subcarriers : int
        K, the number of subcarriers (input and output band).
    hidden : sequence of 3 ints, default (64, 64, 64)
        Widths of the three hidden layers.
    kept_subcarriers : sequence of int, optional
        Input subcarriers the network reads (sorted, unique, in ``[0, K)``); default all.

    Input / Output
    --------------
    ``float32 [n, 2K]`` (re | im of the interpolated LS estimate) -> ``float32 [n, 2K]``
    (re | im of the estimated channel).
    """

    def __init__(
        self,
        n_subcarriers: int,
        hidden: Sequence[int] = (64, 64, 64),
        kept_subcarriers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if n_subcarriers < 1:
            raise ValueError(f"n_subcarriers must be >= 1, got {n_subcarriers}")
        widths = [int(h) for h in hidden]
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"hidden must be 3 positive widths, got {list(hidden)}")
        kept = list(range(n_subcarriers)) if kept_subcarriers is None else [int(k) for k in kept_subcarriers]
        if not kept or kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= n_subcarriers:
            raise ValueError(f"kept_subcarriers must be sorted unique indices in [0, {n_subcarriers - 1}], got {kept}")
        self.n_subcarriers = int(n_subcarriers)
        self.hidden = tuple(widths)
        self.kept_subcarriers = tuple(kept)
        feat = torch.tensor(kept + [k + n_subcarriers for k in kept], dtype=torch.long)
        self.register_buffer("_features", feat, persistent=False)
        dims = [2 * len(kept), *widths, 2 * n_subcarriers]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(4))

    @property
    def input_shape(self) -> tuple[int]:
        """Per-sample input shape ``(2K,)``."""
        return (2 * self.n_subcarriers,)

    def select_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The kept features of ``x: float32 [n, 2K]`` -> ``[n, 2 K_kept]``."""
        if x.dim() != 2 or x.shape[1] != 2 * self.n_subcarriers:
            raise ValueError(f"ChannelEstimator expects [n, {2 * self.n_subcarriers}], got {tuple(x.shape)}")
        return x.index_select(1, self._features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.select_inputs(x)
        for layer in self.layers[:-1]:
            a = torch.relu(layer(a))
        return self.layers[-1](a)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Evaluate ``model`` on ``x: float32 [n, d]`` in eval mode without gradients, in chunks."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was)


def fit_estimator(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train an estimator by MSE with Adam (mini-batches, shuffled each epoch).

    Parameters
    ----------
    model : nn.Module
        Maps ``float32 [n, d_in]`` to ``float32 [n, d_out]``; trained in place.
    x : float32 [n, d_in]
        Inputs (interpolated LS features).
    y : float32 [n, d_out]
        Targets (true channel features).
    epochs : int, default 20
    batch_size : int, default 128
    lr : float, default 1e-3
        Adam learning rate.
    generator : torch.Generator, optional
        Shuffling order (seed it from ``common.seeding``).

    Returns
    -------
    list of float
        Mean training loss of each epoch.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history: list[float] = []
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / n)
    model.eval()
    return history
