"""``tanh(BatchNorm2d(z))`` fused for SDNet's training on one or two CPU threads (issue #21, item 3).

SDNet (learngene paper, Sec. III-B, Fig. 2) follows each 3x3 conv by batch norm and tanh.
On a CPU thread at batch 500 these two are memory-bound passes over a 16 MB activation
each, and ATen's float ``tanh`` costs 3.5 ns an element; together they took ~40 % of a
training step (``benchmarks/sdnet_training.py --profile``). Here they are one autograd
function over channels-last activations, with Numba kernels that make two passes forward
(per-channel statistics; then affine and tanh) and two backward (per-channel sums; then the
input gradient), every inner loop vectorised.

Training-mode batch norm exactly as ``nn.BatchNorm2d`` defines it (Ioffe and Szegedy 2015,
Alg. 1 and its gradient):

- forward: ``mu, var`` = per-channel mean and biased variance of ``z [n, C, H, W]`` over
  ``N = n H W`` values; ``y = tanh(gamma (z - mu) / sqrt(var + eps) + beta)``; running
  statistics updated with ``momentum`` and the unbiased variance ``var N / (N - 1)``;
- backward: ``g = dL/dy (1 - y^2)``; ``dL/dbeta = sum g``;
  ``dL/dgamma = r sum g (z - mu)`` with ``r = 1 / sqrt(var + eps)``;
  ``dL/dz = gamma r (g - sum g / N - (z - mu) r^2 sum g (z - mu) / N)``.

``tanh`` is the rational minimax approximation Eigen uses for float (odd degree-13
numerator over even degree-6 denominator, argument clamped to +-7.9053): at most 3e-7 from
float32 ``tanh`` (a test holds it to that). Sums are float32 within blocks of rows and
float64 across them, around a per-channel shift (the first row) so the variance does not
cancel. Same inputs, same bits: the kernels are serial and deterministic.

Only first-order gradients (``once_differentiable``): Hessian-vector products, as the
influence functions take, use the unfused modules.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["MAX_THREADS", "bn_tanh", "fusable", "fast_tanh_max_error"]

_F = np.float32
# Eigen's generic_fast_tanh_float coefficients
_A1, _A3, _A5, _A7 = _F(4.89352455891786e-03), _F(6.37261928875436e-04), _F(1.48572235717979e-05), _F(5.12229709037114e-08)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = _F(4.89352518554385e-03), _F(2.26843463243900e-03), _F(1.18534705686654e-04), _F(1.19825839466702e-06)
_CLAMP = _F(7.90531110763549805)
_BLOCK_ROWS = 256
#: torch intra-op threads up to which the serial fused kernels are the faster
MAX_THREADS = 2  # float32 partial sums over at most this many rows, then float64


@njit(fastmath=True, inline="always", error_model="numpy", cache=True)
def _tanh(z):  # pragma: no cover - compiled
    z = min(max(z, -_CLAMP), _CLAMP)
    z2 = z * z
    p = z2 * _A13 + _A11
    p = p * z2 + _A9
    p = p * z2 + _A7
    p = p * z2 + _A5
    p = p * z2 + _A3
    p = p * z2 + _A1
    q = z2 * _B6 + _B4
    q = q * z2 + _B2
    q = q * z2 + _B0
    return p * z / q


@njit(fastmath=True, error_model="numpy", cache=True)
def _stats(z, shift):  # pragma: no cover - compiled
    """Per-lane sums of ``z - shift`` and its square over the rows of ``z [R, L]``."""
    R, L = z.shape
    s, q = np.zeros(L, np.float64), np.zeros(L, np.float64)
    bs, bq = np.zeros(L, np.float32), np.zeros(L, np.float32)
    for r0 in range(0, R, _BLOCK_ROWS):
        bs[:] = 0
        bq[:] = 0
        for r in range(r0, min(r0 + _BLOCK_ROWS, R)):
            zr = z[r]
            for j in range(L):
                v = zr[j] - shift[j]
                bs[j] += v
                bq[j] += v * v
        for j in range(L):
            s[j] += bs[j]
            q[j] += bq[j]
    return s, q


@njit(fastmath=True, error_model="numpy", cache=True)
def _affine_tanh(z, a, b, y):  # pragma: no cover - compiled
    for r in range(z.shape[0]):
        zr, yr = z[r], y[r]
        for j in range(z.shape[1]):
            yr[j] = _tanh(zr[j] * a[j] + b[j])


@njit(fastmath=True, error_model="numpy", cache=True)
def _grad_sums(gy, y, z, mu):  # pragma: no cover - compiled
    """Per-lane sums of ``g = gy (1 - y^2)`` and of ``g (z - mu)``."""
    R, L = z.shape
    sg, sgz = np.zeros(L, np.float64), np.zeros(L, np.float64)
    bg, bgz = np.zeros(L, np.float32), np.zeros(L, np.float32)
    for r0 in range(0, R, _BLOCK_ROWS):
        bg[:] = 0
        bgz[:] = 0
        for r in range(r0, min(r0 + _BLOCK_ROWS, R)):
            gr, yr, zr = gy[r], y[r], z[r]
            for j in range(L):
                g = gr[j] * (_F(1) - yr[j] * yr[j])
                bg[j] += g
                bgz[j] += g * (zr[j] - mu[j])
        for j in range(L):
            sg[j] += bg[j]
            sgz[j] += bgz[j]
    return sg, sgz


@njit(fastmath=True, error_model="numpy", cache=True)
def _grad_input(gy, y, z, mu, k, mg, c1, gz):  # pragma: no cover - compiled
    for r in range(z.shape[0]):
        gr, yr, zr, out = gy[r], y[r], z[r], gz[r]
        for j in range(z.shape[1]):
            g = gr[j] * (_F(1) - yr[j] * yr[j])
            out[j] = k[j] * (g - mg[j] - (zr[j] - mu[j]) * c1[j])


def _rows(t: torch.Tensor, lane: int) -> np.ndarray:
    """A channels-last ``[n, C, H, W]`` tensor's memory as ``float32 [R, lane]`` (no copy)."""
    return t.detach().permute(0, 2, 3, 1).reshape(-1, lane).numpy()


