"""The federated learngene loop: the manufacturer learns its unit from the fleet.

Paper: Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene", 2025,
eq. (21): an individual model inherits the unit's layers ``Theta_lg`` and fine-tunes them
to ``Theta_lg'`` under ``lam/2 ||Theta_lg' - Theta_lg||^2``. The paper stops there; here
each device codes its update ``Delta = Theta_lg' - Theta_lg`` with its class's codec
(``common.coding.registry``) and sends it; the base station decodes, aggregates and
publishes a new unit version, which goes down to the devices in later rounds.

What is coded: exactly the unit's tensors (``"{m}.weight"``, ``"{m}.bias"``, the
``M`` conv layers placed by the expansion strategy, :func:`unit_params`), named as in
the unit. The upsampling adaptor (Sec. V-C3, ``SDNet.col_upsample``) has no parameters,
so nothing of it is sent; the layers a device does not inherit (first and last conv, BN,
FC: their shapes follow its own depth and antennas) stay on the device. Devices of any
depth contribute through the same unit tensors.

This module holds what both ends agree on: the stage table ``[fleet.unit_update]``
(:data:`SPEC`), the fleet-level rule ``[manufacturer.federation]``
(:data:`FEDERATION_SCHEMA`), the record keys, the update itself (:func:`unit_update`),
the streamed weighted mean (:class:`WeightedMean`) and the version arithmetic
(:func:`add_delta`, :func:`version_meta`) that makes a version's tensors bit-identical
on both ends.

Versions. A *cohort* (the whole fleet, or one device class with ``cohort = "class"``)
has a lineage of unit versions starting at the manufacturer's unit ``v0``. Version
``k`` is ``v(k-1) + D(E(delta_k))``: the base station codes the aggregated step
``delta_k`` with the cohort's downlink codec, and *defines* the new version as its
parent plus the decoded step (float32 addition, :func:`add_delta`), so a device that
applies the same bytes to the parent holds bit-for-bit the same tensors and the same
content hash, whatever the downlink codec's loss. A device some versions behind receives
the chain of steps from the one it holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from common.coding.codec_base import unflatten
from common.schema import Field, ScenarioError, validate_section
from common.stage_spec import StageSpec

__all__ = [
    "STAGE_NAME",
    "UPDATE_KEY",
    "DOWN_KEY",
    "BASES_KEY",
    "META_KEY",
    "AGGREGATIONS",
    "RULE_OPTIONS",
    "STAGE_SCHEMA",
    "FEDERATION_SCHEMA",
    "SPEC",
    "validate_federation",
    "unit_params",
    "unit_update",
    "add_delta",
    "version_meta",
    "WeightedMean",
    "check_update",
    "codec_label",
]

STAGE_NAME = "unit_update"
#: uplink payload: the coded update of the unit's tensors
UPDATE_KEY = "unit_update"
#: instruction: the coded steps from the version the device holds to its cohort's (list of bytes)
DOWN_KEY = "unit-update-down"
#: instruction: the content hash each step applies to (list of str, same length)
BASES_KEY = "unit-update-bases"
#: instruction: JSON of the target version's metadata (content hash included)
META_KEY = "unit-update-meta"

#: aggregation rules: the sample-weighted mean (streamed), and Flower 1.41's server-side
#: strategies (``flwr.serverapp.strategy``), run by ``server.flower_aggregate``
AGGREGATIONS = ("weighted_mean", "fedavgm", "fedadam", "fedmedian", "fedtrimmedavg", "krum")
#: the keyword arguments of each Flower strategy a scenario may set (their defaults are Flower's)
RULE_OPTIONS: dict[str, tuple[str, ...]] = {
    "weighted_mean": (),
    "fedavgm": ("server_learning_rate", "server_momentum"),
    "fedadam": ("eta", "eta_l", "beta_1", "beta_2", "tau"),
    "fedmedian": (),
    "fedtrimmedavg": ("beta",),
    "krum": ("num_malicious_nodes",),
}


def _check_stage(cfg: dict[str, Any]) -> None:
    from common.coding.registry import make_codec

    for key, opts in (("codec", "options"), ("down_codec", "down_options")):
        try:
            make_codec(str(cfg[key]), **dict(cfg[opts]))
        except ScenarioError as e:
            raise ScenarioError(key, e.message) from None
        except (ValueError, TypeError, KeyError) as e:
            raise ScenarioError(key, f"{cfg[key]!r} with {opts} {dict(cfg[opts])}: {e}") from None


STAGE_SCHEMA: dict[str, Field] = {
    "codec": Field(str, "fp32", doc="uplink codec of the unit update (common.coding.registry: fp32, fp16, int8, int4, topk, qsgd, sign, spike_slab, nnc, plugins)"),
    "options": Field(dict, {}, doc="the uplink codec's options (e.g. fraction = 0.1 for topk, levels = 16 for qsgd, step = 1e-3 for spike_slab)"),
    "down_codec": Field(str, "fp32", doc="downlink codec of a new unit version's step (one per cohort: with cohort = 'fleet' every class must name the same)"),
    "down_options": Field(dict, {}, doc="the downlink codec's options"),
}

SPEC = StageSpec(STAGE_NAME, STAGE_SCHEMA, payload_keys=(UPDATE_KEY,), check=_check_stage)

FEDERATION_SCHEMA: dict[str, Field] = {
    "cohort": Field(str, "fleet", choices=("fleet", "class"), doc="who shares a unit lineage: the whole fleet, or each device class on its own (to compare codecs in one run)"),
    "publish_every_rounds": Field(int, 1, min=0, max=100_000, doc="publish a new version at the end of every K-th round (0: only by publish_after_updates)"),
    "publish_after_updates": Field(int, 0, min=0, max=10_000_000, doc="publish at the end of a round once at least M updates arrived since the last version (0: off)"),
    "aggregation": Field(str, "weighted_mean", choices=AGGREGATIONS, doc="weighted_mean (by train_samples, streamed) or a Flower 1.41 strategy's aggregate_train"),
    "options": Field(dict, {}, doc="the Flower strategy's arguments (RULE_OPTIONS), e.g. server_momentum = 0.9 for fedavgm"),
}


def validate_federation(raw: Mapping[str, Any] | None, fleet: list[dict[str, Any]], key: str = "manufacturer.federation") -> dict[str, Any]:
    """Validate ``[manufacturer.federation]`` against the resolved fleet.

    Raises
    ------
    ScenarioError
        Naming the key: unknown or mistyped keys, a rule option the rule does not take,
        no publication rule, or (``cohort = "fleet"``) classes naming different downlink codecs.
    """
    fed = validate_section(raw, FEDERATION_SCHEMA, key)
    allowed = RULE_OPTIONS[fed["aggregation"]]
    for k, v in fed["options"].items():
        if k not in allowed:
            raise ScenarioError(f"{key}.options.{k}", f"aggregation {fed['aggregation']!r} takes {list(allowed) or 'no options'}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ScenarioError(f"{key}.options.{k}", f"expected a finite number, got {v!r}")
    if fed["publish_every_rounds"] == 0 and fed["publish_after_updates"] == 0:
        raise ScenarioError(key, "no publication rule: set publish_every_rounds or publish_after_updates")
    for i, c in enumerate(fleet):
        if STAGE_NAME in c and "prune" in c:
            raise ScenarioError(f"fleet[{i}].{STAGE_NAME}", f"class {c['name']!r} also prunes: pruning reshapes the unit layers the update is coded over; enable one of the two")
    if fed["cohort"] == "fleet":
        downs = {(c["unit_update"]["down_codec"], json.dumps(c["unit_update"]["down_options"], sort_keys=True)) for c in fleet if STAGE_NAME in c}
        if len(downs) > 1:
            raise ScenarioError(key + ".cohort", f"with one fleet-wide lineage every class needs the same down_codec, got {sorted(downs)}; use cohort = 'class'")
    return fed


def codec_label(name: str, options: Mapping[str, Any]) -> str:
    """``"topk(fraction=0.1)"``: a codec and its options, for tables and legends."""
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{name}({opts})" if opts else name


def unit_params(strategy: str, n_conv: int, n_layers: int) -> dict[str, str]:
    """Unit tensor name -> parameter name in a depth-``n_conv`` individual SDNet
    (``"0.weight" -> "convs.5.weight"``), by the expansion strategy's placement."""
    from common.learngene.expansion import placement

    out: dict[str, str] = {}
    for m, layer in enumerate(placement(strategy, n_conv, n_layers)):
        for p in ("weight", "bias"):
            out[f"{m}.{p}"] = f"convs.{layer}.{p}"
    return out


