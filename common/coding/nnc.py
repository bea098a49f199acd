"""NNCodec's DeepCABAC (the MPEG NNR reference coder, ISO/IEC 15938-17) as an optional codec.

Filled in below once the core is built; without it, ``available_codecs()`` omits ``nnc``.
"""

from __future__ import annotations

import numpy as np

from common.coding.codec_base import Body, Codec

__all__ = ["NNC_HINT", "NNCodec", "nnc_available"]

NNC_HINT = "codec 'nnc' needs NNCodec's DeepCABAC core, which is not installed here (see common/coding/nnc.py)"


def nnc_available() -> bool:
    """Whether the DeepCABAC core imports."""
    return False


class NNCodec(Codec):
    """DeepCABAC (placeholder until the core builds)."""

    name, lossless = "nnc", False

    def encode_body(self, tensors: list[np.ndarray]) -> Body:
        raise ValueError(NNC_HINT)

    def decode_body(self, sizes: list[int], params: bytes, payload: bytes) -> list[np.ndarray]:
        raise ValueError(NNC_HINT)
