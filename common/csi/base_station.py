"""The base station's side of CSI feedback: per-device decoders, decoding, rate accounting.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates": the receiver of Fig. 1 and Sec. III-B, which applies
the entropy-decoded decoder update (eq. 12-19) and decodes the latents with the updated
decoder; the distortion is the NMSE of eq. (11).

For each device the base station keeps its own copy of that device's decoder (starting
from the shared pre-trained compressor of the device's class). :meth:`FeedbackServer.ingest`
decodes an uplink in three steps and commits only when all of them succeed:

1. the decoder update (``csi_update``; empty = no update) is parsed against the device's
   current decoder (its CRC must match the update's base) and applied as
   ``theta + t * k`` into a temporary copy;
2. the latent stream (``csi_latents``) is decoded with the temporary decoder's tables (its
   model tag must match) and the CSI reconstructed;
3. the NMSE (eq. 11) is measured against the evaluation-only side channel ``csi_truth``
   (finite float32 planes of the decoded batch's shape).

Any malformed, truncated, forged or oversized stream, and any malformed or non-finite side
array, raises ``BitstreamError`` before the commit, so the stored decoders stay exactly as
they were. Nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.coding.bitstream import BitstreamError
from common.coding.update_codec import apply_update, unpack_update
from common.csi.config import GENIE_KEY, LATENT_KEY, TRUTH_KEY, UPDATE_KEY, make_prior_from_cfg, resolve_cfg
from common.csi.data import truth_to_csi
from common.csi.pretrain import pretrained_compressor
from common.models.csi_compressor import CSICompressor, bits_per_dim, csi_to_planes
from common.phy.metrics import nmse_db

__all__ = ["FeedbackServer"]


class FeedbackServer:
    """Per-device decoders at the base station.

    Parameters
    ----------
    cfg_by_class : dict of str -> dict
        Each device class's ``csi_feedback`` table (validated here; defaults filled).
    seed : int
        Scenario seed (recorded; the pre-trained models derive from their own configs).

    Examples
    --------
    >>> srv = FeedbackServer({"phone": {"scheme": "fm"}}, seed=0)  # doctest: +SKIP
    >>> out = srv.ingest(3, "phone", result.payloads, result.side)  # doctest: +SKIP
    >>> out["nmse_db"], out["bits_per_dim_update"]  # doctest: +SKIP
    """

    def __init__(self, cfg_by_class: dict[str, dict[str, Any]], seed: int) -> None:
        if not isinstance(cfg_by_class, dict):
            raise ValueError(f"cfg_by_class must map class names to csi_feedback tables, got {type(cfg_by_class).__name__}")
        self.seed = int(seed)
        self.cfg_by_class = {str(k): resolve_cfg(v) for k, v in cfg_by_class.items()}
        self._models: dict[str, CSICompressor] = {}
        self._base: dict[str, list[np.ndarray]] = {}
        self._decoders: dict[int, list[np.ndarray]] = {}
        self._class_of: dict[int, str] = {}
        self._tags: dict[tuple[int, str], int] = {}

    # ----- state --------------------------------------------------------------------
    def _model(self, device_class: str) -> CSICompressor:
        if device_class not in self.cfg_by_class:
            raise ValueError(f"unknown device class {device_class!r}; expected one of {sorted(self.cfg_by_class)}")
        if device_class not in self._models:
            m = pretrained_compressor(self.cfg_by_class[device_class])
            self._models[device_class] = m
            self._base[device_class] = m.decoder_arrays()
        return self._models[device_class]

    def _current(self, device_id: int, device_class: str) -> list[np.ndarray]:
        self._model(device_class)
        if device_id in self._decoders:
            if self._class_of[device_id] != device_class:
                raise ValueError(f"device {device_id} was of class {self._class_of[device_id]!r}, now {device_class!r}")
            return self._decoders[device_id]
        return self._base[device_class]

    def decoder_state(self, device_id: int) -> dict[str, np.ndarray]:
        """The base station's current decoder for ``device_id`` (name -> float32 copy).

        Raises
        ------
        KeyError
            If the device has never sent feedback.
        """
        if device_id not in self._class_of:
            raise KeyError(f"no feedback received from device {device_id}")
        m = self._model(self._class_of[device_id])
        arrays = self._decoders[device_id]
        return {n: a.copy() for (n, _), a in zip(m.decoder_named(), arrays)}

    def decoder_tag(self, device_id: int, device_class: str) -> int:
        """CRC-32 tag of the decoder the base station holds for ``device_id``.

        Sent with every round's instructions so that a device whose last uplink was
        rejected goes back to this decoder before coding again (see
        ``common.csi.sync.sync_with_base_station``).
        """
        key = (int(device_id), device_class)
        if key not in self._tags:
            self._tags[key] = self._model(device_class).tag_of(self._current(int(device_id), device_class))
        return self._tags[key]

    def checkpoint(self) -> dict[str, np.ndarray]:
        """Every device's current decoder (``<device>/<i>``) and class (``class/<device>``,
        UTF-8 bytes): what later rounds depend on. The pre-trained models and tags are
        rebuilt from the configs."""
        out: dict[str, np.ndarray] = {}
        for did, arrays in self._decoders.items():
            out.update({f"{did}/{i}": a for i, a in enumerate(arrays)})
            out[f"class/{did}"] = np.frombuffer(self._class_of[did].encode(), dtype=np.uint8)
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`checkpoint` returned (shapes checked against the class's decoder).

        Raises
        ------
        ValueError
            An array does not fit its class's decoder.
        """
        classes = {int(k.split("/", 1)[1]): bytes(v.astype(np.uint8)).decode() for k, v in arrays.items() if k.startswith("class/")}
        decoders: dict[int, list[np.ndarray]] = {}
        for did, cls in classes.items():
            base = self._base.get(cls) or (self._model(cls), self._base[cls])[1]
            got = [np.asarray(arrays[f"{did}/{i}"], dtype=np.float32).copy() for i in range(len(base))]
            if any(g.shape != b.shape for g, b in zip(got, base)):
                raise ValueError(f"checkpointed decoder of device {did} does not fit class {cls!r}")
            decoders[did] = got
        self._decoders.update(decoders)
        self._class_of.update(classes)
        self._tags.clear()

    # ----- decoding -----------------------------------------------------------------
    def _decoded_update(self, cfg: dict[str, Any], model: CSICompressor, base: list[np.ndarray], payloads: dict[str, bytes], side: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float, int]:
        data = payloads.get(UPDATE_KEY, b"")
        if not isinstance(data, (bytes, bytearray)):
            raise BitstreamError(f"{UPDATE_KEY} must be bytes, got {type(data).__name__}")
        n_params = model.n_decoder_params()
        if cfg["scheme"] == "ga":
            if len(data):
                raise BitstreamError("genie-aided devices send no coded update")
            g = side.get(GENIE_KEY)
            if g is None:
                return base, 0.0, 0
            g = np.asarray(g)
            if g.dtype != np.float32 or g.shape != (n_params,) or not np.all(np.isfinite(g)):
                raise BitstreamError(f"{GENIE_KEY} must be finite float32 [{n_params}], got {g.dtype} {g.shape}")
            out, pos = [], 0
            for a in base:
                out.append(g[pos : pos + a.size].reshape(a.shape).copy())
                pos += a.size
            return out, 0.0, int(sum(np.count_nonzero(a != b) for a, b in zip(out, base)))
        if len(data) == 0:
            return base, 0.0, 0
        if cfg["scheme"] != "fm":
            raise BitstreamError(f"scheme {cfg['scheme']!r} sends no decoder update, got {len(data)} bytes")
        prior = make_prior_from_cfg(cfg)
        model.load_decoder_arrays(base)
        k = unpack_update(bytes(data), prior, n_params, model.decoder_tag())
        return apply_update(base, k, prior.quantizer), 8.0 * len(data), int(np.count_nonzero(k))

    def ingest(self, device_id: int, device_class: str, payloads: dict[str, bytes], side: dict[str, np.ndarray]) -> dict[str, float]:
        """Decode one device's uplink, update its decoder, measure the reconstruction.

        Parameters
        ----------
        device_id : int
        device_class : str
            A key of ``cfg_by_class``.
        payloads : dict of str -> bytes
            ``"csi_update"`` (may be empty or absent: no update) and ``"csi_latents"``.
        side : dict of str -> np.ndarray
            ``"csi_truth"``: float32 ``[n, 2, n_ant, n_sc]`` (evaluation only, not counted);
            ``"csi_genie_decoder"`` for genie-aided classes.

        Returns
        -------
        dict
            ``nmse_db`` (eq. 11) and ``mse`` (eq. 9's distortion: mean squared error per real
            CSI dimension), nan without ground truth; ``latent_bits``, ``update_bits``
            (actual stream lengths x 8), ``bits_per_dim_latent``, ``bits_per_dim_update``,
            ``bits_per_dim_total``, ``update_nonzero``, ``n_samples``.

        Raises
        ------
        BitstreamError
            Malformed, truncated, forged, oversized or mismatched streams, or a
            ``csi_truth`` of another shape or dtype or with NaN/inf entries; the stored
            decoders are unchanged.
        ValueError
            Unknown device class.
        """
        cfg = self.cfg_by_class.get(device_class)
        if cfg is None:
            raise ValueError(f"unknown device class {device_class!r}; expected one of {sorted(self.cfg_by_class)}")
        if not isinstance(payloads, dict) or not isinstance(side, dict):
            raise BitstreamError("payloads and side must be dicts")
        model = self._model(device_class)
        base = self._current(int(device_id), device_class)
        try:
            new, update_bits, nnz = self._decoded_update(cfg, model, base, payloads, side)
            latents = payloads.get(LATENT_KEY)
            if not isinstance(latents, (bytes, bytearray)):
                raise BitstreamError(f"missing {LATENT_KEY!r} bytes")
            model.load_decoder_arrays(new)
            H_hat = model.decompress(bytes(latents))
        finally:
            model.load_decoder_arrays(self._current(int(device_id), device_class))
        n = int(H_hat.shape[0])
        dims = model.cfg.csi_dims
        nmse = mse = float("nan")
        truth = side.get(TRUTH_KEY)
        if truth is not None:
            t = np.asarray(truth)
            expect = (n, 2, model.cfg.n_ant, model.cfg.n_sc)
            if t.shape != expect or t.dtype != np.float32:
                raise BitstreamError(f"{TRUTH_KEY} must be float32 {expect}, got {t.dtype} {t.shape}")
            if not np.all(np.isfinite(t)):
                raise BitstreamError(f"{TRUTH_KEY} must be finite, got {int(np.count_nonzero(~np.isfinite(t)))} NaN/inf entries")
            nmse = nmse_db(H_hat, truth_to_csi(t), reduction="mean")  # eq. (11)
            mse = float((torch.from_numpy(t) - csi_to_planes(H_hat)).double().pow(2).mean())
        # commit only now: every stream decoded
        self._decoders[int(device_id)] = [np.array(a, dtype=np.float32, copy=True) for a in new]
        self._class_of[int(device_id)] = device_class
        self._tags.pop((int(device_id), device_class), None)
        latent_bits = 8.0 * len(latents)
        return {
            "nmse_db": nmse,
            "mse": mse,
            "latent_bits": latent_bits,
            "update_bits": update_bits,
            "bits_per_dim_latent": bits_per_dim(latent_bits, n, dims),
            "bits_per_dim_update": bits_per_dim(update_bits, n, dims),
            "bits_per_dim_total": bits_per_dim(latent_bits + update_bits, n, dims),
            "update_nonzero": float(nnz),
            "n_samples": float(n),
        }

    def reconstruct(self, device_id: int, device_class: str, latents: bytes) -> torch.Tensor:
        """Decode a latent stream with the device's current decoder (no state change)."""
        model = self._model(device_class)
        model.load_decoder_arrays(self._current(int(device_id), device_class))
        return model.decompress(latents)
