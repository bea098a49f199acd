"""LRP-epsilon with sign stabilization: conservation, captum agreement, ignored inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.models.channel_estimator import ChannelEstimator, fit_estimator
from common.xrefine.lrp import lrp_epsilon
from common.xrefine.relevance import classify_units, relevance_profile



def _mlp(seed: int, bias: bool = True, d_in: int = 6, d_out: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, 10, bias=bias), nn.ReLU(), nn.Linear(10, 8, bias=bias), nn.ReLU(), nn.Linear(8, d_out, bias=bias)
    )


def test_conservation_without_bias_is_exact() -> None:
    # no bias, tiny eps: sum_j R_in,j = sum_o y_o per sample (signed start) and sum_o |y_o| (abs start)
    model = _mlp(0, bias=False)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    y = model(x).detach()
    r_signed = lrp_epsilon(model, x, epsilon=1e-9, output_relevance="signed")
    assert torch.allclose(r_signed[0].sum(1), y.sum(1), rtol=1e-4, atol=1e-5)
    r_abs = lrp_epsilon(model, x, epsilon=1e-9, output_relevance="abs")
    assert torch.allclose(r_abs[0].sum(1), y.abs().sum(1), rtol=1e-4, atol=1e-5)
    for hidden in r_abs[1:-1]:  # every layer carries the same total
        assert torch.allclose(hidden.sum(1), y.abs().sum(1), rtol=1e-4, atol=1e-5)


def test_conservation_with_bias_and_eps_loses_exactly_the_absorbed_part() -> None:
    # per layer: sum_j R_j = sum_k R_k (z_k - b_k) / (z_k + eps sign z_k)
    model = _mlp(2, bias=True)
    eps = 0.1
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(3))
    rel = lrp_epsilon(model, x, epsilon=eps)
    last = model[4]
    a = torch.relu(model[2](torch.relu(model[0](x)))).detach()
    z = last(a).detach()
    sign = torch.where(z >= 0, 1.0, -1.0)
    expect = (rel[-1] * (z - last.bias.detach()) / (z + eps * sign)).sum(1)
    assert torch.allclose(rel[-2].sum(1), expect, rtol=1e-5, atol=1e-6)
    # and the absorbed part is not zero here: the check above can fail
    assert not torch.allclose(rel[-2].sum(1), rel[-1].sum(1), rtol=1e-3)


@pytest.mark.parametrize("eps", [1e-9, 1e-2, 0.5])
def test_agrees_with_captum_lrp_epsilon(eps: float) -> None:
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = _mlp(4).eval()
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(5))
    y = model(x).detach()
    total = torch.zeros_like(x)
    for o in range(4):
        # captum 0.9 keeps state between attribute() calls of one LRP object (a second
        # call on the same input gives different numbers): fresh rules and LRP per target
        for m in model:
            if isinstance(m, nn.Linear):
                m.rule = EpsilonRule(epsilon=eps)
        ref = LRP(model).attribute(x.clone().requires_grad_(True), target=o).detach()
        onehot = torch.zeros_like(y)
        onehot[:, o] = 1.0
        mine = lrp_epsilon(model, x, epsilon=eps, output_relevance=onehot * y)[0]
        assert torch.allclose(mine, ref, rtol=1e-4, atol=1e-6)
        total += ref
    # all outputs at once (signed start) = sum of captum's per-target decompositions
    assert torch.allclose(lrp_epsilon(model, x, epsilon=eps, output_relevance="signed")[0], total, rtol=1e-4, atol=1e-5)


def test_zero_weight_input_gets_zero_relevance() -> None:
    model = _mlp(6)
    with torch.no_grad():
        model[0].weight[:, 2] = 0.0
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(7)) + 1.0
    prof = relevance_profile(model, x)
    assert float(prof.inputs_abs[2]) == 0.0
    assert float(prof.inputs_abs.sum()) > 0.1


def test_trained_estimator_ignores_a_pure_noise_subcarrier() -> None:
    # targets depend on subcarriers 0..5 only; subcarrier 6 and 7 inputs are independent noise
    K = 8
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2000, 2 * K, generator=g)
    y = torch.zeros(2000, 2 * K)
    useful = [0, 1, 2, 3, 4, 5]
    for k in useful:
        y[:, k] = x[:, k]
        y[:, k + K] = x[:, k + K]
    torch.manual_seed(9)
    model = ChannelEstimator(K, (32, 32, 32))
    fit_estimator(model, x, y, epochs=25, batch_size=64, lr=3e-3, generator=g)
    prof = relevance_profile(model, x[:500])
    share = prof.inputs_abs / prof.inputs_abs.sum()
    assert float(share[6:].max()) < 0.25 * float(share[useful].min())
    classes = classify_units(prof.inputs, neutral=0.1)
    assert classes[6] in ("neutral", "harmful") and classes[7] in ("neutral", "harmful")
    assert all(classes[k] in ("reliable", "contributing") for k in useful)


def test_classify_units_thresholds() -> None:
    s = torch.tensor([1.0, 0.6, 0.3, 0.01, -0.02, -0.4])
    assert classify_units(s) == ["reliable", "reliable", "contributing", "neutral", "neutral", "harmful"]
    with pytest.raises(ValueError, match="neutral"):
        classify_units(s, neutral=0.6, reliable=0.5)


def test_bad_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="epsilon"):
        lrp_epsilon(_mlp(0), torch.randn(2, 6), epsilon=0.0)
    with pytest.raises(ValueError, match="output_relevance"):
        lrp_epsilon(_mlp(0), torch.randn(2, 6), output_relevance="max")
    with pytest.raises(ValueError, match="no LRP stages"):
        lrp_epsilon(nn.GRU(3, 3), torch.randn(2, 3))
