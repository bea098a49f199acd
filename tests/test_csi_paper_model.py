"""The CSI compressor against the paper's description (Fig. 1, Table V), fine-tuning counted
in epochs, the device setting, and the TM benchmark (translation modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.csi import finetune, pretrained_compressor, resolve_cfg
from common.csi.pretrain import pretrain_key
from common.csi.training import epoch_minibatches
from common.csi.translation import TranslationModule, evaluate_translation, train_translation
from common.models.csi_compressor import CSICompressor, CompressorConfig
from common.phy.metrics import nmse_db
from common.runtime import resolve_device


def _conv_weights(layers: list[tuple[int, int]], k: int) -> int:
    """Weights and biases of conv layers ``(in, out)`` with ``k x k`` kernels."""
    return sum(cin * cout * k * k + cout for cin, cout in layers)


def test_paper_scale_decoder_has_the_weights_fig1_describes() -> None:
    # Fig. 1 / Sec. II-B at 64 x 64: conv 5x5 with 64, 64 and 2 kernels on each side,
    # max-pooling / upsampling by 2 twice, no dense layer
    enc = _conv_weights([(2, 64), (64, 64), (64, 2)], 5)
    dec = _conv_weights([(2, 64), (64, 64), (64, 2)], 5)
    assert enc == dec == 108_930  # Table V: EO 109 K trainable, FM 218 K
    widths = [1, 3, 3, 3, 3, 1]  # DeepFactorized per latent channel (Balle et al. 2018, 6.1)
    density = 2 * (sum(a * b for a, b in zip(widths, widths[1:])) + sum(widths[1:]) + sum(widths[1:-1]))
    m = CSICompressor(CompressorConfig(n_ant=64, n_sc=64, width=64))
    assert sum(p.numel() for p in m.decoder.parameters()) == dec
    assert sum(p.numel() for p in m.encoder.parameters()) == enc
    assert m.n_decoder_params() == dec + density == 109_046  # what a coded update covers
    x = torch.zeros(1, 2, 64, 64)
    with torch.no_grad():
        y = m.encoder(x)
        assert tuple(y.shape) == (1, 2, 16, 16)
        assert tuple(m.decoder(y).shape) == (1, 2, 64, 64)
    assert abs(m.forward_flops() - 475e6) / 475e6 < 0.01  # Table V: 475 M FLOPs
    # the dense option adds L^2 + L weights per side, L = 2 * 16 * 16
    L = 2 * 16 * 16
    md = CSICompressor(CompressorConfig(n_ant=64, n_sc=64, width=64, dense_latent=True))
    assert md.n_decoder_params() == dec + L * L + L + density == 371_702
    assert resolve_cfg({})["dense_latent"] is False


def test_epochs_visit_every_sample_once_per_pass() -> None:
    draws = list(epoch_minibatches(10, 4, 3, seed=1))
    assert [len(d) for d in draws] == [4, 4, 2] * 3
    for e in range(3):
        assert sorted(np.concatenate(draws[3 * e : 3 * e + 3]).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(draws[:3]), np.concatenate(draws[3:6]))


def _cfg(tmp: Path, **kw: object) -> dict:
    base = dict(
        n_ant=8, n_sc=8, width=4, kernel=3, lmbda=64.0, pretrain_samples=48, pretrain_steps=6, pretrain_batch=16,
        n_finetune=10, n_eval=8, steps=4, batch=4, lr=2e-2, decoder_lr=0.0, t=5e-3, n_bins=64, cache_dir=str(tmp),  # decoder_lr 0: one step for both
    )
    base.update(kw)
    return resolve_cfg(base)


def test_finetuning_counts_epochs_when_set(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    m = pretrained_compressor(cfg)
    H = torch.randn(10, 8, 8, dtype=torch.complex64)
    for scheme in ("eo", "fm"):
        by_steps = finetune(m, H, {**cfg, "scheme": scheme}, seed=3)
        assert len(by_steps.losses) == 4
        by_epochs = finetune(m, H, {**cfg, "scheme": scheme, "epochs": 5}, seed=3)
        assert len(by_epochs.losses) == 5 * 3  # ceil(10 / 4) steps per pass; steps ignored


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks CUDA here")
def test_auto_device_on_a_cpu_machine_gives_the_cpu_numbers(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    auto = resolve_device("auto")
    assert auto.type == "cpu"
    assert pretrain_key(cfg, auto) == pretrain_key(cfg) == pretrain_key(cfg, torch.device("cpu"))
    assert pretrain_key(cfg, torch.device("cuda")) != pretrain_key(cfg)  # other kernels, other weights
    m = pretrained_compressor(cfg, device=auto)
    H = torch.randn(10, 8, 8, dtype=torch.complex64)
    a = finetune(m, H, {**cfg, "scheme": "fm"}, seed=3)
    b = finetune(m, H, {**cfg, "scheme": "fm", "device": "auto"}, seed=3)
    assert a.update_bytes == b.update_bytes and a.losses == b.losses
    with pytest.raises(ValueError, match="CUDA"):
        finetune(m, H, {**cfg, "scheme": "fm", "device": "cuda"}, seed=3)


def test_translation_module_size_and_identity_start() -> None:
    t = TranslationModule(seed=4)
    assert sum(p.numel() for p in t.parameters()) == _conv_weights([(2, 16), (16, 16), (16, 2)], 3) == 2914
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(t(x), x, rtol=0, atol=0)


def test_tm_starts_at_no_ft_and_counts_only_latent_bits(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    m = pretrained_compressor(cfg)
    H = torch.randn(18, 8, 8, dtype=torch.complex64)
    H_ft, H_ev = H[:10], H[10:]
    untrained = train_translation(m, H_ft, {**cfg, "steps": 0}, seed=1)
    out0 = evaluate_translation(m, untrained, H_ev)
    data = m.compress(H_ev)  # No FT: the backbone alone
    assert out0["latent_bits"] == 8 * len(data)
    assert out0["nmse_db"] == pytest.approx(nmse_db(m.decompress(data), H_ev, reduction="mean"), abs=1e-9)
    tm = train_translation(m, H_ft, {**cfg, "steps": 40, "lr": 1e-2}, seed=1)
    assert len(tm.losses) == 40

    def objective(res: object) -> float:  # eq. (9) on the training window, rounded latents
        o = evaluate_translation(m, res, H_ft)
        return 64.0 * o["mse"] + o["bits_per_dim_total"]

    assert objective(tm) < objective(untrained)
    out = evaluate_translation(m, tm, H_ev)
    assert out["bits_per_dim_update"] == 0.0
    assert out["bits_per_dim_total"] == out["bits_per_dim_latent"] == pytest.approx(out["latent_bits"] / (8 * 64))
    # the caller's backbone is left as it was
    for p, q in zip(m.state_dict().values(), pretrained_compressor(cfg).state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_small_decoder_step_keeps_the_fm_update_inside_the_zero_bin(tmp_path: Path) -> None:
    # Adam moves a weight by at most about its step per iteration: 4 steps of 1e-9 stay far
    # inside the zero bin (|delta| < t / 2 = 2.5e-3), while the encoder still trains at lr
    cfg = _cfg(tmp_path, scheme="fm", regularize_update=False)
    m = pretrained_compressor(cfg)
    H = torch.randn(10, 8, 8, dtype=torch.complex64)
    same = finetune(m, H, cfg, seed=3)
    assert same.n_nonzero > 0  # lr 2e-2 = 4 t: the decoder moves
    small = finetune(m, H, {**cfg, "decoder_lr": 1e-9}, seed=3)
    assert small.n_nonzero == 0
    assert any(not np.array_equal(a, b) for a, b in zip(small.device_model.encoder_arrays(), m.encoder_arrays()))
    # decoder_lr = lr is the single-step-size run, bit for bit
    again = finetune(m, H, {**cfg, "decoder_lr": float(cfg["lr"])}, seed=3)
    assert again.update_bytes == same.update_bytes and again.losses == same.losses
