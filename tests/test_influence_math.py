"""Influence maths: Arnoldi IHVP, scores, sign convention, selection, BCE-on-bits."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from common.influence import (
    LowRankInverseHessian,
    arnoldi,
    bce_bits,
    bits_from_logits,
    exact_hessian,
    flat_params,
    hvp_operator,
    influence_scores,
    instance_ber,
    mean_grad,
    per_sample_grads,
    relative_ber_gap,
    second_order_update,
    select_samples,
    select_targets,
    tanh_to_bit_logits,
)

DAMP = 1e-2  # L2 weight of the training objective = Hessian damping


def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return bce_bits(out, y)


def make_problem(n: int = 60, d: int = 3, hidden: int = 6, seed: int = 0, dtype=torch.float64, damp: float = DAMP):
    """A tiny MLP classifier trained to its (L2-regularised) optimum with L-BFGS."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(d, generator=g, dtype=dtype)
    Y = ((X @ w + 0.7 * torch.randn(n, generator=g, dtype=dtype)) > 0).to(dtype).unsqueeze(1)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, 1)).to(dtype)
    train(model, X, Y, damp=damp)
    return model, X, Y


def train(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor | None = None, damp: float = DAMP) -> None:
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            history_size=50, line_search_fn="strong_wolfe")
    w = torch.ones(X.shape[0], dtype=X.dtype) if weights is None else weights

    def closure():
        opt.zero_grad()
        loss = (loss_fn(model(X), Y) * w).sum() / X.shape[0] + 0.5 * damp * flat_params_live(model).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)


def flat_params_live(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------------ Arnoldi vs exact
def test_arnoldi_ihvp_exact_on_quadratic_full_rank():
    g = torch.Generator().manual_seed(1)
    P = 12
    M = torch.randn(P, P, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(P, dtype=torch.float64)  # Hessian of 0.5 θ^T A θ
    res = arnoldi(lambda v: A @ v, P, n_steps=P, k=P, tol=1e-12, generator=g, dtype=torch.float64)
    inv = LowRankInverseHessian.from_arnoldi(res)
    v = torch.randn(P, generator=g, dtype=torch.float64)
    assert torch.allclose(inv.apply(v), torch.linalg.solve(A, v), rtol=1e-7, atol=1e-9)


def test_arnoldi_top_k_eigenpairs_on_quadratic():
    g = torch.Generator().manual_seed(2)
    P, k = 30, 4
    Qm, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([50.0, 30.0, 20.0, 10.0], dtype=torch.float64), torch.linspace(0.1, 1.0, P - 4, dtype=torch.float64)])
    A = (Qm * lam) @ Qm.T
    res = arnoldi(lambda v: A @ v, P, n_steps=int(2.5 * k) + 10, k=k, generator=g, dtype=torch.float64)
    assert torch.allclose(res.eigvals, lam[:4], rtol=1e-6)
    inv = LowRankInverseHessian.from_arnoldi(res)
    v = Qm[:, :4] @ torch.randn(4, generator=g, dtype=torch.float64)  # in the top-k eigenspace
    assert torch.allclose(inv.apply(v), torch.linalg.solve(A, v), rtol=1e-5, atol=1e-8)