def unit_update(params: Mapping[str, np.ndarray], unit_tensors: Mapping[str, np.ndarray], names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``Theta_lg' - Theta_lg`` of eq. (21), per unit tensor.

    Parameters
    ----------
    params : mapping of str -> np.ndarray
        The individual model's parameters after local training (``named_parameters``
        as float32 arrays).
    unit_tensors : mapping of str -> np.ndarray
        The unit the device inherited this round (``LearngeneUnit.tensors``).
    names : mapping of str -> str
        Unit tensor name -> parameter name (:func:`unit_params`).

    Returns
    -------
    dict of str -> np.ndarray
        float32 arrays of the unit tensors' shapes, keyed by unit tensor name.

    Raises
    ------
    ValueError
        A parameter is missing or has another shape (e.g. pruned away).
    """
    out: dict[str, np.ndarray] = {}
    for key, base in unit_tensors.items():
        p = names.get(key)
        if p is None or p not in params:
            raise ValueError(f"unit tensor {key!r} has no parameter in the model ({p!r})")
        new = np.asarray(params[p], dtype=np.float32)
        if new.shape != base.shape:
            raise ValueError(f"unit tensor {key!r} has shape {base.shape}, the model's {p} has {new.shape} (pruned?)")
        out[key] = np.subtract(new, base, dtype=np.float32)
    return out


def check_update(arrays: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray], finite: bool = True) -> None:
    """``ValueError`` unless ``arrays`` has exactly ``like``'s names and shapes (and, with
    ``finite``, finite values: ``Codec.decode`` already guarantees it for decoded streams)."""
    if set(arrays) != set(like):
        raise ValueError(f"update names {sorted(arrays)[:6]} do not match the unit's {sorted(like)[:6]}")
    for k, a in arrays.items():
        if a.shape != like[k].shape:
            raise ValueError(f"update {k!r} has shape {a.shape}, the unit's is {like[k].shape}")
        if finite and not np.all(np.isfinite(a)):
            raise ValueError(f"update {k!r} has non-finite values")


def add_delta(tensors: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``tensors + delta`` in float32, name by name: the one definition of a version step
    both ends compute (so their results, and content hashes, are bit-identical)."""
    return {k: np.add(np.asarray(tensors[k], dtype=np.float32), np.asarray(delta[k], dtype=np.float32), dtype=np.float32) for k in tensors}


