"""Expansion: the learngene unit placed into an individual SDNet of any size.

Paper: Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene", 2025,
Sec. IV-E and V-B/C; Fig. 5 (strategies); eq. (21) (L2 toward the inherited layers).

Layer numbering follows the paper's Fig. 2: an SDNet of depth ``N_conv`` has the
*significant* conv layers ``1..N_conv`` (``SDNet.convs[l]``); the first conv
(``convs[0]``), the last conv (``convs[N_conv+1]``), BN and FC are never part of a unit.

Expansion strategies ``"<segment>-<mode>"`` (Fig. 5, Sec. V-B), for a unit of ``M``
layers and an individual model of depth ``N``; one definition for the study and the fleet
(:func:`unit_source_layers` says which collective layers a strategy's unit is cut from,
:func:`placement` where it goes):

- ``X-embed``: the *selected* learngene unit (the layers the significance rule chose)
  placed at segment ``X`` of the individual model: ``top`` -> layers ``1..M``,
  ``middle`` -> ``(N-M)//2 + 1 ..`` (3..6 for N=8, M=4), ``bottom`` -> ``N-M+1..N``
  (Fig. 9 left: where to embed the learngene);
- ``X-inherit``: segment ``X`` of the *collective* model (``segment_layer_ids``: 1-4,
  5-8, 9-12 for 12 layers) inherited into the bottom ``N-M+1..N`` (Fig. 9 right: which
  part of the collective model to inherit).

So ``bottom-embed`` is the learngene scheme itself (selected unit at the bottom), and
``X-inherit`` is too when the rule selected segment ``X``. Only conv weights and biases are
copied: BN is never inherited (Sec. V-B). ``expand`` places whatever unit it is given and
returns the anchors of eq. (21).

Upsampling adaptor (Sec. V-C3): conv kernels are shared over the image, so a unit's
weights fit any input size; what changes with ``n_t`` is the feature-map geometry the
kernels were trained on (65 x 16 for ``(n_t, n_r) = (8, 32)``). An individual model for
``(4, 32)`` built by ``individual_sdnet(unit, ...)`` repeats every input column
``unit_n_t / n_t = 2`` times (nearest-neighbour upsampling, ``SDNet.col_upsample``)
so its convs run on 65 x 16 maps again: the same zero-padding border fraction, the same
number of columns per Re/Im half and the same map size as in the collective model;
its FC then maps ``65*16`` features to ``2 n_t = 8`` outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from common.learngene.unit import LearngeneUnit, segment_layer_ids
from common.models.sdnet import SDNet

__all__ = [
    "STRATEGIES",
    "unit_source_layers",
    "placement",
    "expand",
    "l2_to_anchors",
    "upsample_factor",
    "individual_sdnet",
]

#: expansion strategies, ``"<segment>-<mode>"`` (Fig. 5)
STRATEGIES: tuple[str, ...] = tuple(f"{s}-{m}" for m in ("embed", "inherit") for s in ("top", "middle", "bottom"))


def _parse_strategy(strategy: str) -> tuple[str, str]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown expansion strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    seg, mode = strategy.split("-")
    return seg, mode


def unit_source_layers(strategy: str, selected: list[int], n_conv_collective: int) -> list[int]:
    """Significant layers of the collective model (depth ``n_conv_collective``) that the unit
    of ``strategy`` is cut from: the ``selected`` layers for ``X-embed``, segment ``X`` of
    ``len(selected)`` layers for ``X-inherit`` (module docstring)."""
    seg, mode = _parse_strategy(strategy)
    return list(selected) if mode == "embed" else segment_layer_ids(n_conv_collective, len(selected), seg)


def placement(strategy: str, n_conv: int, m: int) -> list[int]:
    """Significant layer ids of the individual model (depth ``n_conv``) that receive a
    unit of ``m`` layers under ``strategy`` (module docstring)."""
    seg, mode = _parse_strategy(strategy)
    return segment_layer_ids(n_conv, m, "bottom" if mode == "inherit" else seg)


def expand(unit: LearngeneUnit, model: SDNet, strategy: str = "bottom-inherit") -> dict[str, torch.Tensor]:
    """Copy the unit's conv tensors into ``model`` (in place) and return the anchors.

    Parameters
    ----------
    unit : LearngeneUnit
    model : SDNet
        The individual model; its target convs must have the unit's shapes. BN layers
        and all other layers keep their (random) initialisation.
    strategy : str, default "bottom-inherit"
        One of ``STRATEGIES`` (module docstring).

    Returns
    -------
    dict of str -> torch.Tensor
        Parameter name (``"convs.{l}.weight"``, ``"convs.{l}.bias"``) -> the inherited
        tensor (a detached copy), i.e. ``Theta_lg`` of eq. (21).
    """
    targets = placement(strategy, model.n_conv, unit.n_layers)
    anchors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for m, l in enumerate(targets):
            conv = model.convs[l]
            for p in ("weight", "bias"):
                src = torch.from_numpy(unit.tensors[f"{m}.{p}"])
                dst = getattr(conv, p)
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError(f"unit layer {m}.{p} has shape {tuple(src.shape)}, model convs.{l}.{p} has {tuple(dst.shape)}")
                dst.copy_(src)
                anchors[f"convs.{l}.{p}"] = src.clone().to(dst.dtype)
    return anchors


def l2_to_anchors(model: nn.Module, anchors: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """Eq. (21) regulariser: ``lam/2 * sum_m ||Theta'_lg,m - Theta_lg,m||_2^2`` (a scalar tensor)."""
    params = dict(model.named_parameters())
    missing = [k for k in anchors if k not in params]
    if missing:
        raise ValueError(f"anchors name parameters the model lacks: {missing}")
    total = torch.zeros((), device=next(iter(params.values())).device)
    for k, a in anchors.items():
        total = total + (params[k] - a.to(params[k].device)).pow(2).sum()
    # eq. (21): lambda / 2 * sum ||Theta'_lg - Theta_lg||^2
    return 0.5 * lam * total


def upsample_factor(unit: LearngeneUnit, n_r: int, n_t: int) -> int:
    """Column repetition that maps an ``(n_r, n_t)`` input onto the unit's ``2 unit_n_t`` columns.

    ``ValueError`` unless ``n_r`` equals the unit's and ``n_t`` divides the unit's ``n_t``.
    """
    un_r, un_t = int(unit.meta.get("n_r", n_r)), int(unit.meta.get("n_t", n_t))
    if n_r != un_r:
        raise ValueError(f"unit was learnt at n_r={un_r}; rows are not resampled, got n_r={n_r}")
    if n_t > un_t or un_t % n_t:
        raise ValueError(f"unit learnt at n_t={un_t} can serve n_t dividing it, got n_t={n_t}")
    return un_t // n_t


def individual_sdnet(unit: LearngeneUnit, n_r: int, n_t: int, n_conv: int) -> SDNet:
    """A fresh SDNet for ``(n_r, n_t)`` with the upsampling adaptor the unit needs
    (``col_upsample = upsample_factor(...)``; 1 when the antennas match)."""
    return SDNet(n_r, n_t, n_conv, col_upsample=upsample_factor(unit, n_r, n_t))
