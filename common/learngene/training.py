"""Local SDNet training on a device: MSE (eq. 13) plus the learngene L2 term (eq. 21).

Used for every scheme (train-from-scratch, transfer learning, learngene) and, one task at
a time, by the manufacturer's collective training (``common.learngene.collective``), so the
training loop exists once.

FLOP convention: a training step costs 3x the forward FLOPs per sample (forward, plus a
backward pass of about twice the forward: gradients w.r.t. activations and weights),
with forward FLOPs counted by ``common.models.complexity.count_flops`` (2 x MACs of
conv/linear weights). ``flops = 3 * forward_flops * samples_trained``; evaluation
passes (``val``) are not included.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from common.learngene.expansion import l2_to_anchors
from common.models.complexity import count_flops
from common.models.sdnet import sdnet_symbol_indices
from common.phy.dataset import DetectionBatch, make_detection_batch
from common.phy.metrics import ser
from common.train_draws import TRAIN_DRAWS

__all__ = ["FinetuneResult", "Redraw", "TRAIN_DRAWS", "LOSSES", "PRECISIONS", "conv_fast_layout", "finetune", "evaluate_ser", "predict_indices", "mse_loss", "sign_bce_loss", "TRAIN_FLOPS_PER_FORWARD"]

#: training FLOPs per sample per step, in units of forward FLOPs
TRAIN_FLOPS_PER_FORWARD: int = 3

#: ``finetune(precision=...)``: "fp32", or "bf16" (forward pass under bfloat16 autocast;
#: weights, loss, gradients' accumulation and Adam stay float32)
PRECISIONS = ("fp32", "bf16")


@dataclass
class FinetuneResult:
    """What one call of ``finetune`` did.

    Attributes
    ----------
    loss_per_epoch : list of float
        Mean training loss of eq. (13) per epoch (without the eq. (21) term).
    val_ser_per_epoch : list of float
        SER on ``val`` after each epoch (empty without ``val``).
    flops : int
        Training FLOPs actually run (module docstring convention).
    samples : int
        Training samples processed (epochs x len(train)).
    seconds : float
        Wall-clock time of the training loop (evaluation excluded).
    last_epoch_gradient : dict of str -> Tensor
        With ``record_last_epoch_gradient``: per parameter name, the gradient of the
        per-element MSE (eq. (13) / ``2 n_t``, plus the eq. (21) term when anchored)
        accumulated over the final epoch's mini-batches, each weighted by its share of the
        samples: the gradient of ``L(Theta; D_k)`` of eq. (19) during the task's final
        epoch (train-mode BN, as the weights move). Empty otherwise.
    """

    loss_per_epoch: list[float] = field(default_factory=list)
    val_ser_per_epoch: list[float] = field(default_factory=list)
    flops: int = 0
    samples: int = 0
    seconds: float = 0.0
    last_epoch_gradient: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Redraw:
    """Fresh symbols, pilots and noise every epoch over the training batch's own channels.

    Not the paper's recipe (its 8,100 samples are drawn once). Every epoch ``finetune``
    trains on ``make_detection_batch(train.H, train.snr_db, n_pilots, generator)``: the same
    ``n`` channel realisations ``H``, with new QPSK symbols, a new pilot block (so a new
    LS estimate, eq. 4-5) and new receiver noise (eq. 1). A device that receives pilots in
    every slot has these for free; what it cannot renew cheaply is the set of channels.
    ``docs/sdnet_fidelity.md`` ("Redrawn noise") measures what it does: on the tasks where
    SDNet memorises its fixed samples, the held-out SER keeps falling.

    Attributes
    ----------
    n_pilots : int
        ``N_p`` of the LS estimate (Table III: 16), as the training batch was built.
    generator : torch.Generator
        Source of every redraw; checkpoint its state to resume a training exactly.
    """

    n_pilots: int
    generator: torch.Generator

    @classmethod
    def per(cls, train_draws: str, n_pilots: int, generator: torch.Generator) -> Redraw | None:
        """What a ``train_draws`` setting (``TRAIN_DRAWS``) asks ``finetune`` for: ``None``
        for "fixed", a ``Redraw`` drawing from ``generator`` for "per-epoch"."""
        if train_draws not in TRAIN_DRAWS:
            raise ValueError(f"train_draws must be one of {TRAIN_DRAWS}, got {train_draws!r}")
        return cls(n_pilots, generator) if train_draws == "per-epoch" else None


def mse_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eq. (13): ``(1/N) sum_n ||x_hat(n) - x(n)||_2^2`` for ``float [N, 2 n_t]`` tensors."""
    return (out - x).pow(2).sum(1).mean()


