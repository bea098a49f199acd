"""Structural pruning: smaller copies of a channel estimator or an SDNet holding the kept units.

Paper: Gizzini & Medjahdi, "X-REFINE: XAI-based Relevance Input-Filtering and Architecture
Fine-tuning for Channel Estimation" -- input filtering and architecture fine-tuning
remove input units (subcarriers / SDNet input rows) and hidden units (FC neurons / conv
channels). This module has no equation of the paper (numbered (X1)-(X7) in
``common.xrefine``'s docstring): it slices weights exactly, so that a pruned model
computes what the full one computes with the removed units' contributions taken out.
Which units to keep is decided elsewhere (``thresholds``, ``budget``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator
from common.models.sdnet import SDNet

__all__ = ["unit_counts", "prune_estimator", "prune_sdnet", "prune_model"]


def unit_counts(model: nn.Module) -> tuple[int, list[int]]:
    """Prunable units of a model.

    Parameters
    ----------
    model : ChannelEstimator or SDNet

    Returns
    -------
    (n_inputs, widths)
        Input units (kept subcarriers / input rows) and the width of every prunable
        hidden layer (3 FC layers / ``convs[0..n_conv]``).

    Raises
    ------
    ValueError
        For any other model.
    """
    if isinstance(model, ChannelEstimator):
        return len(model.kept_subcarriers), list(model.hidden)
    if isinstance(model, SDNet):
        return len(model.input_rows), list(model.widths)
    raise ValueError(f"pruning supports ChannelEstimator and SDNet, got {type(model).__name__}")


def _check_keep(keep: Sequence[int] | torch.Tensor, n: int, what: str) -> torch.Tensor:
    """``keep`` as sorted int64 positions [n_kept]; raises ValueError unless non-empty, unique and in ``[0, n)``."""
    k = torch.as_tensor(list(keep) if not isinstance(keep, torch.Tensor) else keep, dtype=torch.long).reshape(-1)
    if k.numel() == 0 or k.unique().numel() != k.numel() or int(k.min()) < 0 or int(k.max()) >= n:
        raise ValueError(f"{what} must be non-empty unique positions in [0, {n - 1}], got {k.tolist()}")
    return k.sort().values


def prune_estimator(model: ChannelEstimator, keep_inputs: Sequence[int], keep_hidden: Sequence[Sequence[int]]) -> ChannelEstimator:
    """A smaller ``ChannelEstimator`` holding the kept units' weights.

    Parameters
    ----------
    model : ChannelEstimator
    keep_inputs : sequence of int
        Positions (into ``model.kept_subcarriers``) of the input subcarriers to keep.
    keep_hidden : 3 sequences of int
        Positions of the neurons to keep in each hidden layer.

    Returns
    -------
    ChannelEstimator
        Same ``n_subcarriers``; ``kept_subcarriers`` and ``hidden`` reduced; same
        training mode as ``model`` (which is untouched).
    """
    if len(keep_hidden) != 3:
        raise ValueError(f"keep_hidden must give 3 layers, got {len(keep_hidden)}")
    k_in = _check_keep(keep_inputs, len(model.kept_subcarriers), "keep_inputs")
    keeps = [_check_keep(h, w, f"keep_hidden[{i}]") for i, (h, w) in enumerate(zip(keep_hidden, model.hidden))]
    kept_sc = [model.kept_subcarriers[i] for i in k_in.tolist()]
    new = ChannelEstimator(model.n_subcarriers, [len(k) for k in keeps], kept_sc)
    n_old = len(model.kept_subcarriers)
    cols = torch.cat([k_in, k_in + n_old])  # re and im features of the kept subcarriers
    prev = cols
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            rows = keeps[i] if i < 3 else torch.arange(layer.out_features)
            new.layers[i].weight.copy_(layer.weight[rows][:, prev])
            new.layers[i].bias.copy_(layer.bias[rows])
            prev = rows
    return new.train(model.training)


def prune_sdnet(model: SDNet, keep_rows: Sequence[int], keep_channels: Sequence[Sequence[int]]) -> SDNet:
    """A smaller ``SDNet`` holding the kept input rows and conv channels.

    Parameters
    ----------
    model : SDNet
    keep_rows : sequence of int
        Positions (into ``model.input_rows``) of the input rows to keep.
    keep_channels : ``n_conv + 1`` sequences of int
        Output channels to keep in ``convs[0..n_conv]`` (the last conv has one channel).

    Returns
    -------
    SDNet
        Same ``n_r, n_t, n_conv, col_upsample``; weights and BN statistics sliced. The
        convs now see the kept rows as neighbours, so retraining is expected.
    """
    if len(keep_channels) != model.n_conv + 1:
        raise ValueError(f"keep_channels must give {model.n_conv + 1} layers, got {len(keep_channels)}")
    r = _check_keep(keep_rows, len(model.input_rows), "keep_rows")
    chans = [_check_keep(c, w, f"keep_channels[{i}]") for i, (c, w) in enumerate(zip(keep_channels, model.widths))]
    rows = [model.input_rows[i] for i in r.tolist()]
    new = SDNet(model.n_r, model.n_t, model.n_conv, [len(c) for c in chans], rows, model.col_upsample)
    outs = [*chans, torch.tensor([0])]
    prev = torch.tensor([0])
    cols = 2 * model.n_t * model.col_upsample
    with torch.no_grad():
        for i, (conv, bn) in enumerate(zip(model.convs, model.bns)):
            o = outs[i]
            new.convs[i].weight.copy_(conv.weight[o][:, prev])
            new.convs[i].bias.copy_(conv.bias[o])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new.bns[i], name).copy_(getattr(bn, name)[o])
            new.bns[i].num_batches_tracked.copy_(bn.num_batches_tracked)
            prev = o
        fc_cols = (r[:, None] * cols + torch.arange(cols)[None, :]).reshape(-1)  # flatten of [1, rows, cols]
        new.fc.weight.copy_(model.fc.weight[:, fc_cols])
        new.fc.bias.copy_(model.fc.bias)
    return new.train(model.training)


def prune_model(model: nn.Module, keep_inputs: Sequence[int], keep_hidden: Sequence[Sequence[int]]) -> nn.Module:
    """``prune_estimator`` or ``prune_sdnet`` by the model's class."""
    if isinstance(model, ChannelEstimator):
        return prune_estimator(model, keep_inputs, keep_hidden)
    if isinstance(model, SDNet):
        return prune_sdnet(model, keep_inputs, keep_hidden)
    raise ValueError(f"pruning supports ChannelEstimator and SDNet, got {type(model).__name__}")
