"""Fig. 13: the scratch and learngene models of the antenna-scaling experiment start from
one initialisation (the model is built inside the seeded block)."""

from __future__ import annotations

import torch

from common.learngene import extract_unit, individual_sdnet
from common.models.sdnet import SDNet
from studies.learngene_paper import _init_model


def test_scaling_models_share_their_initialisation() -> None:
    c = {"n_r": 4, "n_t": 4, "n_conv_individual": 4}
    unit = extract_unit(SDNet(4, 4, 6), [4, 5, 6])
    torch.manual_seed(123)  # the global stream differs between the two builds ...
    a = _init_model(c, 7, "scaling", build=lambda: individual_sdnet(unit, 4, 2, 4))
    b = _init_model(c, 7, "scaling", build=lambda: individual_sdnet(unit, 4, 2, 4))
    assert a.col_upsample == 2
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k  # ... yet both start from the same weights
    other = _init_model(c, 8, "scaling", build=lambda: individual_sdnet(unit, 4, 2, 4))
    assert not torch.equal(a.convs[0].weight, other.convs[0].weight)
