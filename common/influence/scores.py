"""Influence scores of training samples on a target loss, and the engine that computes them.

Paper: Tuononen, Penttinen & Hautamäki, "Targeted Fine-Tuning of DNN-Based Receivers via
Influence Functions" (2025): the classical influence of Koh & Liang (ICML 2017, ``I_up,loss``),
loss-relative influence (RelatIF, Barshan et al., AISTATS 2020; the paper's ``ℓ``-relative,
Fig. 3-4) and Newfluence with its self-influence correction, on Arnoldi IHVPs
(:mod:`common.influence.ihvp`). The text at hand keeps no equation numbers; each score is
written out below and in the comment where it is computed.

Sign convention (the one used everywhere in this package)
---------------------------------------------------------
Every influence score is the predicted *change of the target loss* when the training
sample ``z`` is up-weighted, ``I(z, t) = dL(z_t)/dε``:

    classical   I(z, t) = -∇L(z_t)^T H^{-1} ∇L(z)          (Koh & Liang, I_up,loss)

so **negative = beneficial** (up-weighting / fine-tuning on ``z`` lowers the target
loss) and **positive = harmful**. Removing ``z`` from ``n`` training samples changes the
target loss by about ``-I(z, t) / n``. ``H`` is the Hessian of the *mean* training loss
(plus ``damping * I``). captum's ``ArnoldiInfluenceFunction`` reports the opposite
sign (``+∇L(z_t)^T H^{-1} ∇L(z)``).

The variants keep the sign of the classical score:

- ``first_order``: ``H = I``, ``I(z, t) = -∇L(z_t)^T ∇L(z)``;
- ``relatif`` (ℓ-relative): ``I(z, t) / sqrt(∇L(z)^T H^{-1} ∇L(z))``: the influence
  per unit of the sample's own self-influence (so high-loss outliers do not dominate);
- ``newfluence``: ``I(z, t) / (1 - s(z))`` with the leverage
  ``s(z) = ∇L(z)^T H^{-1} ∇L(z) / n``: the exact Sherman–Morrison leave-one-out
  correction when ``z``'s own share of the Hessian is approximated by ``∇L(z)∇L(z)^T``
  (the self-influence correction of the paper); ``1 - s`` is floored at ``0.05``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from common.influence.gradients import hvp_operator, per_sample_grads
from common.influence.ihvp import LowRankInverseHessian, arnoldi
from common.influence.losses import LossFn

__all__ = ["METHODS", "influence_scores", "InfluenceEngine", "influence_flops"]

#: the influence scores :func:`influence_scores` knows
METHODS: tuple[str, ...] = ("first_order", "classical", "relatif", "newfluence")


def influence_scores(
    method: str,
    g_target: torch.Tensor,
    g_train: torch.Tensor,
    inv_hessian: LowRankInverseHessian | None = None,
    n_train: int | None = None,
    newfluence_floor: float = 0.05,
) -> torch.Tensor:
    """Influence of every training sample on the target loss (negative = beneficial).

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    g_target : torch.Tensor
        ``[P]`` gradient of the target loss (mean over the target instance; for several
        targets, the mean of their gradients — every score is linear in it).
    g_train : torch.Tensor
        ``[N, P]`` per-sample training gradients.
    inv_hessian : LowRankInverseHessian, optional
        Required except for ``first_order``.
    n_train : int, optional
        Training-set size ``n`` for ``newfluence``'s leverage; default ``N``.
    newfluence_floor : float, default 0.05
        Lower clamp of ``1 - s(z)``.

    Returns
    -------
    torch.Tensor
        ``float [N]`` scores, in target-loss units per unit up-weight (see module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"unknown influence method {method!r}; expected one of {list(METHODS)}")
    if g_target.dim() != 1 or g_train.dim() != 2 or g_train.shape[1] != g_target.shape[0]:
        raise ValueError(f"expected g_target [P] and g_train [N, P], got {tuple(g_target.shape)} and {tuple(g_train.shape)}")
    if method == "first_order":
        return -(g_train @ g_target.to(g_train.dtype))  # H = I: -g_t^T g_z
    if inv_hessian is None:
        raise ValueError(f"method {method!r} needs inv_hessian")
    d = inv_hessian.inv_diag
    pt = inv_hessian.project(g_target)  # [k]
    pz = inv_hessian.project(g_train)  # [N, k]
    classical = -(pz @ (d * pt))  # Koh & Liang I_up,loss: -g_t^T H^-1 g_z
    if method == "classical":
        return classical
    self_inf = (pz * pz * d).sum(1)  # g_z^T H^-1 g_z >= 0
    if method == "relatif":
        return classical / self_inf.clamp_min(1e-30).sqrt()  # RelatIF: I / sqrt(g_z^T H^-1 g_z)
    n = g_train.shape[0] if n_train is None else int(n_train)
    return classical / (1.0 - self_inf / n).clamp_min(newfluence_floor)  # Newfluence: I / (1 - s(z))


