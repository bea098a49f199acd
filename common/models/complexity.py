"""Parameter and FLOP counting for any ``nn.Module`` built from conv and linear layers.

FLOP convention (the learngene paper's Table IV): ``2 x MACs`` of the weights of every
``Conv1d/2d/3d`` and ``Linear`` module that runs in a forward pass, per sample; biases,
BN, activations, reshapes and upsampling are not counted. Counted by running the
model once with forward hooks, so input slicing, pruned widths and the actual spatial
sizes are whatever the model really does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["count_parameters", "count_flops", "LayerCost", "layer_costs"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, BN affine parameters included, BN running stats not."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv/linear module for one sample.

    Attributes
    ----------
    name : str
        Module name in the model.
    kind : str
        Class name (``Conv2d``, ``Linear``, ...).
    params : int
        Weights + bias of this module.
    flops : int
        ``2 x MACs`` of its weights for one sample.
    """

    name: str
    kind: str
    params: int
    flops: int


def layer_costs(model: nn.Module, input_shape: Sequence[int]) -> list[LayerCost]:
    """Per-module costs, in execution order.

    Parameters
    ----------
    model : nn.Module
    input_shape : sequence of int
        Full input shape including the batch dimension, e.g. ``(1, 1, 65, 16)``; FLOPs
        are reported per sample (divided by the batch size).

    Returns
    -------
    list of LayerCost
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"input_shape must include a batch dimension and be positive, got {shape}")
    batch = shape[0]
    costs: list[LayerCost] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if isinstance(mod, _CONV):
            per_out = (mod.in_channels // mod.groups) * int(torch.tensor(mod.kernel_size).prod())
            macs = out.numel() * per_out
        else:  # Linear
            macs = out.numel() * mod.in_features
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        costs.append(LayerCost(names[mod], type(mod).__name__, int(params), int(2 * macs // batch)))

    for m in model.modules():
        if isinstance(m, (*_CONV, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(shape, dtype=dtype, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return costs


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs per sample (``2 x MACs`` of conv/linear weights); see ``layer_costs``."""
    return sum(c.flops for c in layer_costs(model, input_shape))
