"""Gradient significance of a model's layers on a task, and the choice of the learngene unit.

Paper: Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene", 2025,
Sec. IV-E, eq. (19) (the gradient of the task's loss over its training set) and eq. (20)
(significance ``rho_k^l``: the fraction of a layer's parameters whose gradient magnitude
exceeds ``tau``).

The loss differentiated here is the per-element mean squared error (Keras' ``mse``,
which the paper's implementation used and against which its ``tau = 1e-4`` was set),
i.e. eq. (13) divided by ``2 n_t``. The collective training records eq. (19) at each
task's final epoch, as Sec. V-B says (``finetune(record_last_epoch_gradient=True)``: the
final epoch's mini-batch gradients, train-mode BN, weighted by their share of ``D_k``) and
passes it to :func:`significance_from_gradients`; :func:`gradient_significance` is the
same figure at fixed trained weights (eval-mode BN: the deployed function).

Selection rule (:func:`select_unit_layers`): candidates are the significant conv layers
1..n_conv (BN, the first and last conv and the FC are excluded, Sec. V-B). Every
contiguous block of ``unit_layers`` candidates is scored by the mean significance of its
layers over the later half of the tasks (lower is better: the layer has stopped adapting
to each new task), ties broken by the mean least-squares slope of ``rho_k^l`` over ``k``
(more negative is better), then by depth (deeper wins, as in the paper).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.learngene.training import conv_fast_layout, mse_loss
from common.models.sdnet import SDNet
from common.phy.dataset import DetectionBatch

__all__ = ["gradient_significance", "significance_from_gradients", "select_unit_layers"]


def _layers(model: SDNet) -> list[tuple[int, str, list[torch.nn.Parameter]]]:
    out = [(i, f"convs.{i}", [c.weight, c.bias]) for i, c in enumerate(model.convs)]
    out.append((model.n_conv + 2, "fc", [model.fc.weight, model.fc.bias]))
    return out


def gradient_significance(model: SDNet, batch: DetectionBatch, epsilon: float, chunk: int = 250) -> list[dict[str, Any]]:
    """Eq. (19)-(20) for every conv layer and the FC on one task's data.

    Parameters
    ----------
    model : SDNet
    batch : DetectionBatch
        The task's data ``D_k``.
    epsilon : float
        Threshold ``tau``.
    chunk : int
        Samples per backward pass (the gradient is of the mean loss over all of ``batch``).

    Returns
    -------
    list of dict
        ``layer``, ``layer_name``, ``candidate``, ``significance``, ``mean_abs_grad``, ``n_params``.
    """
    was = model.training
    dev = next(model.parameters()).device
    model.eval()
    model.zero_grad(set_to_none=True)
    n = len(batch)
    try:
        with conv_fast_layout(model, batch.sdnet_input.to(dev)) as Xall:
            Yall = batch.x.to(dev)
            for s in range(0, n, chunk):
                X, Y = Xall[s : s + chunk], Yall[s : s + chunk]
                # eq. (19) on the per-element MSE: eq. (13) / (2 n_t)
                (mse_loss(model(X), Y) / Y.shape[1] * (len(X) / n)).backward()
        grads = {k: p.grad.detach() for k, p in model.named_parameters() if p.grad is not None}
        rows = significance_from_gradients(model, grads, epsilon)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return rows


def significance_from_gradients(model: SDNet, grads: dict[str, torch.Tensor], epsilon: float) -> list[dict[str, Any]]:
    """Eq. (20) for every conv layer and the FC from eq. (19)'s gradients.

    Parameters
    ----------
    model : SDNet
        Names the layers (``convs.{i}``, ``fc``).
    grads : dict of str -> Tensor
        Gradient per parameter name (``"convs.3.weight"``, ...), e.g.
        ``FinetuneResult.last_epoch_gradient`` (the task's final epoch, as the paper
        records it) or the gradient over ``D_k`` at the trained weights.
    epsilon : float
        Threshold ``tau``.

    Returns
    -------
    list of dict
        ``layer``, ``layer_name``, ``candidate``, ``significance``, ``mean_abs_grad``, ``n_params``.
    """
    rows = []
    for lid, name, _ in _layers(model):
        g = torch.cat([grads[f"{name}.{w}"].detach().abs().flatten().cpu() for w in ("weight", "bias")])  # eq. (19)
        rows.append(
            {
                "layer": lid,
                "layer_name": name,
                "candidate": 1 <= lid <= model.n_conv,
                "significance": float((g > epsilon).float().mean()),  # eq. (20)
                "mean_abs_grad": float(g.mean()),
                "n_params": int(g.numel()),
            }
        )
    return rows


def select_unit_layers(significance: np.ndarray, unit_layers: int) -> tuple[list[int], dict[str, float]]:
    """The selection rule (module docstring).

    Parameters
    ----------
    significance : np.ndarray
        ``float [K, n_conv]``: ``rho_k^l`` for tasks k (rows, in order) and candidate
        layers l = 1..n_conv (columns).
    unit_layers : int

    Returns
    -------
    (layer_ids, stats)
        1-based consecutive layer ids, and the chosen block's ``late_mean`` and ``slope``.
    """
    rho = np.asarray(significance, dtype=np.float64)
    if rho.ndim != 2 or rho.shape[1] < unit_layers or rho.shape[0] < 1:
        raise ValueError(f"significance must be [K>=1, n_conv>={unit_layers}], got {rho.shape}")
    K, L = rho.shape
    late = rho[K // 2 :].mean(0) if K > 1 else rho[0]
    k = np.arange(K, dtype=np.float64)
    slope = ((k - k.mean())[:, None] * (rho - rho.mean(0))).sum(0) / max(((k - k.mean()) ** 2).sum(), 1e-12)
    best: tuple[float, float, int] | None = None
    for start in range(L - unit_layers + 1):
        sl = slice(start, start + unit_layers)
        key = (round(float(late[sl].mean()), 12), round(float(slope[sl].mean()), 12), -start)
        if best is None or key < best:
            best = key
    assert best is not None
    start = -best[2]
    return list(range(start + 1, start + unit_layers + 1)), {"late_mean": best[0], "slope": best[1]}


