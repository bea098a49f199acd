"""What pre-training and fine-tuning of the CSI compressor share: the RD objective and the
minibatch draws.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates": the RD loss of eq. (9), ``lambda * MSE + R`` with
the rate estimated from the entropy model's likelihoods of the noisy latents (eq. 5),
on the training path of :class:`common.models.csi_compressor.CSICompressor`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.func import functional_call

from common.models.csi_compressor import CSICompressor, rd_loss
from common.seeding import numpy_rng

__all__ = ["rd_objective", "minibatches"]


def rd_objective(model: CSICompressor, x: torch.Tensor, lmbda: float, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """eq. (9) on the training path, a scalar tensor.

    Parameters
    ----------
    model : CSICompressor
    x : torch.Tensor
        ``float32 [batch, 2, n_ant, n_sc]`` CSI planes.
    lmbda : float
        RD weight on the MSE.
    params : dict of str -> torch.Tensor, optional
        Weights to run instead of the model's own (e.g. the decoder on ``base + Q(delta)``,
        eq. 12); ``None`` or empty runs the model as it is.
    """
    out = functional_call(model, params, (x,)) if params else model(x)
    return rd_loss(x, out["x_hat"], out["bits"], lmbda, model.cfg.csi_dims)


def minibatches(n: int, batch: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """``steps`` index draws ``int64 [min(batch, n)]`` without replacement from ``range(n)``.

    The draws come from one generator named by ``seed`` (the same sequence in any process).
    """
    rng = numpy_rng(seed, "csi-batches")
    b = min(batch, n)
    for _ in range(steps):
        yield rng.choice(n, size=b, replace=False)
