"""The influence fleet stage on a tiny SDNet device."""

from __future__ import annotations

import math

import pytest
import torch

from common.influence import STAGE_SCHEMA, detection_instances, gap_reduction, genie_lmmse_bits, run_stage
from common.stage import DeviceContext, StageResult
from common.channels import ChannelTask, sample_channels
from common.models.sdnet import SDNet
from common.phy.dataset import make_detection_batch
from common.schema import ScenarioError, validate_section

torch.set_num_threads(1)


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


def test_stage_reports_before_after_for_influence_and_random():
    ctx = _device()
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    res = run_stage(ctx, dict(CFG))
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
    again = run_stage(_device(), dict(CFG))
    assert again.metrics == m  # same seed, same numbers


def test_stage_keeps_the_tuned_model_when_asked():
    res = run_stage(_device(1), {**CFG, "keep_model": True, "method": "first_order"})
    assert isinstance(res.model, SDNet)


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
