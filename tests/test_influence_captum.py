"""captum's ArnoldiInfluenceFunction as an independent oracle for our Arnoldi influence.

captum reports ``+∇L(z_t)^T H^{-1} ∇L(z)`` (positive = helpful) where we report
``-∇L(z_t)^T H^{-1} ∇L(z)`` (negative = beneficial), and it regularises the Krylov
restriction with absolute tolerances (``hessian_reg``, ``hessian_inverse_tol``), so the
comparison is on sign-flipped ranks, not on raw values.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import TensorDataset

from common.influence import LowRankInverseHessian, arnoldi, bce_bits, hvp_operator, influence_scores, mean_grad, per_sample_grads

captum_arnoldi = pytest.importorskip("captum.influence._core.arnoldi_influence_function")


def loss_none(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return bce_bits(out, y)


def test_matches_captum_arnoldi_up_to_sign(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, d = 120, 6
    X = torch.randn(n, d, generator=g)
    Y = ((X @ torch.randn(d, generator=g) + 0.5 * torch.randn(n, generator=g)) > 0).float().unsqueeze(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, 10), nn.Tanh(), nn.Linear(10, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(300):
        opt.zero_grad()
        loss_none(model(X), Y).mean().backward()
        opt.step()
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    Xt, Yt = X[:4] + 0.2, 1 - Y[:4]

    oracle = captum_arnoldi.ArnoldiInfluenceFunction(
        model, TensorDataset(X, Y), str(ckpt), loss_fn=loss_none, batch_size=n,
        projection_dim=20, arnoldi_dim=60, seed=0, hessian_reg=1e-4,
    )
    theirs = oracle.influence((Xt, Yt))  # [4, n], positive = helpful

    P = sum(p.numel() for p in model.parameters())
    res = arnoldi(hvp_operator(model, loss_none, X, Y), P, n_steps=60, k=20, generator=torch.Generator().manual_seed(1))
    inv = LowRankInverseHessian.from_arnoldi(res)
    G = per_sample_grads(model, loss_none, X, Y)
    for i in range(4):
        ours = influence_scores("classical", mean_grad(model, loss_none, Xt[i : i + 1], Yt[i : i + 1]), G, inv)
        rho = spearmanr(-ours.numpy(), theirs[i].detach().numpy()).statistic
        assert rho >= 0.9, (i, rho)
        # the most beneficial samples agree (ours lowest = theirs highest)
        top_ours = set(torch.argsort(ours)[:10].tolist())
        top_theirs = set(torch.argsort(theirs[i], descending=True)[:10].tolist())
        assert len(top_ours & top_theirs) >= 7
