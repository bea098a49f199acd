"""A briefly trained SDNet beats ZF and MMSE on its own task; finetune bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from common.learngene.training import TRAIN_FLOPS_PER_FORWARD, evaluate_ser, finetune, sign_bce_loss
from common.channels import ChannelTask, sample_channels
from common.models.complexity import count_flops
from common.models.sdnet import SDNet
from common.phy import baseline_sers, make_detection_batch



def test_trained_sdnet_beats_zf_and_mmse_on_its_task() -> None:
    # A near-static channel (UEs within a 2 mm circle of one gbsm environment, the default
    # 38.901 model), 8x2, with only 2 pilots at 10 dB: LS-based ZF/MMSE suffer the
    # estimation noise, SDNet can learn the task's channel from its training data.
    task = ChannelTask.make("gbsm", 8, 2, task_id=2, seed=0, radius_m=0.002)
    g = torch.Generator().manual_seed(0)
    train = make_detection_batch(sample_channels(task, 3000, 1), 10.0, n_pilots=2, generator=g)
    test = make_detection_batch(sample_channels(task, 5000, 2), 10.0, n_pilots=2, generator=g)
    base = baseline_sers(test)
    torch.manual_seed(0)
    model = SDNet(8, 2, 2)
    res = finetune(model, train, epochs=6, batch_size=100, lr=3e-3, generator=torch.Generator().manual_seed(1))
    s = evaluate_ser(model, test)
    assert res.loss_per_epoch[-1] < res.loss_per_epoch[0]
    assert s < base["ser_mmse"] - 0.02 and s < base["ser_zf"] - 0.02, (s, base)


def test_sign_bce_loss_is_the_cross_entropy_of_each_bit_and_trains() -> None:
    """The probe loss: ``-log P(bit)`` with ``P(+) = (1 + out) / 2`` per output, summed over
    the outputs; an undecided output costs ``ln 2``. SDNet trained with it learns a task."""
    x = torch.tensor([[0.7071, -0.7071, 0.7071, -0.7071]])
    assert float(sign_bce_loss(torch.zeros(1, 4), x)) == pytest.approx(4 * math.log(2))
    out = torch.tensor([[0.8, -0.6, -0.2, 0.0]])  # P(right bit) = 0.9, 0.8, 0.4, 0.5
    assert float(sign_bce_loss(out, x)) == pytest.approx(-math.log(0.9 * 0.8 * 0.4 * 0.5), rel=1e-5)
    task = ChannelTask.make("gbsm", 8, 2, task_id=2, seed=0, radius_m=0.002)
    g = torch.Generator().manual_seed(0)
    train = make_detection_batch(sample_channels(task, 3000, 1), 10.0, n_pilots=2, generator=g)
    test = make_detection_batch(sample_channels(task, 2000, 2), 10.0, n_pilots=2, generator=g)
    torch.manual_seed(0)
    model = SDNet(8, 2, 2)
    res = finetune(model, train, epochs=3, batch_size=100, lr=3e-3, generator=torch.Generator().manual_seed(1), loss="bce")
    assert res.loss_per_epoch[-1] < res.loss_per_epoch[0] < 4 * math.log(2)
    assert evaluate_ser(model, test) < baseline_sers(test)["ser_zf"]
    with pytest.raises(ValueError, match="loss"):
        finetune(model, train, epochs=1, batch_size=100, lr=1e-3, loss="hinge")


def test_finetune_flops_determinism_and_val_curve() -> None:
    task = ChannelTask.make("rayleigh", 4, 2)
    b = make_detection_batch(sample_channels(task, 300, 0), 15.0, generator=torch.Generator().manual_seed(0))

    def run() -> tuple[SDNet, object]:
        torch.manual_seed(3)
        m = SDNet(4, 2, 1)
        r = finetune(m, b, epochs=2, batch_size=64, lr=1e-3, generator=torch.Generator().manual_seed(5), val=b[:100])
        return m, r

    m1, r1 = run()
    m2, r2 = run()
    assert r1.loss_per_epoch == r2.loss_per_epoch
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert len(r1.val_ser_per_epoch) == 2 and r1.samples == 600
    assert r1.flops == TRAIN_FLOPS_PER_FORWARD * count_flops(m1, (1, 1, 9, 4)) * 600


def test_finetune_in_chunks_with_one_optimizer_equals_one_call() -> None:
    # what benchmarks/sdnet_map.py relies on to checkpoint and resume: the optimiser and
    # the shuffling generator carried across calls make two 1-epoch calls one 2-epoch call
    task = ChannelTask.make("rayleigh", 4, 2)
    b = make_detection_batch(sample_channels(task, 200, 0), 15.0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    m1 = SDNet(4, 2, 1)
    m2 = SDNet(4, 2, 1)
    m2.load_state_dict(m1.state_dict())
    finetune(m1, b, epochs=2, batch_size=64, lr=1e-3, generator=torch.Generator().manual_seed(5))
    g, opt = torch.Generator().manual_seed(5), torch.optim.Adam(m2.parameters(), lr=1e-3)
    for _ in range(2):
        finetune(m2, b, epochs=1, batch_size=64, lr=1.0, generator=g, optimizer=opt)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(m1.parameters(), m2.parameters()))
    with pytest.raises(ValueError, match="precision"):
        finetune(m2, b, epochs=1, batch_size=64, lr=1e-3, precision="fp8")