def _lane(n_values: int, channels: int) -> int:
    """Row length: ``channels`` times the largest ``k <= 8`` dividing the values per channel
    (longer rows vectorise better)."""
    return channels * max(k for k in range(1, 9) if n_values % k == 0)


def _per_lane(v: np.ndarray, lane: int) -> np.ndarray:
    return np.tile(v, lane // len(v))


def _per_channel(v: np.ndarray, channels: int) -> np.ndarray:
    return v.reshape(-1, channels).sum(0)


class _BNTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, batch: list):  # type: ignore[override]
        C = z.shape[1]
        N = z.numel() // C
        lane = _lane(N, C)
        z2 = _rows(z, lane)
        shift = _per_lane(z2[0, :C].astype(np.float64), lane)
        s, q = _stats(z2, shift.astype(np.float32))
        S, Q = _per_channel(s, C), _per_channel(q, C)
        d = S / N
        mu = shift[:C] + d
        var = np.maximum(Q / N - d * d, 0.0)
        r = 1.0 / np.sqrt(var + eps)
        g64, b64 = gamma.detach().double().numpy(), beta.detach().double().numpy()
        y = torch.empty_like(z, memory_format=torch.channels_last)
        _affine_tanh(z2, _per_lane((g64 * r).astype(np.float32), lane), _per_lane((b64 - mu * g64 * r).astype(np.float32), lane), _rows(y, lane))
        ctx.save_for_backward(z, y)
        ctx.stats = (mu, r, g64, lane, N)
        batch[:] = [mu, var]  # the batch statistics, for the running ones (also under no_grad)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        z, y = ctx.saved_tensors
        mu, r, g64, lane, N = ctx.stats
        C = z.shape[1]
        gy = gy.contiguous(memory_format=torch.channels_last)
        gy2, y2, z2 = _rows(gy, lane), _rows(y, lane), _rows(z, lane)
        mu_l = _per_lane(mu.astype(np.float32), lane)
        sg, sgz = _grad_sums(gy2, y2, z2, mu_l)
        SG, SGZ = _per_channel(sg, C), _per_channel(sgz, C)
        gz = torch.empty_like(z, memory_format=torch.channels_last)
        _grad_input(gy2, y2, z2, mu_l, _per_lane((g64 * r).astype(np.float32), lane), _per_lane((SG / N).astype(np.float32), lane),
                    _per_lane((r * r * SGZ / N).astype(np.float32), lane), _rows(gz, lane))
        return gz, torch.from_numpy(r * SGZ).float(), torch.from_numpy(SG).float(), None, None


def fusable(z: torch.Tensor, bn: nn.Module) -> bool:
    """Whether ``bn_tanh`` computes ``tanh(bn(z))`` here: a training-mode affine
    ``BatchNorm2d`` with running statistics and a momentum, a float32 channels-last CPU
    activation of more than one value per channel, outside autocast, on at most
    ``MAX_THREADS`` torch threads (the kernels are serial: at batch 500 they take ~11 ms a
    layer against ~30 ms for ATen's batch norm and tanh on one thread, so from about three
    threads on ATen's parallel kernels are the faster)."""
    return (
        isinstance(bn, nn.BatchNorm2d) and bn.training and bn.affine and bn.track_running_stats and bn.momentum is not None
        and z.dim() == 4 and z.device.type == "cpu" and z.dtype == torch.float32 and z.numel() > z.shape[1]
        and z.is_contiguous(memory_format=torch.channels_last) and not torch.is_autocast_enabled("cpu")
        and torch.get_num_threads() <= MAX_THREADS
    )


def bn_tanh(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``tanh(bn(z))`` for a training-mode ``bn`` (see :func:`fusable`), updating its running
    statistics as ``nn.BatchNorm2d`` does.

    Parameters
    ----------
    z : torch.Tensor
        ``float32 [n, C, H, W]``, channels-last.
    bn : nn.BatchNorm2d
        ``C`` channels, training mode.

    Returns
    -------
    torch.Tensor
        ``float32 [n, C, H, W]`` in ``(-1, 1)``, channels-last.
    """
    batch: list = []
    y = _BNTanh.apply(z, bn.weight, bn.bias, bn.eps, batch)
    mu, var = batch
    n_values = z.numel() // z.shape[1]
    with torch.no_grad():
        m = bn.momentum
        bn.running_mean.mul_(1 - m).add_(torch.from_numpy(mu).to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1 - m).add_(torch.from_numpy(var * n_values / max(n_values - 1, 1)).to(bn.running_var.dtype), alpha=m)
        bn.num_batches_tracked.add_(1)
    return y


def fast_tanh_max_error(n: int = 1 << 20) -> float:
    """Largest ``|tanh_fast(z) - tanh(z)|`` (float64 reference) over ``n`` points spread over
    [-10, 10]: the approximation's accuracy, for tests and the benchmark."""
    z = np.linspace(-10, 10, n, dtype=np.float32).reshape(-1, 8)
    y = np.empty_like(z)
    _affine_tanh(z, np.ones(8, np.float32), np.zeros(8, np.float32), y)
    return float(np.abs(y.astype(np.float64) - np.tanh(z.astype(np.float64))).max())
