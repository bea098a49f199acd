"""The influence fleet stage on a tiny SDNet device: the device half (``clients.stages``)
over ``common.influence.detector.targeted_finetune``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.stages.influence import InfluenceDevice
from common.channels import ChannelTask, sample_channels
from common.influence import STAGE_SCHEMA, detection_instances, gap_reduction, genie_lmmse_bits, targeted_finetune
from common.models.sdnet import SDNet
from common.phy.dataset import make_detection_batch
from common.phy.detection import lmmse_genie
from common.phy.modulation import hard_qpsk, indices_to_bits
from common.schema import ScenarioError, validate_section
from common.stage import DeviceContext, StageResult



def _device(seed: int = 0) -> DeviceContext:
    task = ChannelTask.make("rayleigh", 4, 2, 0, seed)
    H = sample_channels(task, 192, seed)
    batch = make_detection_batch(H, 2.0, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = SDNet(4, 2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(batch.sdnet_input[:128]), batch.x[:128] * 2**0.5).backward()
        opt.step()
    return DeviceContext(device_id=0, device_class="small", round=1, seed=seed, task=task, snr_db=2.0,
                         model=model.eval(), train=batch.subset(slice(0, 128)), val=batch.subset(slice(128, 192)))


CFG = {"k": 8, "arnoldi_steps": 20, "hessian_samples": 64, "budget": 16, "steps": 2, "instance_size": 8, "seeds": 2}
STAGE = InfluenceDevice()


def test_stage_reports_before_after_for_influence_and_random():
    ctx = _device()
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    res = STAGE.run_device(ctx, dict(CFG))
    assert isinstance(res, StageResult) and res.model is None
    m = res.metrics
    assert m["n_targets"] == 1 and m["n_instances"] == 8 and m["instance_size"] == 8
    for where in ("targets", "others"):
        for what in ("before", "influence", "random", "genie"):
            assert 0.0 <= m[f"ber_{where}_{what}"] <= 1.0
    # the target is the worst relative gap among instances with BER_genie >= 1e-3
    assert m["ber_targets_before"] >= m["ber_targets_genie"]
    assert m["mean_score_selected"] < 0  # beneficial = negative influence
    assert res.flops > 0
    # the device's own model is untouched (copies are tuned)
    assert all(torch.equal(before[k], v) for k, v in ctx.model.state_dict().items())
    again = STAGE.run_device(_device(), dict(CFG))
    assert again.metrics == m  # same seed, same numbers


def _instance_ber(pred: torch.Tensor, bits: torch.Tensor, m: int) -> np.ndarray:
    """Per-instance BER of ``m`` consecutive samples, written out here (not the package's)."""
    err = (pred.to(torch.int64) != bits.to(torch.int64)).numpy().reshape(-1, m * bits.shape[1])
    return err.mean(axis=1)


def test_stage_keeps_a_really_tuned_model_whose_target_ber_is_the_reported_one():
    ctx = _device(1)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    res = STAGE.run_device(ctx, {**CFG, "keep_model": True, "method": "first_order"})
    assert isinstance(res.model, SDNet) and res.model is not ctx.model
    # the device's model is not changed by the stage itself; the tuned copy is
    assert all(torch.equal(before[k], v) for k, v in ctx.model.state_dict().items())
    tuned = res.model.state_dict()
    assert any(not torch.equal(before[k], tuned[k]) for k in before if before[k].is_floating_point())

    # recompute the target and its BER from the models alone: 8 instances of 8 samples
    # (every val sample has its own channel), genie LMMSE on the true channel, target =
    # largest (BER - BER_genie) / BER_genie among instances with BER_genie >= 1e-3
    m, val = 8, ctx.val
    with torch.no_grad():
        pred_before = (ctx.model.eval()(val.sdnet_input) < 0).to(torch.uint8)
        pred_after = (res.model.eval()(val.sdnet_input) < 0).to(torch.uint8)
    genie = indices_to_bits(hard_qpsk(lmmse_genie(val.y, val.H, val.noise_var)))
    ber_g = _instance_ber(genie, val.bits, m)
    ber0 = _instance_ber(pred_before, val.bits, m)
    ber1 = _instance_ber(pred_after, val.bits, m)
    ok = ber_g >= 1e-3
    gap = np.where(ok, (ber0 - ber_g) / np.where(ok, ber_g, 1.0), -np.inf)
    t = int(np.argmax(gap))
    assert ok[t] and res.metrics["n_targets"] == 1
    assert res.metrics["ber_targets_before"] == pytest.approx(ber0[t], abs=1e-12)
    assert res.metrics["ber_targets_genie"] == pytest.approx(ber_g[t], abs=1e-12)
    assert res.metrics["ber_targets_influence"] == pytest.approx(ber1[t], abs=1e-12)
    others = np.arange(len(ber1)) != t
    assert res.metrics["ber_others_influence"] == pytest.approx(ber1[others].mean(), abs=1e-12)


def test_device_half_is_the_method_on_the_context():
    ctx = _device(2)
    cfg = {**CFG, "keep_model": True, "seeds": 1}
    res = STAGE.run_device(ctx, cfg)
    direct = targeted_finetune(_device(2).model, ctx.train, ctx.val, cfg, ctx.seed)
    assert res.metrics == direct.metrics and res.flops == direct.flops
    assert all(torch.equal(v, direct.model.state_dict()[k]) for k, v in res.model.state_dict().items())
    with pytest.raises(ValueError, match="ctx.model"):
        STAGE.run_device(DeviceContext(device_id=0, device_class="small", round=1, seed=0, task=ctx.task, snr_db=2.0), cfg)


def test_stage_schema_rejects_unknown_and_bad_values():
    with pytest.raises(ScenarioError, match="influence.bugdet"):
        validate_section({"bugdet": 3}, STAGE_SCHEMA, "influence")
    with pytest.raises(ScenarioError, match="method"):
        validate_section({"method": "tracin"}, STAGE_SCHEMA, "influence")
    assert validate_section({}, STAGE_SCHEMA, "influence")["k"] == 40


def test_instances_follow_shared_channels_else_fixed_groups():
    H = torch.randn(12, 2, 2, dtype=torch.complex64)
    assert detection_instances(H, 4) == 4  # every sample its own channel
    assert detection_instances(H[:3].repeat_interleave(4, 0), 7) == 4  # runs of 4 shared channels


def test_gap_reduction_closed_form():
    assert gap_reduction(0.10, 0.06, 0.02) == pytest.approx(0.5)
    assert gap_reduction(0.10, 0.10, 0.02) == pytest.approx(0.0)
    assert gap_reduction(0.10, 0.14, 0.02) == pytest.approx(-0.5)
    assert math.isnan(gap_reduction(0.01, 0.02, 0.02))


def test_genie_bits_match_noiseless_truth():
    H = sample_channels(ChannelTask.make("rayleigh", 4, 2), 50, 0)
    b = make_detection_batch(H, 60.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(genie_lmmse_bits(b), b.bits)
