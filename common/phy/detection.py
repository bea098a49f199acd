"""Classical MIMO detectors: ZF (eq. 9), MMSE (eq. 11), genie LMMSE, exact ML (eq. 6), and
ML on the ZF estimate under a known or fitted error covariance (``covariance_ml_detect``).

All detectors work on complex tensors; the real-valued forms of eq. (8)-(11) with the
block matrix of eq. (2) are algebraically identical to the complex ones used here
(for MMSE because the real noise variance per dimension, ``sigma_n^2 / 2``, over the
real symbol variance, ``1 / 2``, equals ``sigma_n^2``). Symbols are unit power
(``common.phy.modulation``).
"""

from __future__ import annotations

import itertools

import torch

from common.phy.modulation import hard_qpsk, qpsk_constellation

__all__ = ["zf", "mmse", "lmmse_genie", "ml_detect", "covariance_ml_detect", "zf_error_covariance", "hard_qpsk", "ML_MAX_CANDIDATES"]

#: exact ML enumerates 4**n_t candidates; refuse beyond this many
ML_MAX_CANDIDATES: int = 4**8


def _check(y: torch.Tensor, H: torch.Tensor) -> None:
    if H.dim() != 3 or y.dim() != 2:
        raise ValueError(f"expected y [n, n_r] and H [n, n_r, n_t], got {tuple(y.shape)} and {tuple(H.shape)}")
    if y.shape[0] != H.shape[0] or y.shape[1] != H.shape[1]:
        raise ValueError(f"y {tuple(y.shape)} does not match H {tuple(H.shape)}")
    if not (y.is_complex() and H.is_complex()):
        raise ValueError("y and H must be complex tensors")


def _regularised_solve(y: torch.Tensor, H: torch.Tensor, reg: float) -> torch.Tensor:
    Hd = H.to(torch.complex128)
    HH = Hd.conj().transpose(-1, -2)
    G = HH @ Hd
    if reg:
        G = G + reg * torch.eye(H.shape[-1], dtype=G.dtype)
    rhs = HH @ y.to(torch.complex128).unsqueeze(-1)
    return torch.linalg.solve(G, rhs).squeeze(-1).to(torch.complex64)


def zf(y: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Zero-forcing estimate (eq. 9): ``x = (H^H H)^{-1} H^H y``.

    Parameters
    ----------
    y : torch.Tensor
        ``complex [n, n_r]`` received data vectors.
    H : torch.Tensor
        ``complex [n, n_r, n_t]`` channel (the LS estimate in the paper).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_t]`` soft symbol estimates.
    """
    _check(y, H)
    # eq. (9): x_ZF = (H^T H)^{-1} H^T y  (complex form)
    return _regularised_solve(y, H, 0.0)


def mmse(y: torch.Tensor, H: torch.Tensor, noise_var: float) -> torch.Tensor:
    """MMSE estimate (eq. 11): ``x = (H^H H + sigma_n^2 I)^{-1} H^H y``.

    Parameters
    ----------
    y : torch.Tensor
        ``complex [n, n_r]``.
    H : torch.Tensor
        ``complex [n, n_r, n_t]`` (LS estimate in the paper).
    noise_var : float
        ``sigma_n^2``, complex noise variance per receive antenna (linear, > 0).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_t]``.
    """
    _check(y, H)
    if not noise_var > 0:
        raise ValueError(f"noise_var must be positive, got {noise_var}")
    # eq. (11): x_MMSE = (H^T H + sigma_n^2 I)^{-1} H^T y
    return _regularised_solve(y, H, float(noise_var))


def lmmse_genie(y: torch.Tensor, H_true: torch.Tensor, noise_var: float) -> torch.Tensor:
    """LMMSE with perfect CSI: eq. (11) evaluated with the true channel ``complex64 [n, n_t]``."""
    return mmse(y, H_true, noise_var)


def ml_detect(y: torch.Tensor, H: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Exact maximum-likelihood QPSK detection (eq. 6) by enumeration.

    With the thin QR decomposition ``H = Q R`` (``R`` upper triangular ``n_t x n_t``),
    ``||y - H x||^2 = ||Q^H y - R x||^2 + ||(I - Q Q^H) y||^2``; the second term does not
    depend on ``x``, so the search runs over ``||z - R x||^2`` with ``z = Q^H y``
    (``n_t (n_t + 1) / 2`` complex MACs per candidate instead of ``n_r n_t``).

    Parameters
    ----------
    y : torch.Tensor
        ``complex [n, n_r]``.
    H : torch.Tensor
        ``complex [n, n_r, n_t]``; ``4**n_t <= ML_MAX_CANDIDATES`` (``n_t <= 8``).
    chunk : int, default 16
        Samples processed at once (memory ``~ chunk * 4**n_t * n_t`` complex entries).

    Returns
    -------
    torch.Tensor
        ``int64 [n, n_t]`` symbol indices minimising ``||y - H x||^2``.
    """
    _check(y, H)
    n_t = H.shape[-1]
    if 4**n_t > ML_MAX_CANDIDATES:
        raise ValueError(f"exact ML needs 4**n_t <= {ML_MAX_CANDIDATES} candidates, got n_t={n_t}")
    if H.shape[-2] < n_t:
        raise ValueError(f"exact ML here needs n_r >= n_t, got {tuple(H.shape)}")
    cands = torch.tensor(list(itertools.product(range(4), repeat=n_t)), dtype=torch.long)  # [C, n_t]
    S = qpsk_constellation()[cands].to(torch.complex128)  # [C, n_t]
    Q, R = torch.linalg.qr(H.to(torch.complex128), mode="reduced")  # [n, n_r, n_t], [n, n_t, n_t]
    z = (Q.conj().transpose(-1, -2) @ y.to(torch.complex128).unsqueeze(-1)).squeeze(-1)  # [n, n_t]
    out = []
    for s in range(0, y.shape[0], chunk):
        r = z[s : s + chunk].unsqueeze(1) - torch.einsum("nij,cj->nci", R[s : s + chunk], S)  # [b, C, n_t]
        d = (r.real**2 + r.imag**2).sum(-1)
        out.append(cands[d.argmin(dim=1)])
    return torch.cat(out, 0)


