"""What pre-training and fine-tuning of the CSI compressor share: the RD objective, the
minibatch draws (in steps, or in epochs as the paper counts fine-tuning: 1,000 epochs)
and the seeded RNG stream on the CPU or a CUDA device.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates": the RD loss of eq. (9), ``lambda * MSE + R`` with
the rate estimated from the entropy model's likelihoods of the noisy latents (eq. 5),
on the training path of :class:`common.models.csi_compressor.CSICompressor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from common.models.csi_compressor import CSICompressor, rd_loss
from common.seeding import numpy_rng

__all__ = ["rd_objective", "minibatches", "epoch_minibatches", "finetune_draws", "seeded_rng"]


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


def epoch_minibatches(n: int, batch: int, epochs: int, seed: int) -> Iterator[np.ndarray]:
    """``epochs`` passes over ``range(n)``: each a fresh permutation cut into
    ``ceil(n / batch)`` index draws ``int64 [<= batch]`` (every sample once per epoch; the
    last draw of a pass may be smaller).

    The permutations come from one generator named by ``seed`` (the same in any process).
    """
    rng = numpy_rng(seed, "csi-epochs")
    b = max(1, int(batch))
    for _ in range(int(epochs)):
        perm = rng.permutation(int(n))
        for start in range(0, int(n), b):
            yield perm[start : start + b]


def finetune_draws(n: int, cfg: dict[str, Any], seed: int) -> list[np.ndarray]:
    """The index draws of one fine-tuning run on ``n`` samples: ``cfg["epochs"]`` passes
    (:func:`epoch_minibatches`) when it is positive, else ``cfg["steps"]`` draws
    (:func:`minibatches`), each of at most ``cfg["batch"]`` samples."""
    epochs = int(cfg.get("epochs", 0) or 0)
    if epochs > 0:
        return list(epoch_minibatches(n, int(cfg["batch"]), epochs, seed))
    return list(minibatches(n, int(cfg["batch"]), int(cfg["steps"]), seed))


@contextmanager
def seeded_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Run the block with torch's RNG seeded by ``seed`` (the CPU generator, and the CUDA
    generators when ``device`` is a CUDA device), then restore the caller's state."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(int(seed) % (2**31))
        yield