def test_arnoldi_stops_on_exhausted_krylov_space():
    A = torch.diag(torch.tensor([3.0, 2.0, 1.0] + [0.0] * 7, dtype=torch.float64))
    res = arnoldi(lambda v: A @ v, 10, n_steps=10, k=10, tol=1e-8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert res.n_steps <= 4  # rank 3 plus the start vector's null-space component


def test_arnoldi_ihvp_exact_on_tiny_net():
    model, X, Y = make_problem()
    H = exact_hessian(model, loss_fn, X, Y, damping=DAMP)
    P = H.shape[0]
    hvp = hvp_operator(model, loss_fn, X, Y, damping=DAMP, chunk_size=25)
    v = torch.randn(P, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(hvp(v), H @ v, rtol=1e-8, atol=1e-10)
    res = arnoldi(hvp, P, n_steps=P, k=P, tol=1e-12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inv = LowRankInverseHessian.from_arnoldi(res)
    assert bool((res.eigvals > 0).all())  # trained to the optimum of a damped objective
    assert torch.allclose(inv.apply(v), torch.linalg.solve(H, v), rtol=1e-6, atol=1e-8)


def test_arnoldi_influence_rank_matches_exact_inverse():
    damp = 0.1  # the damping keeps the spectrum's tail (outside the top 40) flat
    model, X, Y = make_problem(n=200, d=8, hidden=16, seed=5, dtype=torch.float32, damp=damp)  # P = 161
    H = exact_hessian(model, loss_fn, X, Y, damping=damp).double()
    G = per_sample_grads(model, loss_fn, X, Y)
    g_t = mean_grad(model, loss_fn, X[:5], 1 - Y[:5])  # a target the model gets wrong
    exact = -(G.double() @ torch.linalg.solve(H, g_t.double()))
    hvp = hvp_operator(model, loss_fn, X, Y, damping=damp)
    res = arnoldi(hvp, H.shape[0], n_steps=100, k=40, generator=torch.Generator().manual_seed(6))
    approx = influence_scores("classical", g_t, G, LowRankInverseHessian.from_arnoldi(res))
    rho = spearmanr(exact.numpy(), approx.numpy()).statistic
    assert rho >= 0.9, rho


# ------------------------------------------------------------------ sign and meaning
def test_duplicate_of_target_is_most_beneficial():
    model, X, Y = make_problem(n=80, seed=7)
    losses = loss_fn(model(X), Y)
    t = int(torch.argmax(losses))  # worst-fitted sample, then a copy of it in training
    Xd, Yd = torch.cat([X, X[t : t + 1]]), torch.cat([Y, Y[t : t + 1]])
    G = per_sample_grads(model, loss_fn, Xd, Yd)
    g_t = mean_grad(model, loss_fn, X[t : t + 1], Y[t : t + 1])
    inv = LowRankInverseHessian.from_dense(exact_hessian(model, loss_fn, Xd, Yd, damping=DAMP))
    for method in ("relatif", "classical", "newfluence"):
        s = influence_scores(method, g_t, G, inv, n_train=Xd.shape[0])
        top = set(select_samples(s, 2, "beneficial").tolist())
        assert {t, Xd.shape[0] - 1} == top, (method, top)
        assert float(s[-1]) < 0  # beneficial = negative
    hvp = hvp_operator(model, loss_fn, Xd, Yd, damping=DAMP)
    res = arnoldi(hvp, G.shape[1], n_steps=G.shape[1], k=G.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = influence_scores("relatif", g_t, G, LowRankInverseHessian.from_arnoldi(res))
    assert set(select_samples(s, 2).tolist()) == {t, Xd.shape[0] - 1}


def test_influence_agrees_with_leave_one_out_retraining():
    n = 40
    model, X, Y = make_problem(n=n, d=2, hidden=3, seed=11)
    xt, yt = X[:1] + 0.3, 1 - Y[:1]  # a held-out target the model gets wrong
    base = float(loss_fn(model(xt), yt).detach())
    G = per_sample_grads(model, loss_fn, X, Y)
    g_t = mean_grad(model, loss_fn, xt, yt)
    inv = LowRankInverseHessian.from_dense(exact_hessian(model, loss_fn, X, Y, damping=DAMP))
    pred = -influence_scores("classical", g_t, G, inv) / n  # predicted change on removal
    loo = []
    for i in range(n):
        m = copy.deepcopy(model)
        w = torch.ones(n, dtype=X.dtype)
        w[i] = 0.0
        train(m, X, Y, weights=w)
        loo.append(float(loss_fn(m(xt), yt).detach()) - base)
    loo = np.array(loo)
    big = np.abs(pred.numpy()) > 0.2 * np.abs(pred.numpy()).max()
    assert np.mean(np.sign(loo[big]) == np.sign(pred.numpy()[big])) >= 0.9
    assert spearmanr(loo, pred.numpy()).statistic >= 0.85


def test_second_order_update_lowers_target_loss_for_beneficial_selection():
    model, X, Y = make_problem(n=80, seed=13)
    losses = loss_fn(model(X), Y)
    t = torch.argsort(losses, descending=True)[:3]
    g_t = mean_grad(model, loss_fn, X[t], Y[t])
    G = per_sample_grads(model, loss_fn, X, Y)
    inv = LowRankInverseHessian.from_dense(exact_hessian(model, loss_fn, X, Y, damping=DAMP))
    s = influence_scores("classical", g_t, G, inv)
    before = float(loss_fn(model(X[t]), Y[t]).mean())
    sel = select_samples(s, 10, "beneficial")
    second_order_update(model, loss_fn, X[sel], Y[sel], inv, steps=1, lr=0.05)
    assert float(loss_fn(model(X[t]), Y[t]).mean()) < before


# ------------------------------------------------------------------ selection, targets
def test_selection_budget_respected_and_distinct():
    s = torch.tensor([0.3, -1.0, 2.0, -0.5, 0.0, 1.5])
    assert select_samples(s, 2, "beneficial").tolist() == [1, 3]
    assert select_samples(s, 2, "harmful").tolist() == [2, 5]
    r = select_samples(s, 4, "random", torch.Generator().manual_seed(0))
    assert r.shape == (4,) and len(set(r.tolist())) == 4
    with pytest.raises(ValueError, match="budget"):
        select_samples(s, 7)
    with pytest.raises(ValueError, match="budget"):
        select_samples(s, 0)


def test_target_selection_gap_and_genie_floor():
    ber = np.array([0.02, 0.10, 0.001, 0.05, 0.3])
    genie = np.array([0.01, 0.05, 0.0001, 0.05, 0.0005])
    np.testing.assert_allclose(relative_ber_gap(ber, genie), [1.0, 1.0, 9.0, 0.0, 599.0])
    assert select_targets(ber, genie, k=2).tolist() == [0, 1]  # 2 and 4 have BER_genie < 1e-3
    assert select_targets(ber, genie, k=5, min_genie_ber=0).tolist()[:2] == [4, 2]


def test_instance_ber_groups_consecutive_samples():
    true = torch.zeros(6, 4, dtype=torch.uint8)
    pred = true.clone()
    pred[0, 0] = 1
    pred[5, :] = 1
    np.testing.assert_allclose(instance_ber(pred, true, 2), [1 / 8, 0.0, 4 / 8])
    with pytest.raises(ValueError):
        instance_ber(pred, true, 4)


# ------------------------------------------------------------------ BCE on bits vs BER
def test_bce_on_bits_consistent_with_hard_decision_ber():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 16, generator=g)
    bits = (torch.rand(50, 16, generator=g) < 0.5).to(torch.uint8)
    per_bit = bce_bits(logits.reshape(-1, 1), bits.reshape(-1, 1))
    wrong = bits_from_logits(logits).reshape(-1) != bits.reshape(-1)
    # a bit costs more than 1 bit of cross-entropy exactly when its hard decision is wrong
    assert torch.equal(per_bit > 1.0, wrong)
    ber = wrong.reshape(50, 16).float().mean(1)
    assert bool((ber <= bce_bits(logits, bits) + 1e-7).all())
    # a zero logit is a coin flip: exactly one bit
    assert torch.allclose(bce_bits(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.uint8)), torch.ones(2))


def test_tanh_logits_decide_like_the_detector_sign_rule():
    o = torch.tensor([[0.9, -0.2, 0.0001, -0.9999]])
    assert bits_from_logits(tanh_to_bit_logits(o)).tolist() == [[0, 1, 0, 1]]  # bit = (x < 0)
    # o = tanh(L/2): o = 0.5 means P(b=0) = 0.75
    assert torch.allclose(torch.sigmoid(tanh_to_bit_logits(torch.tensor([0.5]))), torch.tensor([0.25]))


def test_bce_bits_rejects_bad_shapes_and_empty_masks():
    with pytest.raises(ValueError, match="same shape"):
        bce_bits(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mask"):
        bce_bits(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="method"):
        influence_scores("tracin", torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="inv_hessian"):
        influence_scores("relatif", torch.zeros(3), torch.zeros(2, 3))
