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


def test_eq21_at_the_papers_lambda_leaves_float32_training_unchanged() -> None:
    """Table III's lambda = 2e-15 makes eq. (21)'s L2 pull ~1e-15 of a gradient of order
    1e-4..1e-1: below float32's resolution, so training with the term is bit for bit
    training without it (the issue's 'L2 on/off' is one computation at the paper's lambda),
    while a lambda that can be felt (1e-3) moves the weights."""
    import copy

    from common.channels import ChannelTask
    from common.learngene.collective import task_detection_batch
    from common.learngene.training import finetune
    from common.seeding import torch_generator

    torch.manual_seed(0)
    batch = task_detection_batch(ChannelTask.make("gbsm", 8, 4, 146, 0), 300, 25.0, 16, 0, "eq21")
    base = SDNet(8, 4, 4)
    anchors = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in base.named_parameters()}

    def trained(lam: float) -> torch.Tensor:
        m = copy.deepcopy(base)
        finetune(m, batch, epochs=2, batch_size=50, lr=1e-3, anchors=anchors, lam=lam, generator=torch_generator(0, "eq21"))
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    plain = trained(0.0)
    assert torch.equal(trained(2e-15), plain)
    assert not torch.allclose(trained(1e-3), plain)
