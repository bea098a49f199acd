"""Keeping a device's encoder/decoder pair in step with the decoder the base station holds.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. III-B: a decoder update (eq. 12-19) is
``theta + t * k`` against the decoder both ends share, so the device must code every
update and latent stream against exactly the decoder the base station holds. A device
keeps, between rounds, its current pair and the pair its last update was made against;
the base station's decoder tag (CRC-32, ``CSICompressor.tag_of``) says which one to use.

State layout (``dict[str, np.ndarray]``, float32): ``"enc.<name>"`` / ``"dec.<name>"``
for the current pair, ``"prev.enc.<name>"`` / ``"prev.dec.<name>"`` for the previous one,
``<name>`` as in ``CSICompressor.encoder_named`` / ``decoder_named``.
"""

from __future__ import annotations

import numpy as np

from common.models.csi_compressor import CSICompressor

__all__ = ["PREVIOUS_PREFIX", "model_to_state", "kept_pair", "sync_with_base_station"]

#: state-key prefix of the pair the last update was made against
PREVIOUS_PREFIX = "prev."


def model_to_state(model: CSICompressor, prefix: str = "") -> dict[str, np.ndarray]:
    """``model``'s encoder and decoder as state arrays (``<prefix>enc.*``, ``<prefix>dec.*``)."""
    out = {f"{prefix}enc.{n}": a for (n, _), a in zip(model.encoder_named(), model.encoder_arrays())}
    out.update({f"{prefix}dec.{n}": a for (n, _), a in zip(model.decoder_named(), model.decoder_arrays())})
    return out


def kept_pair(model: CSICompressor, state: dict[str, np.ndarray], prefix: str) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Encoder and decoder arrays kept in ``state`` under ``prefix``, in ``model``'s order
    (None if any is missing)."""
    enc = [state.get(f"{prefix}enc.{n}") for n, _ in model.encoder_named()]
    dec = [state.get(f"{prefix}dec.{n}") for n, _ in model.decoder_named()]
    if any(a is None for a in enc) or any(a is None for a in dec):
        return None
    return enc, dec  # type: ignore[return-value]


def sync_with_base_station(model: CSICompressor, state: dict[str, np.ndarray], bs_tag: int | None) -> int:
    """Load into ``model`` (the pre-trained compressor) the encoder/decoder pair the base
    station's decoder matches.

    When the base station rejected the last uplink it still holds the previous decoder,
    and the device must go back to it, or every later update would be refused as made
    against another decoder.

    Parameters
    ----------
    model : CSICompressor
        A fresh copy of the shared pre-trained compressor; loaded in place.
    state : dict
        What the device kept from earlier rounds (module docstring).
    bs_tag : int or None
        The base station's decoder tag from the round's instructions (``None``: not sent,
        keep the current pair, as the offline studies do).

    Returns
    -------
    int
        0: in step (current pair); 1: went back to the pair before the last update;
        2: reset to the pre-trained compressor (the base station holds the shared one).

    Raises
    ------
    ValueError
        The base station holds a decoder the device has none of.
    """
    current, previous = kept_pair(model, state, ""), kept_pair(model, state, PREVIOUS_PREFIX)
    candidates = [(0, current)] if bs_tag is None else [(0, current), (1, previous)]
    for code, pair in candidates:
        if pair is not None and (bs_tag is None or model.tag_of(pair[1]) == int(bs_tag)):
            model.load_encoder_arrays(pair[0])
            model.load_decoder_arrays(pair[1])
            return code
    if bs_tag is None or model.decoder_tag() == int(bs_tag):
        return 2 if current is not None else 0
    raise ValueError(
        f"the base station holds decoder {int(bs_tag):#010x} for this device, which matches neither its current "
        "decoder, the one before its last update, nor the pre-trained one"
    )
