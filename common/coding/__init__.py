"""Entropy models and range coding of latents and model updates (bytes in, bytes out).

- ``bitstream``: framing (magic, version, lengths, CRC) and :class:`BitstreamError`
- ``entropy_models``: the learned DeepFactorized latent density and its coding tables
- ``spike_slab``: update quantizer and the spike-and-slab / uniform update priors
- ``range_coder``: the constriction range coder behind every stream
- ``latent_codec``, ``update_codec``: what the CSI compressor and the base station call
"""

from common.coding.bitstream import BitstreamError
from common.coding.entropy_models import DeepFactorized, PmfTable
from common.coding.spike_slab import SpikeSlabPrior, UniformPrior, UpdatePrior, UpdateQuantizer, make_prior

__all__ = [
    "BitstreamError",
    "DeepFactorized",
    "PmfTable",
    "SpikeSlabPrior",
    "UniformPrior",
    "UpdatePrior",
    "UpdateQuantizer",
    "make_prior",
]
