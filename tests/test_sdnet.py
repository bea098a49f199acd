"""SDNet architecture and the complexity counter, pinned by the paper's Table IV."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.models.complexity import count_flops, count_parameters, layer_costs
from common.models.sdnet import SDNet, sdnet_symbol_indices, significant_layer_names



@pytest.mark.parametrize(("n_conv", "params", "flops"), [(8, 21_627, 9_917_440), (12, 24_027, 14_709_760)])
def test_paper_parameter_and_flop_counts(n_conv: int, params: int, flops: int) -> None:
    m = SDNet(32, 8, n_conv)
    assert count_parameters(m) == params
    assert count_flops(m, (1, 1, 65, 16)) == flops
    # per-sample: a batch of 3 gives the same number
    assert count_flops(m, (3, 1, 65, 16)) == flops


def test_layer_costs_and_learngene_unit_size() -> None:
    m = SDNet(32, 8, 12)
    costs = {c.name: c for c in layer_costs(m, (1, 1, 65, 16))}
    assert costs["convs.0"].params == 80 and costs["convs.0"].flops == 149_760
    assert costs["convs.13"].params == 73 and costs["convs.13"].flops == 149_760
    assert costs["convs.5"].params == 584 and costs["convs.5"].flops == 1_198_080
    assert costs["fc"].params == 16_656 and costs["fc"].flops == 33_280
    unit = [costs[n] for n in significant_layer_names(m)[-4:]]
    assert sum(c.params for c in unit) == 2_336
    assert sum(c.flops for c in unit) == 4_792_320
    # transferred ratio of Table IV: 2,336 / 21,627 = 10.8 %
    assert round(100 * 2_336 / count_parameters(SDNet(32, 8, 8)), 1) == 10.8


def test_pruned_sdnet_counts_match_hand_formula() -> None:
    n_r, n_t, n_conv = 6, 3, 3
    widths = [5, 3, 8, 2]
    rows = [0, 2, 3, 7, 12]  # of 2*6+1 = 13
    m = SDNet(n_r, n_t, n_conv, widths=widths, input_rows=rows)
    H, W = len(rows), 2 * n_t
    chans = [1, *widths, 1]
    conv_p = sum(chans[i] * chans[i + 1] * 9 + chans[i + 1] for i in range(n_conv + 2))
    bn_p = sum(2 * c for c in chans[1:])
    fc_p = H * W * 2 * n_t + 2 * n_t
    assert count_parameters(m) == conv_p + bn_p + fc_p
    conv_f = sum(2 * H * W * chans[i + 1] * chans[i] * 9 for i in range(n_conv + 2))
    fc_f = 2 * H * W * 2 * n_t
    assert count_flops(m, (1, 1, 2 * n_r + 1, 2 * n_t)) == conv_f + fc_f
    out = m(torch.randn(4, 1, 13, 6))
    assert out.shape == (4, 6) and bool((out.abs() < 1).all())
    # the model really slices its input: changing a dropped row changes nothing
    x = torch.randn(2, 1, 13, 6)
    x2 = x.clone()
    x2[:, :, 1] += 5.0
    m.eval()
    assert torch.equal(m(x), m(x2))


def test_counter_is_generic_and_upsampling_is_counted_by_shape() -> None:
    seq = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(40, 5))
    assert count_parameters(seq) == (2 * 4 * 3 + 4) + (40 * 5 + 5)
    assert count_flops(seq, (1, 2, 10)) == 2 * 10 * 4 * 6 + 2 * 40 * 5
    # (n_t, n_r) = (4, 32) with the 2x column upsampling adaptor runs its convs on 65 x 16
    up = SDNet(32, 4, 8, col_upsample=2)
    c = {x.name: x for x in layer_costs(up, (1, 1, 65, 8))}
    assert c["convs.1"].flops == 1_198_080
    assert c["fc"].params == 65 * 16 * 8 + 8


def test_forward_shape_validation_and_hard_decisions() -> None:
    m = SDNet(4, 2, 1)
    with pytest.raises(ValueError):
        m(torch.zeros(1, 1, 8, 4))
    with pytest.raises(ValueError):
        SDNet(4, 2, 1, widths=[8])
    with pytest.raises(ValueError):
        SDNet(4, 2, 1, input_rows=[3, 1])
    out = torch.tensor([[0.5, -0.2, -0.1, 0.3]])  # Re = (0.5, -0.2), Im = (-0.1, 0.3)
    assert sdnet_symbol_indices(out).tolist() == [[1, 2]]