def zf_error_covariance(x_zf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sample covariance ``E[e e^H]`` of ZF errors ``e = x_ZF - x`` over labelled samples.

    Parameters
    ----------
    x_zf, x : torch.Tensor
        ``complex [n, n_t]``: ZF estimates and the transmitted symbols.

    Returns
    -------
    torch.Tensor
        ``complex128 [n_t, n_t]``, Hermitian. For one channel ``H`` known exactly it tends to
        ``sigma_n^2 (H^H H)^{-1}``; over a task it is the task-average ZF noise covariance.
    """
    if x_zf.shape != x.shape or x_zf.dim() != 2 or not (x_zf.is_complex() and x.is_complex()):
        raise ValueError(f"expected complex x_zf and x of one shape [n, n_t], got {tuple(x_zf.shape)} and {tuple(x.shape)}")
    e = (x_zf - x).to(torch.complex128)
    C = e.T @ e.conj() / len(e)
    return (C + C.conj().T) / 2


def _symbol_grid(n: int) -> torch.Tensor:
    """All ``4**n`` QPSK index vectors ``int64 [4**n, n]`` in ``itertools.product`` order
    (the first symbol is the most significant base-4 digit)."""
    k = torch.arange(4**n)
    return torch.stack([(k // 4 ** (n - 1 - j)) % 4 for j in range(n)], 1) if n else torch.zeros((1, 0), dtype=torch.long)


def covariance_ml_detect(x_zf: torch.Tensor, C: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """ML QPSK decisions from the ZF estimate alone, under a Gaussian error of covariance ``C``.

    ``argmin_x (x_ZF - x)^H C^{-1} (x_ZF - x)``: with ``C^{-1} = U^H U`` this is exact ML
    (eq. 6) on ``U x_ZF = U x + w``, ``w`` white. With ``C = sigma_n^2 (H^H H)^{-1}``
    of the sample's own ``H`` it is eq. (6)'s ML; with one ``C`` for a whole task
    (``zf_error_covariance`` of labelled samples, or ``E[(H^H H)^{-1}]`` over the task's
    channels) it is the detector that knows the task's shared ZF-error correlation but not
    the sample's ``H`` (the H-blind detector of ``docs/sdnet_fidelity.md``, Experiment 7).

    The search is exact and pruned. ``U`` is upper triangular and shared by all samples, so
    with the symbols split into a top half ``s_t`` and a bottom half ``s_b``,
    ``||z - U s||^2 = ||z_b - U_bb s_b||^2 + ||z_t - U_tb s_b - U_tt s_t||^2`` (``z = U x_ZF``).
    The first term, over the ``4**(n_t/2)`` bottom halves, lower-bounds every full candidate
    that shares its ``s_b``; the best bottom half completed by its best top half gives a
    radius, and only the bottom halves whose first term is within it are completed (all
    ``4**(n_t/2)`` top halves each). At ``n_t = 8`` that is 256 + 256 x (a few) distances a
    sample instead of 65,536, with the same decision as full enumeration (``ml_detect``).

    Parameters
    ----------
    x_zf : torch.Tensor
        ``complex [n, n_t]``; ``4**n_t <= ML_MAX_CANDIDATES``.
    C : torch.Tensor
        ``complex [n_t, n_t]`` Hermitian positive definite (one for all samples).
    chunk : int, default 1024
        Samples searched at once.

    Returns
    -------
    torch.Tensor
        ``int64 [n, n_t]`` symbol indices.
    """
    n_t = x_zf.shape[-1]
    if x_zf.dim() != 2 or not x_zf.is_complex() or tuple(C.shape) != (n_t, n_t):
        raise ValueError(f"expected complex x_zf [n, n_t] and C [n_t, n_t], got {tuple(x_zf.shape)} and {tuple(C.shape)}")
    if 4**n_t > ML_MAX_CANDIDATES:
        raise ValueError(f"exact ML needs 4**n_t <= {ML_MAX_CANDIDATES} candidates, got n_t={n_t}")
    Cd = C.to(torch.complex128)
    U = torch.linalg.cholesky(torch.linalg.inv((Cd + Cd.conj().T) / 2)).conj().T  # C^{-1} = U^H U, U upper triangular
    k = n_t // 2  # top half: symbols 0..k-1
    top, bot = _symbol_grid(k), _symbol_grid(n_t - k)  # [Kt, k], [Kb, n_t - k]
    S = qpsk_constellation().to(torch.complex128)
    Vt = S[top] @ U[:k, :k].T  # [Kt, k]: U_tt s_t
    Vb = S[bot] @ U[k:, k:].T  # [Kb, n_t - k]: U_bb s_b
    Vtb = S[bot] @ U[:k, k:].T  # [Kb, k]: U_tb s_b
    z_all = x_zf.to(torch.complex128) @ U.T  # [n, n_t]
    out = []
    for s in range(0, len(z_all), chunk):
        z = z_all[s : s + chunk]
        m = torch.arange(len(z))
        d_b = (z[:, None, k:] - Vb).abs().pow(2).sum(-1)  # [m, Kb]: lower bound of each bottom half
        r_t = z[:, None, :k] - Vtb  # [m, Kb, k]: top rows' residual before the top half
        first = d_b.argmin(1)
        radius = d_b[m, first] + (r_t[m, first][:, None, :] - Vt).abs().pow(2).sum(-1).min(1).values  # [m]
        si, bi = (d_b <= radius[:, None]).nonzero(as_tuple=True)  # bottom halves that may hold the best
        best, ti = torch.empty(len(si), dtype=torch.float64), torch.empty(len(si), dtype=torch.long)
        step = max(1, 2**19 // len(top))  # pairs completed at once: ~2**19 distances (8 MiB)
        for p in range(0, len(si), step):
            sp, bp = si[p : p + step], bi[p : p + step]
            best[p : p + step], ti[p : p + step] = (d_b[sp, bp][:, None] + (r_t[sp, bp][:, None, :] - Vt).abs().pow(2).sum(-1)).min(1)  # [P, Kt] -> [P]
        sample_best = torch.full((len(z),), float("inf"), dtype=best.dtype).scatter_reduce(0, si, best, "amin")
        win = (best == sample_best[si]).nonzero(as_tuple=True)[0]
        first_win = torch.full((len(z),), len(si), dtype=torch.long).scatter_reduce(0, si[win], win, "amin")  # one winner a sample
        out.append(torch.cat([top[ti[first_win]], bot[bi[first_win]]], 1))
    return torch.cat(out) if out else torch.zeros((0, n_t), dtype=torch.long)