def sign_bce_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Not the paper's: binary cross-entropy on the signs of ``x`` (QPSK's two Gray bits per
    symbol are the signs of its real and imaginary parts), summed over the ``2 n_t`` outputs
    and averaged over the batch, like eq. (13). The output ``out = tanh(a)`` in ``(-1, 1)``
    is read as ``P(sign = +1) = (1 + out) / 2 = sigmoid(2 a)``; for ``float [N, 2 n_t]``."""
    p_pos = ((1 + out) / 2).clamp(1e-7, 1 - 1e-7)
    pos = x > 0
    return -torch.where(pos, p_pos.log(), (1 - p_pos).log()).sum(1).mean()


#: training losses ``finetune`` knows: the paper's eq. (13), and a probe (``sign_bce_loss``)
LOSSES = {"mse": mse_loss, "bce": sign_bce_loss}


@contextlib.contextmanager
def conv_fast_layout(model: nn.Module, X: torch.Tensor) -> Iterator[torch.Tensor]:
    """Run ``model`` and ``X`` in channels-last layout inside the block (oneDNN's 3x3 convs
    with few channels run ~20-25% faster on CPU), and an SDNet's batch norm and tanh fused
    where ``common.models.bn_tanh`` applies; the model's default layout and unfused
    modules are restored on exit. Yields ``X`` in the layout to use."""
    fast = X.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if not fast:
        yield X
        return
    fusing = [m for m in model.modules() if hasattr(m, "fuse_bn_tanh")]
    model.to(memory_format=torch.channels_last)
    for m in fusing:
        m.fuse_bn_tanh = True
    try:
        yield X.contiguous(memory_format=torch.channels_last)
    finally:
        for m in fusing:
            m.fuse_bn_tanh = False
        model.to(memory_format=torch.contiguous_format)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict_indices(model: nn.Module, batch: DetectionBatch, chunk: int = 4096) -> torch.Tensor:
    """Hard decisions ``int64 [n, n_t]`` of ``model`` on ``batch`` (eval mode, mode restored)."""
    was = model.training
    dev = _device(model)
    model.eval()
    try:
        outs = [sdnet_symbol_indices(model(batch.sdnet_input[s : s + chunk].to(dev))).cpu() for s in range(0, len(batch), chunk)]
    finally:
        model.train(was)
    return torch.cat(outs, 0)


def evaluate_ser(model: nn.Module, batch: DetectionBatch) -> float:
    """SER of ``model`` on ``batch``."""
    return ser(predict_indices(model, batch), batch.symbols)


def finetune(
    model: nn.Module,
    train: DetectionBatch,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    anchors: dict[str, torch.Tensor] | None = None,
    lam: float = 0.0,
    generator: torch.Generator | None = None,
    val: DetectionBatch | None = None,
    record_last_epoch_gradient: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    precision: str = "fp32",
    loss: str = "mse",
    redraw: Redraw | None = None,
) -> FinetuneResult:
    """Train ``model`` in place with Adam on ``train``.

    Parameters
    ----------
    model : nn.Module
        An SDNet (or any module mapping ``sdnet_input`` to ``[n, 2 n_t]``).
    train : DetectionBatch
        Training samples (moved to the model's device; a CUDA model trains on the GPU).
    epochs, batch_size : int
        Passes over ``train`` and mini-batch size (the last batch may be smaller).
    lr : float
        Adam learning rate (paper: 1e-3).
    anchors : dict of str -> Tensor, optional
        Inherited tensors by parameter name (``common.learngene.expand``) for eq. (21).
    lam : float, default 0
        ``lambda`` of eq. (21) (paper: 2e-15); ignored without anchors.
    generator : torch.Generator, optional
        Shuffling; default a generator seeded with 0 (deterministic).
    val : DetectionBatch, optional
        Evaluated (SER) after every epoch.
    record_last_epoch_gradient : bool, default False
        Fill ``FinetuneResult.last_epoch_gradient`` (eq. (19) at the final epoch).
    optimizer : torch.optim.Optimizer, optional
        An optimiser over ``model``'s parameters to continue (its state and learning rate
        are used; ``lr`` is ignored): training in several calls, checkpointed in between,
        is then the same as one call. Default: a fresh ``Adam(lr=lr)``.
    precision : str, default "fp32"
        One of ``PRECISIONS``: "bf16" runs the training forward pass under bfloat16 autocast
        (``benchmarks/sdnet_training.py`` measures speed and held-out SER of both).
    loss : str, default "mse"
        A key of ``LOSSES``: "mse" is eq. (13), the paper's; "bce" (``sign_bce_loss``) is a
        probe that ``benchmarks/sdnet_map.py`` compares with it.
    redraw : Redraw, optional
        Train each epoch on fresh symbols, pilots and noise over ``train.H`` (``Redraw``);
        default: on ``train`` as given, every epoch (the paper's).

    Returns
    -------
    FinetuneResult
    """
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    n = len(train)
    if n == 0:
        raise ValueError("empty training batch")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    fwd = count_flops(model, (1, *train.sdnet_input.shape[1:]))
    dev = _device(model)
    X, Y = train.sdnet_input.to(dev), train.x.to(dev)
    if anchors:
        anchors = {k: v.to(dev) for k, v in anchors.items()}
    with conv_fast_layout(model, X) as X:
        opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
        draw = None
        if redraw is not None:
            layout = torch.channels_last if X.dim() == 4 and X.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

            def draw() -> tuple[torch.Tensor, torch.Tensor]:
                b = make_detection_batch(train.H, train.snr_db, redraw.n_pilots, redraw.generator)
                return b.sdnet_input.to(dev).contiguous(memory_format=layout), b.x.to(dev)
        res = _train_epochs(model, X, Y, epochs, batch_size, opt, anchors if lam > 0 else None, lam, gen, val, record_last_epoch_gradient, precision, LOSSES[loss], draw)
    res.flops = TRAIN_FLOPS_PER_FORWARD * fwd * res.samples
    return res


def _train_epochs(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    epochs: int,
    batch_size: int,
    opt: torch.optim.Optimizer,
    anchors: dict[str, torch.Tensor] | None,
    lam: float,
    gen: torch.Generator,
    val: DetectionBatch | None,
    record_last: bool = False,
    precision: str = "fp32",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = mse_loss,
    draw: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> FinetuneResult:
    n, dev = len(X), X.device
    cast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    res = FinetuneResult()
    model.train()
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    for epoch in range(epochs):
        acc = {k: torch.zeros_like(p) for k, p in params} if record_last and epoch == epochs - 1 else None
        t0 = time.perf_counter()
        if draw is not None:  # ``Redraw``: this epoch's samples over the same channels
            X, Y = draw()
        perm = torch.randperm(n, generator=gen).to(dev)
        total = torch.zeros((), device=dev)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            with cast():
                out = model(X[idx])
            loss = loss_fn(out.float(), Y[idx])  # eq. (13) unless a probe's loss
            total += loss.detach() * len(idx)
            if anchors:
                loss = loss + l2_to_anchors(model, anchors, lam)  # eq. (21)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if acc is not None:  # eq. (19) at the final epoch, on the per-element MSE
                w = len(idx) / (n * Y.shape[1])
                for k, p in params:
                    if p.grad is not None:
                        acc[k] += p.grad.detach() * w
            opt.step()
        res.seconds += time.perf_counter() - t0
        if acc is not None:
            res.last_epoch_gradient = {k: v.cpu() for k, v in acc.items()}
        res.loss_per_epoch.append(float(total) / n)
        res.samples += n
        if val is not None:
            res.val_ser_per_epoch.append(evaluate_ser(model, val))
    return res
