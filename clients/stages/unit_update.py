"""Device half of the ``unit_update`` stage: the federated learngene loop on the device
(``common.learngene.federation``; eq. 21 of the learngene paper gives the update).

Before training (:meth:`UnitUpdateDevice.receive_unit`): apply the coded steps the base
station sent from the unit version the device holds to its cohort's newest one. After
training (:meth:`UnitUpdateDevice.run_device`): code ``Theta_lg' - Theta_lg`` of the
inherited unit tensors with the class's codec (its error-feedback residual kept in the
stage's state) into the uplink payload.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from common.coding.registry import make_codec
from common.coding.update_codec import update_norm
from common.learngene import LearngeneUnit
from common.learngene.federation import BASES_KEY, DOWN_KEY, META_KEY, SPEC, UPDATE_KEY, add_delta, unit_update
from common.stage import DeviceContext, StageResult

__all__ = ["UnitUpdateDevice"]

_RESIDUAL = "residual/"


class UnitUpdateDevice:
    """Take new unit versions down; send coded unit updates up."""

    spec = SPEC

    def receive_unit(self, unit: LearngeneUnit, instructions: dict[str, Any], cfg: dict[str, Any]) -> tuple[LearngeneUnit, dict[str, float]]:
        """The unit to train from this round: ``unit`` (the one the device holds) moved
        forward by the instructed steps (:data:`DOWN_KEY`, :data:`BASES_KEY`,
        :data:`META_KEY`), skipping those it already applied.

        Returns
        -------
        (LearngeneUnit, dict)
            The unit, and ``down_bits`` (bits of the coded steps received this round).

        Raises
        ------
        ValueError
            The device holds none of the versions the steps start from, or the result's
            content hash is not the target's (a step did not decode to the same tensors).
        BitstreamError
            A step that does not decode.
        """
        steps = instructions.get(DOWN_KEY)
        if not steps:
            return unit, {"down_bits": 0.0}
        bases = [str(b) for b in instructions[BASES_KEY]]
        meta = json.loads(str(instructions[META_KEY]))
        bits = 8.0 * sum(len(s) for s in steps)
        held = str(unit.meta["content_hash"])
        if held == meta["content_hash"]:
            return unit, {"down_bits": bits}
        if held not in bases:
            raise ValueError(f"device holds unit {held[:12]}, the base station's steps start from {[b[:12] for b in bases]}")
        codec = make_codec(str(cfg["down_codec"]), **dict(cfg["down_options"]))
        tensors = dict(unit.tensors)
        for step in steps[bases.index(held):]:
            delta = codec.decode(bytes(step))
            if set(delta) != set(tensors) or any(delta[k].shape != tensors[k].shape for k in tensors):
                raise ValueError("a unit step does not match the unit's tensors")
            tensors = add_delta(tensors, delta)
        return LearngeneUnit.from_arrays(tensors, meta), {"down_bits": bits}

    def run_device(self, ctx: DeviceContext, cfg: dict[str, Any]) -> StageResult:
        """Code the update of the inherited unit tensors (``common.stage.DeviceStage``).

        Needs ``ctx.model`` (after local training), ``ctx.unit`` (the version it trained
        from) and ``ctx.unit_params`` (unit tensor -> parameter names). Payload
        :data:`UPDATE_KEY`; metrics ``bits`` (the stream), ``ideal_bits`` (the codec's
        estimate, labelled so), ``bits_per_param``, ``update_norm`` (L2 of the update
        before coding); state: the codec's residual (stateful codecs).
        """
        if ctx.model is None or ctx.unit is None or not ctx.unit_params:
            raise ValueError("the unit_update stage needs ctx.model, ctx.unit and ctx.unit_params")
        params = {k: v.detach().cpu().numpy() for k, v in ctx.model.named_parameters()}
        delta = unit_update(params, ctx.unit.tensors, ctx.unit_params)
        codec = make_codec(str(cfg["codec"]), **dict(cfg["options"]))
        residual = None
        if codec.stateful:
            kept = {k[len(_RESIDUAL):]: v for k, v in ctx.state.items() if k.startswith(_RESIDUAL)}
            if set(kept) == set(delta) and all(kept[k].shape == delta[k].shape for k in delta):
                residual = kept
        enc = codec.encode(delta, residual)
        n = sum(a.size for a in delta.values())
        state = {_RESIDUAL + k: np.asarray(v, dtype=np.float32) for k, v in (enc.residual or {}).items()}
        metrics = {
            "bits": 8.0 * len(enc.data),
            "ideal_bits": float(enc.ideal_bits),
            "bits_per_param": 8.0 * len(enc.data) / n,
            "update_norm": update_norm(delta.values()),
        }
        return StageResult(metrics=metrics, payloads={UPDATE_KEY: enc.data}, state=state)
