"""Structural pruning: exactness of the sliced copies, FLOP budgets, relevance vs random."""

from __future__ import annotations

import functools

import pytest
import torch

from common.models.channel_estimator import ChannelEstimator, fit_estimator, predict
from common.models.complexity import count_flops
from common.models.sdnet import SDNet
from common.xrefine.budget import budget_keep, model_flops, prune_sdnet_to_budget
from common.xrefine.scores import UnitScores, unit_scores
from common.xrefine.surgery import prune_estimator, prune_sdnet
from common.xrefine.thresholds import cheapest_meeting, keep_lowest_dropped, prune_by_fraction, threshold_grid



def _sdnet(seed: int = 0, n_conv: int = 2) -> SDNet:
    torch.manual_seed(seed)
    m = SDNet(4, 2, n_conv)
    with torch.no_grad():  # non-trivial BN statistics
        for bn in m.bns:
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
    return m.eval()


def test_estimator_pruning_of_dead_units_is_exact() -> None:
    torch.manual_seed(0)
    m = ChannelEstimator(8, (6, 5, 4))
    with torch.no_grad():
        m.layers[0].weight[:, [2, 2 + 8]] = 0.0  # subcarrier 2 unused
        m.layers[2].weight[:, 3] = 0.0  # neuron 3 of hidden layer 2 feeds nothing
    x = torch.randn(10, 16)
    p = prune_estimator(m, [0, 1, 3, 4, 5, 6, 7], [range(6), [0, 1, 2, 4], range(4)])
    assert p.kept_subcarriers == (0, 1, 3, 4, 5, 6, 7) and p.hidden == (6, 4, 4)
    assert torch.allclose(p(x), m(x), atol=1e-6)
    assert model_flops(p) == 2 * (14 * 6 + 6 * 4 + 4 * 4 + 4 * 16)


def test_sdnet_pruning_of_dead_channels_and_keep_all_are_exact() -> None:
    m = _sdnet(1)
    x = torch.randn(7, 1, 9, 4)
    same = prune_sdnet(m, range(9), [range(w) for w in m.widths])
    assert torch.allclose(same(x), m(x), atol=1e-6)
    with torch.no_grad():
        m.convs[2].weight[:, 5] = 0.0  # channel 5 of convs[1] feeds nothing
    p = prune_sdnet(m, range(9), [range(8), [0, 1, 2, 3, 4, 6, 7], range(8)])
    assert p.widths == (8, 7, 8)
    assert torch.allclose(p(x).detach(), m(x).detach(), atol=1e-6)


def test_sdnet_row_pruning_slices_fc_columns() -> None:
    m = _sdnet(2, n_conv=0)
    p = prune_sdnet(m, [0, 2, 8], [range(8)])
    assert p.input_rows == (0, 2, 8) and p.fc.in_features == 3 * 4
    assert torch.equal(p.fc.weight, torch.cat([m.fc.weight[:, 0:4], m.fc.weight[:, 8:12], m.fc.weight[:, 32:36]], 1))
    assert p(torch.randn(3, 1, 9, 4)).shape == (3, 4)


@pytest.mark.parametrize("method", ["relevance", "magnitude", "random"])
@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.8])
def test_sdnet_budget_is_met_tightly_and_model_runs(method: str, fraction: float) -> None:
    m = _sdnet(3)
    x = torch.randn(64, 1, 9, 4)
    full = model_flops(m)
    budget = int(fraction * full)
    p = prune_sdnet_to_budget(m, x, budget, method, seed=5)
    assert isinstance(p, SDNet)
    flops = count_flops(p, (1, 1, 9, 4))
    assert flops <= budget
    assert p(x).shape == (64, 4) and torch.isfinite(p(x)).all()
    # tight: putting back any single removed row or channel would exceed the budget
    kept_rows = set(p.input_rows)
    for r in set(range(9)) - kept_rows:
        probe = SDNet(4, 2, 2, p.widths, sorted(kept_rows | {r}))
        assert count_flops(probe, (1, 1, 9, 4)) > budget
    for l in range(len(p.widths)):
        if p.widths[l] < m.widths[l]:
            w = list(p.widths)
            w[l] += 1
            assert count_flops(SDNet(4, 2, 2, w, p.input_rows), (1, 1, 9, 4)) > budget


def test_sdnet_budget_equal_to_a_reachable_size_is_hit_exactly() -> None:
    m = _sdnet(4)
    target = SDNet(4, 2, 2, [8, 8, 8], [1, 2, 3, 4, 5, 6, 7, 8])  # one row fewer
    budget = count_flops(target, (1, 1, 9, 4))
    scores = UnitScores(torch.tensor([-5.0] + [1.0] * 8), [torch.ones(8) * 10] * 3)
    rows, ch = budget_keep(m, scores, budget)
    assert rows.tolist() == list(range(1, 9)) and [len(c) for c in ch] == [8, 8, 8]
    assert model_flops(prune_sdnet(m, rows, ch)) == budget