@dataclass
class InfluenceEngine:
    """Everything that depends only on the model and the training set (reused per target).

    Build with :meth:`fit`; then :meth:`scores` for any target gradient.

    Attributes
    ----------
    g_train : torch.Tensor
        ``[N, P]`` per-sample training gradients.
    inv_hessian : LowRankInverseHessian or None
        None for ``first_order`` only.
    n_hvp : int
        Hessian-vector products evaluated (each over ``n_hessian`` samples).
    n_hessian : int
        Training samples in the Hessian.
    """

    g_train: torch.Tensor
    inv_hessian: LowRankInverseHessian | None
    n_hvp: int
    n_hessian: int

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        need_hessian: bool = True,
        k: int = 40,
        n_steps: int = 100,
        damping: float = 1e-3,
        tol: float = 1e-6,
        hessian_samples: int | None = None,
        generator: torch.Generator | None = None,
        chunk_size: int = 256,
        inverse: tuple[LowRankInverseHessian, int] | None = None,
    ) -> InfluenceEngine:
        """Per-sample gradients and (optionally) the Arnoldi inverse Hessian.

        ``inputs``, ``targets`` are the ``[N, ...]`` training samples. ``hessian_samples``
        (default all) takes the Hessian on the first that many training samples;
        ``damping`` is added to ``|λ|`` when inverting (not inside the Arnoldi operator,
        which sees the plain Hessian). ``inverse``: ``(inv_hessian, n_hvp)`` of an earlier
        fit of the same model and samples (a resumed study kept them), used instead of
        running Arnoldi again.
        """
        G = per_sample_grads(model, loss_fn, inputs, targets, chunk_size=chunk_size)
        if not need_hessian:
            return cls(G, None, 0, 0)
        nh = inputs.shape[0] if hessian_samples is None else min(int(hessian_samples), inputs.shape[0])
        if inverse is not None:
            return cls(G, inverse[0], inverse[1], nh)
        hvp = hvp_operator(model, loss_fn, inputs[:nh], targets[:nh], chunk_size=max(chunk_size, 512))
        res = arnoldi(hvp, G.shape[1], n_steps=n_steps, k=k, tol=tol, generator=generator, dtype=G.dtype)
        return cls(G, LowRankInverseHessian.from_arnoldi(res, damping), res.n_hvp, nh)

    def scores(self, method: str, g_target: torch.Tensor) -> torch.Tensor:
        """:func:`influence_scores` ``[N]`` of every training sample for ``g_target [P]``."""
        return influence_scores(method, g_target, self.g_train, self.inv_hessian, n_train=self.g_train.shape[0])


def influence_flops(fwd_flops: int, n_params: int, n_train: int, n_hessian: int, n_hvp: int, n_target_samples: int) -> int:
    """FLOPs of scoring: per-sample gradients (3 forward-equivalents each), HVPs
    (forward-over-reverse, ~5 each), Gram–Schmidt (``4 P i`` at step ``i``), target
    gradients and the projections/dot products (``2 N P``).

    ``fwd_flops`` is one sample's forward pass; the result counts floating-point operations.
    """
    gs = sum(4 * n_params * (i + 1) for i in range(n_hvp))
    return int(3 * fwd_flops * (n_train + n_target_samples) + 5 * fwd_flops * n_hessian * n_hvp + gs + 4 * n_train * n_params)
