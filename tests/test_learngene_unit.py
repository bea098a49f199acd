"""Learngene unit: extraction, six expansion strategies, eq. (21), file and ArrayRecord round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.learngene import (
    STRATEGIES,
    LearngeneUnit,
    expand,
    extract_unit,
    individual_sdnet,
    l2_to_anchors,
    placement,
    segment_layer_ids,
)
from common.models.sdnet import SDNet



def _collective(n_conv: int = 12, n_r: int = 4, n_t: int = 2) -> SDNet:
    torch.manual_seed(0)
    return SDNet(n_r, n_t, n_conv)


def test_segments_match_the_paper() -> None:
    assert [segment_layer_ids(12, 4, s) for s in ("top", "middle", "bottom")] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert [segment_layer_ids(8, 4, s) for s in ("top", "middle", "bottom")] == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8]]
    assert placement("top-inherit", 8, 4) == [5, 6, 7, 8] and placement("middle-embed", 8, 4) == [3, 4, 5, 6]
    assert placement("bottom-embed", 8, 4) == placement("bottom-inherit", 8, 4)
    with pytest.raises(ValueError):
        placement("left-embed", 8, 4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_puts_the_right_tensors_in_the_right_layers(strategy: str) -> None:
    coll = _collective()
    seg = strategy.split("-")[0]
    src_ids = segment_layer_ids(12, 4, seg)
    unit = extract_unit(coll, src_ids)
    assert unit.meta["segment"] == seg and unit.n_params == 4 * (8 * 8 * 9 + 8)
    torch.manual_seed(1)
    ind = SDNet(4, 2, 8)
    before = {k: v.clone() for k, v in ind.state_dict().items()}
    anchors = expand(unit, ind, strategy)
    dst_ids = placement(strategy, 8, 4)
    assert sorted(anchors) == sorted(f"convs.{l}.{p}" for l in dst_ids for p in ("weight", "bias"))
    for s, d in zip(src_ids, dst_ids):
        assert torch.equal(ind.convs[d].weight, coll.convs[s].weight)
        assert torch.equal(ind.convs[d].bias, coll.convs[s].bias)
        assert torch.equal(anchors[f"convs.{d}.weight"], coll.convs[s].weight.detach())
    changed = {k for k, v in ind.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(anchors)  # BN, FC and the other convs untouched


def test_l2_to_anchors_closed_form_and_pull() -> None:
    coll = _collective()
    ind = SDNet(4, 2, 8)
    anchors = expand(extract_unit(coll, [9, 10, 11, 12]), ind)
    assert l2_to_anchors(ind, anchors, 3.0).item() == 0.0
    with torch.no_grad():
        ind.convs[5].bias += 0.5  # 8 entries moved by 0.5
    # eq. (21): lam/2 * sum (theta' - theta)^2 = 3/2 * 8 * 0.25
    assert l2_to_anchors(ind, anchors, 3.0).item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        l2_to_anchors(ind, {"nope.weight": torch.zeros(1)}, 1.0)


def test_unit_save_load_bit_exact_and_tamper_rejected(tmp_path: Path) -> None:
    unit = extract_unit(_collective(), [9, 10, 11, 12], n_tasks=3, significance_last_task=[0.5, 0.25, 0.1, 0.0])
    p = tmp_path / "unit.bin"
    unit.save(p)
    back = LearngeneUnit.load(p)
    assert back.meta == unit.meta
    for k, v in unit.tensors.items():
        assert back.tensors[k].dtype == np.float32 and back.tensors[k].tobytes() == v.tobytes()
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor: the file's BLAKE2b checksum catches it
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        LearngeneUnit.load(p)
    p.write_bytes(b"AFARRAY1" + (10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length"):
        LearngeneUnit.load(p)
    p.write_bytes(bytes(raw[:-4]))  # truncated
    with pytest.raises(ValueError):
        LearngeneUnit.load(p)
    meta = dict(unit.meta, n_tasks=4)  # metadata edited, hash kept
    with pytest.raises(ValueError, match="hash"):
        LearngeneUnit.from_arrays(unit.to_arrays(), meta)


def test_flower_arrayrecord_round_trip_is_bit_exact() -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord

    unit = extract_unit(_collective(), [5, 6, 7, 8])
    rec = ArrayRecord({k: Array(v) for k, v in unit.to_arrays().items()})
    cfg = ConfigRecord(dict(unit.meta))
    arrays = {k: rec[k].numpy() for k in rec}
    back = LearngeneUnit.from_arrays(arrays, dict(cfg))
    assert back.meta["content_hash"] == unit.meta["content_hash"]
    for k, v in unit.tensors.items():
        assert back.tensors[k].tobytes() == v.tobytes() and back.tensors[k].shape == v.shape
    nd = rec.to_numpy_ndarrays()
    assert sorted(a.tobytes() for a in nd) == sorted(v.tobytes() for v in unit.tensors.values())


def test_upsampling_adaptor_serves_fewer_tx_antennas() -> None:
    unit = extract_unit(_collective(n_conv=12, n_r=4, n_t=4), [9, 10, 11, 12])
    m = individual_sdnet(unit, n_r=4, n_t=2, n_conv=8)
    assert m.col_upsample == 2 and m.fc.in_features == 9 * 8
    expand(unit, m)
    x = torch.randn(3, 1, 9, 4)
    assert m(x).shape == (3, 4)
    # the adaptor is nearest-neighbour column repetition: equal to running on the widened image
    m.eval()
    wide = SDNet(4, 4, 8)
    with torch.no_grad():
        for a, b in zip([*wide.convs, *wide.bns], [*m.convs, *m.bns]):
            a.load_state_dict(b.state_dict())
        feats = {}
        wide.fc.register_forward_hook(lambda mod, i, o: feats.setdefault("wide", i[0]))
        m.fc.register_forward_hook(lambda mod, i, o: feats.setdefault("up", i[0]))
        wide.eval()
        wide(x.repeat_interleave(2, dim=3))
        m(x)
    assert torch.allclose(feats["wide"], feats["up"])
    assert individual_sdnet(unit, 4, 4, 8).col_upsample == 1
    with pytest.raises(ValueError):
        individual_sdnet(unit, 4, 3, 8)
    with pytest.raises(ValueError):
        individual_sdnet(unit, 8, 2, 8)


def test_one_definition_of_the_six_strategies() -> None:
    """X-embed: the selected unit at segment X of the individual; X-inherit: collective
    segment X at the bottom (Fig. 5/9; the study and the fleet share it)."""
    from common.learngene import placement, unit_source_layers

    selected = [9, 10, 11, 12]
    for seg in ("top", "middle", "bottom"):
        assert unit_source_layers(f"{seg}-embed", selected, 12) == selected
    assert unit_source_layers("top-inherit", selected, 12) == [1, 2, 3, 4]
    assert unit_source_layers("middle-inherit", selected, 12) == [5, 6, 7, 8]
    assert unit_source_layers("bottom-inherit", [5, 6, 7, 8], 12) == [9, 10, 11, 12]
    assert placement("top-embed", 8, 4) == [1, 2, 3, 4] and placement("middle-embed", 8, 4) == [3, 4, 5, 6]
    assert {tuple(placement(f"{s}-inherit", 8, 4)) for s in ("top", "middle", "bottom")} == {(5, 6, 7, 8)}


def test_unit_for_strategy_cuts_the_strategys_layers() -> None:
    import numpy as np
    import pyarrow as pa

    from common.learngene import extract_unit
    from common.learngene.collective import CollectiveResult, unit_for_strategy
    from common.models.sdnet import SDNet

    model = SDNet(4, 2, 6)
    unit = extract_unit(model, [2, 3], config_hash="abc", n_tasks=3)
    res = CollectiveResult(model, unit, pa.table({"x": [0]}), pa.table({"x": [0]}), [2, 3])
    assert unit_for_strategy(res, "top-embed") is unit and unit_for_strategy(res, "bottom-embed") is unit
    inh = unit_for_strategy(res, "bottom-inherit")
    assert inh.meta["layer_ids"] == [5, 6] and inh.meta["config_hash"] == "abc"
    assert np.array_equal(inh.tensors["0.weight"], model.convs[5].weight.detach().numpy())
    assert unit_for_strategy(res, "top-inherit").meta["layer_ids"] == [1, 2]