def test_budget_errors() -> None:
    m = _sdnet(5)
    x = torch.randn(8, 1, 9, 4)
    with pytest.raises(ValueError, match="below the smallest"):
        prune_sdnet_to_budget(m, x, 10)
    with pytest.raises(ValueError, match="SDNet"):
        prune_sdnet_to_budget(ChannelEstimator(4), x, 1000)
    big = prune_sdnet_to_budget(m, x, 10**9)
    assert model_flops(big) == model_flops(m)


def test_keep_lowest_dropped() -> None:
    s = torch.tensor([0.5, -1.0, 2.0, 0.1, 3.0])
    assert keep_lowest_dropped(s, 0.4).tolist() == [0, 2, 4]
    assert keep_lowest_dropped(s, 1.0).tolist() == [4]  # at least one kept
    with pytest.raises(ValueError):
        keep_lowest_dropped(s, 1.5)


@functools.lru_cache(maxsize=1)
def _informative_case(seed: int = 0) -> tuple[ChannelEstimator, torch.Tensor, torch.Tensor]:
    """K = 8; targets are a mix of subcarriers 0..3; subcarriers 4..7 are independent noise."""
    K = 8
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2400, 2 * K, generator=g)
    mix = torch.randn(4, K, generator=g) / 2
    y = torch.cat([x[:, :4] @ mix, x[:, K : K + 4] @ mix], 1)
    x[:, [4, 5, 6, 7, 12, 13, 14, 15]] *= 2.0  # noise inputs are *larger*: magnitude of x alone would mislead
    torch.manual_seed(seed)
    m = ChannelEstimator(K, (24, 24, 24))
    fit_estimator(m, x, y, epochs=12, batch_size=64, lr=3e-3, generator=g)
    return m, x, y


def test_relevance_pruning_no_worse_than_random() -> None:
    m, x, y = _informative_case()
    rel = unit_scores(m, "relevance", x[:500])
    assert set(keep_lowest_dropped(rel.inputs, 0.5).tolist()) == {0, 1, 2, 3}

    def mse_after(sc: UnitScores) -> float:
        p = prune_by_fraction(m, sc, 0.5, 0.25)
        fit_estimator(p, x[:1000], y[:1000], epochs=1, batch_size=64, lr=1e-3, generator=torch.Generator().manual_seed(1))
        return float(((predict(p, x[1000:]) - y[1000:]) ** 2).mean())

    err_rel = mse_after(rel)
    err_rand = [mse_after(unit_scores(m, "random", seed=s)) for s in range(4)]
    assert err_rel <= min(err_rand)


def test_threshold_grid_and_cheapest_meeting() -> None:
    m, x, y = _informative_case()
    scores = {"relevance": unit_scores(m, "relevance", x[:300]), "random": unit_scores(m, "random", seed=2)}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"mse": float(((predict(model, x[2000:]) - y[2000:]) ** 2).mean())}

    rows = threshold_grid(m, scores, [0.0, 0.5], [0.0, 0.5], lambda p: None, evaluate)
    assert len(rows) == 8
    assert all(r["mse"] == r["mse_pre"] for r in rows)  # no retraining here: before == after
    full = next(r for r in rows if r["method"] == "relevance" and r["input_drop"] == 0 and r["hidden_drop"] == 0)
    assert full["flops"] == model_flops(m)
    same_budget = {r["flops"] for r in rows if r["input_drop"] == 0.5 and r["hidden_drop"] == 0.5}
    assert len(same_budget) == 1  # criteria compared at equal FLOPs
    best = cheapest_meeting(rows, "mse", 1.5 * full["mse"], "relevance")
    assert best is not None and best["flops"] < full["flops"] and best["mse"] <= 1.5 * full["mse"]
    assert cheapest_meeting(rows, "mse", -1.0) is None


def test_sdnet_with_column_upsampling_prunes_to_budget() -> None:
    torch.manual_seed(6)
    m = SDNet(4, 2, 1, col_upsample=2).eval()
    x = torch.randn(32, 1, 9, 4)
    budget = model_flops(m) // 3
    p = prune_sdnet_to_budget(m, x, budget, "relevance")
    assert isinstance(p, SDNet) and p.col_upsample == 2
    assert model_flops(p) <= budget and p(x).shape == (32, 4)
    same = prune_sdnet(m, range(9), [range(w) for w in m.widths])
    assert torch.allclose(same(x), m(x), atol=1e-6)