def version_meta(parent_meta: Mapping[str, Any], rnd: int, down_codec: str) -> dict[str, Any]:
    """Metadata of the version published at the end of round ``rnd`` over ``parent_meta``
    (without ``content_hash``: the unit computes it)."""
    meta = {k: v for k, v in parent_meta.items() if k != "content_hash"}
    meta["parent"] = str(parent_meta["content_hash"])
    meta["generation"] = int(parent_meta.get("generation", 0)) + 1
    meta["published_round"] = int(rnd)
    meta["down_codec"] = str(down_codec)
    return meta


class WeightedMean:
    """Streamed weighted mean of named arrays: O(one update) memory whatever the count.

    ``add(w, arrays)`` accumulates ``sum_i w_i x_i`` (one flat float64 vector, names in the
    order the first update gave them) and ``sum_i w_i``; ``mean()`` returns
    ``sum_i w_i x_i / sum_i w_i`` as float32 arrays. This is FedAvg's aggregation
    (McMahan et al., 2017; Flower's ``aggregate_arrayrecords``) without holding the updates.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.sum: np.ndarray | None = None
        self.weight = 0.0
        self.count = 0

    def add(self, weight: float, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Accumulate one update; returns it as the flat float64 vector it added (for norms).

        Raises
        ------
        ValueError
            A weight that is not positive and finite, or other names or shapes than the
            first update's (nothing is accumulated then).
        """
        if self.sum is None:
            names, shapes = list(arrays), [np.shape(arrays[k]) for k in arrays]
        elif len(arrays) != len(self.names) or any(np.shape(arrays.get(k)) != s for k, s in zip(self.names, self.shapes)):
            raise ValueError("update names or shapes differ from the ones already aggregated")
        else:
            names, shapes = self.names, self.shapes
        flat = np.concatenate([np.asarray(arrays[k]).ravel() for k in names], dtype=np.float64) if names else np.zeros(0)
        return self._accumulate(weight, names, shapes, flat)

    def add_flat(self, weight: float, names: list[str], shapes: list[tuple[int, ...]], flat: np.ndarray) -> np.ndarray:
        """:meth:`add` of an update given as one flat vector (``float32`` or ``float64``,
        ``[sum(prod(shapes))]``) of the tensors ``names`` of ``shapes`` in that order
        (``Codec.decode_flat``'s form): no copy per tensor when the order is the aggregated one."""
        if self.sum is not None and (names != self.names or shapes != self.shapes):
            return self.add(weight, unflatten(names, shapes, flat))  # reorders, or refuses other names or shapes
        if self.sum is None and flat.shape != (sum(math.prod(s) for s in shapes),):
            raise ValueError(f"flat update of shape {flat.shape} does not hold shapes {shapes}")
        return self._accumulate(weight, list(names), [tuple(s) for s in shapes], np.asarray(flat, dtype=np.float64))

    def _accumulate(self, weight: float, names: list[str], shapes: list[tuple[int, ...]], flat: np.ndarray) -> np.ndarray:
        if not weight > 0 or not math.isfinite(weight):
            raise ValueError(f"weight must be positive and finite, got {weight}")
        if self.sum is None:
            self.names, self.shapes = names, shapes
            self.sum = weight * flat
        else:
            self.sum += weight * flat
        self.weight += float(weight)
        self.count += 1
        return flat

    @property
    def sums(self) -> dict[str, np.ndarray]:
        """``sum_i w_i x_i`` by name (float64 views of the running sum)."""
        return {} if self.sum is None else unflatten(self.names, self.shapes, self.sum)

    def mean(self) -> dict[str, np.ndarray]:
        if self.count == 0:
            raise ValueError("no updates to average")
        return {k: (v / self.weight).astype(np.float32) for k, v in self.sums.items()}
