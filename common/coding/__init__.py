"""Entropy models and range coding of latents and model updates (bytes in, bytes out).

- ``bitstream``: framing (magic, version, lengths, CRC) and :class:`BitstreamError`
- ``entropy_models``: the learned DeepFactorized latent density and its coding tables
- ``spike_slab``: update quantizer and the spike-and-slab / uniform update priors
- ``range_coder``: the constriction range coder behind every stream
- ``latent_codec``, ``update_codec``: what the CSI compressor and the base station call
- ``registry``: the codec registry every update and unit picks its codec from
  (``make_codec``, ``available_codecs``, plugins of the ``airfleet.codecs`` entry points);
  ``codec_base`` the codec contract and its stream, ``codecs`` the built-ins, ``nnc``
  NNCodec's DeepCABAC (optional)
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
