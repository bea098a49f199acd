"""The fused batch norm + tanh computes what ``tanh(nn.BatchNorm2d(z))`` computes, in float64
by torch's own modules, and is what SDNet trains through on one CPU thread."""

from __future__ import annotations

import copy

import pytest
import torch

from common.learngene.training import conv_fast_layout, mse_loss
from common.models.bn_tanh import MAX_THREADS, bn_tanh, fast_tanh_max_error, fusable
from common.models.sdnet import SDNet
from common.runtime import torch_threads


def test_fast_tanh_is_within_3e7_of_tanh() -> None:
    assert fast_tanh_max_error() <= 3e-7


@pytest.mark.parametrize("channels,shape", [(8, (37, 13, 16)), (1, (20, 65, 16)), (5, (3, 7, 9))])
def test_forward_gradients_and_running_statistics_equal_batchnorm_then_tanh(channels: int, shape: tuple[int, int, int]) -> None:
    n, h, w = shape
    g = torch.Generator().manual_seed(channels)
    z = (torch.randn(n, channels, h, w, generator=g) * 3 + 5).to(memory_format=torch.channels_last)  # offset: no cancellation
    ref = torch.nn.BatchNorm2d(channels).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2.0, generator=g)
        ref.bias.uniform_(-1.0, 1.0, generator=g)
    fused = copy.deepcopy(ref).float()
    gy = torch.randn(n, channels, h, w, generator=g, dtype=torch.float64)
    with torch_threads(1):
        for _ in range(2):  # twice: running statistics accumulate
            z64 = z.double().requires_grad_()
            y64 = torch.tanh(ref(z64))
            d64 = torch.autograd.grad(y64, (z64, ref.weight, ref.bias), gy)
            z32 = z.clone().requires_grad_()
            assert fusable(z32, fused)
            y32 = bn_tanh(z32, fused)
            d32 = torch.autograd.grad(y32, (z32, fused.weight, fused.bias), gy.float())
    assert y32.is_contiguous(memory_format=torch.channels_last)
    assert (y32.double() - y64).abs().max() < 2e-6
    for a, b in zip(d32, d64):
        assert (a.double() - b).abs().max() <= 2e-5 * b.abs().max()
    assert torch.allclose(fused.running_mean.double(), ref.running_mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(fused.running_var.double(), ref.running_var, rtol=1e-6, atol=1e-6)
    assert int(fused.num_batches_tracked) == int(ref.num_batches_tracked) == 2


def test_only_where_it_computes_the_same_thing() -> None:
    bn = torch.nn.BatchNorm2d(8)
    z = torch.randn(4, 8, 5, 6).to(memory_format=torch.channels_last)
    with torch_threads(1):
        assert fusable(z, bn)
        assert not fusable(z.contiguous(), bn)  # NCHW
        assert not fusable(z.double(), bn)
        assert not fusable(z, bn.eval())  # running statistics: the module's own path
        bn.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fusable(z, bn)
        assert not fusable(z, torch.nn.BatchNorm2d(8, momentum=None))  # cumulative average
    with torch_threads(MAX_THREADS + 1):
        assert not fusable(z, bn)


def test_sdnet_trains_through_it_inside_the_training_layout_and_not_outside() -> None:
    torch.manual_seed(0)
    model = SDNet(4, 2, 2)
    X, Y = torch.randn(16, 1, 9, 4), torch.rand(16, 4) * 2 - 1
    with torch_threads(1):
        with conv_fast_layout(model, X) as Xc:
            out = model(Xc)
            nodes, stack = set(), [out.grad_fn]
            while stack:
                f = stack.pop()
                if f is not None and f not in nodes:
                    nodes.add(f)
                    stack += [nf for nf, _ in f.next_functions]
            assert sum(type(f).__name__ == "_BNTanhBackward" for f in nodes) == model.n_conv + 2
            mse_loss(out, Y).backward()
        assert model.fuse_bn_tanh is False
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        names = {type(model(X).grad_fn).__name__}
    assert "_BNTanhBackward" not in names


def test_second_order_gradients_are_refused_not_wrong() -> None:
    z = torch.randn(4, 8, 5, 6).to(memory_format=torch.channels_last).requires_grad_()
    with torch_threads(1):
        y = bn_tanh(z, torch.nn.BatchNorm2d(8))
        (gz,) = torch.autograd.grad(y.sum(), z, create_graph=True)
        with pytest.raises(RuntimeError):
            torch.autograd.grad(gz.sum(), z)
