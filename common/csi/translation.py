"""The TM benchmark: translation and retranslation modules around a frozen CSI compressor.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. IV ("TM", the benchmark of its ref. [30]: Liu,
Wang, Xu, Ding, "Deep learning for efficient CSI feedback in massive MIMO: adapting to new
environments and small datasets", IEEE TWC 2024). A convolutional translation module ``T``
maps the new environment's CSI planes towards the backbone's input domain before the
encoder; a retranslation module ``T'`` maps the decoder's output back. Both are trained on
the fine-tuning window to minimise eq. (9) through the frozen backbone,

    ``lambda * MSE(x, T'(g_s(y~))) + R(y~)``,  ``y~ = g_a(T(x)) + U(-1/2, 1/2)``,

at the backbone's own ``lambda`` (like EO, TM is a curve over backbones trained at several
``lambda``). As in the paper, the retranslation module's upload to the base station is not
counted: the rate is the latent bits only, a lower bound for this scheme.

Left out of [30]: its sparsity-aligning function (a brute-force search that the paper
itself calls its bottleneck) and its exact module layout. Here each module is residual,
``x + conv(ReLU(conv(ReLU(conv(x)))))``, 3 x 3 kernels, 16 hidden kernels, the last conv
zero-initialised so that training starts at No FT: 2,914 weights per module, 5,828 for the
pair at any CSI size, adding 47.2 MFLOPs per 64 x 64 sample to the backbone's 475 M (the
paper's Table V: TM 8 K trainable parameters, 521 MFLOPs).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.csi.training import finetune_draws, seeded_rng
from common.models.csi_compressor import CSICompressor, bits_per_dim, csi_to_planes, planes_to_csi, rd_loss
from common.phy.metrics import nmse_db
from common.runtime import resolve_device, torch_threads
from common.seeding import derive_seed

__all__ = ["TranslationModule", "TranslationResult", "train_translation", "evaluate_translation"]


class TranslationModule(nn.Module):
    """Residual conv map on CSI planes ``float32 [batch, 2, n_ant, n_sc]`` -> same shape.

    Parameters
    ----------
    width : int, default 16
        Hidden kernels.
    kernel : int, default 3
        Conv kernel size (odd).
    seed : int, default 0
        Seed of the weight initialisation; the last conv starts at zero (identity map).
    """

    def __init__(self, width: int = 16, kernel: int = 3, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) % (2**31))
            p = kernel // 2
            self.body = nn.Sequential(
                nn.Conv2d(2, width, kernel, padding=p), nn.ReLU(),
                nn.Conv2d(width, width, kernel, padding=p), nn.ReLU(),
                nn.Conv2d(width, 2, kernel, padding=p),
            )
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def flops(self, n_ant: int, n_sc: int) -> int:
        """Multiply-adds x 2 of one sample's pass (conv layers at full resolution)."""
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        return int(sum(2 * m.weight.numel() * n_ant * n_sc for m in convs))


@dataclass
class TranslationResult:
    """The two modules trained on one window.

    Attributes
    ----------
    translate : TranslationModule
        ``T``, on the device before the encoder (CPU, eval mode).
    retranslate : TranslationModule
        ``T'``, at the base station after the decoder (its upload is not counted).
    flops : int
        Approximate training FLOPs.
    seconds : float
        Wall-clock training time, s.
    losses : list of float
        Loss after each step.
    """

    translate: TranslationModule
    retranslate: TranslationModule
    flops: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


def train_translation(backbone: CSICompressor, H_ft: torch.Tensor, cfg: dict[str, Any], seed: int, device: torch.device | None = None) -> TranslationResult:
    """Train ``T`` and ``T'`` on ``H_ft`` (``complex64 [n, n_ant, n_sc]``) with the backbone frozen.

    The loss is eq. (9) at ``cfg["finetune_lmbda"]`` (the study sets it to the backbone's
    ``lmbda``); the budget, optimizer and batch are fine-tuning's (``epochs`` or ``steps``,
    ``lr``, ``batch``). One torch thread, its own RNG stream; ``device`` defaults to
    ``cfg["device"]`` through :func:`common.runtime.resolve_device`.
    """
    t0 = time.perf_counter()
    dev = device if device is not None else resolve_device(str(cfg.get("device", "cpu")))
    model = copy.deepcopy(backbone).to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    T = TranslationModule(seed=derive_seed(seed, "csi-tm-init", "translate")).to(dev)
    T_inv = TranslationModule(seed=derive_seed(seed, "csi-tm-init", "retranslate")).to(dev)
    x_all = csi_to_planes(H_ft).to(dev)
    opt = torch.optim.Adam(list(T.parameters()) + list(T_inv.parameters()), lr=float(cfg["lr"]))
    lmbda, dims = float(cfg["finetune_lmbda"]), model.cfg.csi_dims
    step_flops = model.forward_flops() + T.flops(model.cfg.n_ant, model.cfg.n_sc) + T_inv.flops(model.cfg.n_ant, model.cfg.n_sc)
    losses: list[float] = []
    flops = 0
    with torch_threads(1), seeded_rng(dev, derive_seed(seed, "csi-tm-noise")):
        model.train()
        for idx in finetune_draws(x_all.shape[0], cfg, seed):
            x = x_all[torch.from_numpy(idx).to(dev)]
            out = model(T(x))
            loss = rd_loss(x, T_inv(out["x_hat"]), out["bits"], lmbda, dims)  # eq. (9)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            flops += 3 * x.shape[0] * step_flops
    T.eval().cpu()
    T_inv.eval().cpu()
    return TranslationResult(T, T_inv, flops=flops, seconds=time.perf_counter() - t0, losses=losses)


@torch.no_grad()
def evaluate_translation(backbone: CSICompressor, tm: TranslationResult, H_eval: torch.Tensor) -> dict[str, float]:
    """Code ``H_eval`` (``complex64 [n, n_ant, n_sc]``) through ``T``, the backbone and ``T'``.

    The device translates and range-codes the latents with the backbone's tables; the base
    station decodes them with the backbone's decoder (which does not change) and
    retranslates.

    Returns
    -------
    dict
        The keys of :meth:`common.csi.base_station.FeedbackServer.ingest` (``nmse_db``,
        ``mse``, ``latent_bits``, ``update_bits`` = 0, ``bits_per_dim_*``,
        ``update_nonzero`` = 0, ``n_samples``) plus ``latent_bits_estimated`` (the model's
        information content).
    """
    H_t = planes_to_csi(tm.translate(csi_to_planes(H_eval)))
    data = backbone.compress(H_t)
    H_hat = planes_to_csi(tm.retranslate(csi_to_planes(backbone.decompress(data))))
    n, dims = int(H_eval.shape[0]), backbone.cfg.csi_dims
    latent_bits = 8.0 * len(data)
    return {
        "nmse_db": nmse_db(H_hat, H_eval, reduction="mean"),  # eq. (11)
        "mse": float((csi_to_planes(H_eval) - csi_to_planes(H_hat)).double().pow(2).mean()),
        "latent_bits": latent_bits,
        "update_bits": 0.0,
        "bits_per_dim_latent": bits_per_dim(latent_bits, n, dims),
        "bits_per_dim_update": 0.0,
        "bits_per_dim_total": bits_per_dim(latent_bits, n, dims),
        "update_nonzero": 0.0,
        "n_samples": float(n),
        "latent_bits_estimated": backbone.estimated_bits(H_t),
    }
