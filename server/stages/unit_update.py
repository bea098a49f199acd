"""Base-station half of the ``unit_update`` stage: the manufacturer learns its learngene
unit from the fleet (``common.learngene.federation``).

Per cohort (the fleet, or each class with ``cohort = "class"``) it keeps the lineage of
unit versions and which version each device holds; it tells each device the version to
train from (overriding the ``unit-version`` instruction) and sends the coded steps it
lacks; it decodes every on-time update with the class's codec, checks it against the
unit (names, shapes, finite values) and only then streams it into the cohort's running
aggregate, so a rejected stream leaves every piece of state as it was; a late reply is
not aggregated, but it tells which version the device now holds (:meth:`acknowledge`);
at the end of a round it publishes a new version when ``[manufacturer.federation]`` says so.

Memory: the weighted mean (and FedAvgM / FedAdam, which step on it) holds one float64
copy of the unit per cohort, whatever the number of updates; the robust rules
(FedMedian, FedTrimmedAvg, Krum) hold the decoded updates of the publication window.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from common.coding.codec_base import unflatten
from common.coding.registry import Codec, make_codec
from common.coding.update_codec import update_norm
from common.learngene import LearngeneUnit
from common.learngene.federation import (
    BASES_KEY,
    DOWN_KEY,
    META_KEY,
    SPEC,
    UPDATE_KEY,
    WeightedMean,
    add_delta,
    check_update,
    codec_label,
    validate_federation,
    version_meta,
)
from common.profiles import DeviceProfile
from common.protocol import UNIT_VERSION
from common.scenario import Scenario
from common.stage import BaseStationStage

__all__ = ["UnitUpdateBaseStation", "UNIT_VERSIONS_TABLE"]

#: the run table of published versions (``unit_versions.parquet``)
UNIT_VERSIONS_TABLE = "unit_versions"


class _Cohort:
    """One lineage: its versions, the steps between them, and the window being aggregated."""

    def __init__(self, name: str, root: LearngeneUnit, down: Codec, down_label: str) -> None:
        self.name = name
        self.versions: list[LearngeneUnit] = [root]
        self.index = {str(root.meta["content_hash"]): 0}
        self.steps: list[bytes] = [b""]  # steps[k]: the coded step from version k-1 to k
        self.down = down
        self.down_label = down_label
        self.down_residual: dict[str, np.ndarray] | None = None
        self.mean = WeightedMean()
        self.held: list[tuple[float, dict[str, np.ndarray]]] = []  # robust rules only
        self.up_bits = 0
        self.contributors: set[int] = set()

    @property
    def current(self) -> LearngeneUnit:
        return self.versions[-1]


class UnitUpdateBaseStation(BaseStationStage):
    """Decode, aggregate and publish unit versions; send each device the steps it lacks."""

    spec = SPEC

    def __init__(self, cfg_by_class: dict[str, dict[str, Any]], seed: int, federation: dict[str, Any] | None = None, weights: dict[str, float] | None = None) -> None:
        super().__init__(cfg_by_class, seed)
        self.fed = validate_federation(federation, [{"name": c, SPEC.name: cfg} for c, cfg in cfg_by_class.items()])
        self.weights = {c: float((weights or {}).get(c, 1.0)) for c in cfg_by_class}
        self.codecs = {c: make_codec(str(cfg["codec"]), **dict(cfg["options"])) for c, cfg in cfg_by_class.items()}
        self.cohorts: dict[str, _Cohort] = {}
        self.held: dict[int, str] = {}  # device id -> version it is known to hold
        self.rule: Any = None
        self._rules: dict[str, Any] = {}
        self._new_rows: list[dict[str, Any]] = []
        self._round_unit: dict[str, LearngeneUnit] = {}  # cohort -> version trained from this round

    @classmethod
    def from_scenario(cls, cfg_by_class: dict[str, dict[str, Any]], scenario: Scenario) -> UnitUpdateBaseStation:
        weights = {c["name"]: float(c["train_samples"]) for c in scenario.classes if c["name"] in cfg_by_class}
        return cls(cfg_by_class, scenario.seed, scenario.data["manufacturer"].get("federation"), weights)

    def cohort_of(self, class_name: str) -> str:
        return class_name if self.fed["cohort"] == "class" else "fleet"

    # -- the round -----------------------------------------------------------------------
    def begin_round(self, rnd: int, unit: LearngeneUnit | None) -> None:
        if unit is None or self.cohorts:
            return
        for c, cfg in self.cfg_by_class.items():
            name = self.cohort_of(c)
            if name not in self.cohorts:
                self.cohorts[name] = _Cohort(name, unit, make_codec(str(cfg["down_codec"]), **dict(cfg["down_options"])), codec_label(str(cfg["down_codec"]), cfg["down_options"]))
        h = str(unit.meta["content_hash"])
        self._new_rows += [self._row(k, h, None, 0, 0, 0.0, 0.0, 0, 0) for k in self.cohorts]

    def instructions(self, device: DeviceProfile) -> dict[str, Any]:
        if not self.cohorts:
            return {}
        co = self.cohorts[self.cohort_of(device.class_name)]
        cur = str(co.current.meta["content_hash"])
        held = self.held.get(device.device_id, str(co.versions[0].meta["content_hash"]))
        out: dict[str, Any] = {UNIT_VERSION: cur}
        if held != cur:
            first = co.index[held] + 1
            out[DOWN_KEY] = co.steps[first:]
            out[BASES_KEY] = [str(v.meta["content_hash"]) for v in co.versions[first - 1 : -1]]
            out[META_KEY] = json.dumps(co.current.meta, sort_keys=True)
        return out

    def ingest(self, device: DeviceProfile, payloads: dict[str, bytes], side: dict[str, np.ndarray]) -> dict[str, float]:
        """Decode and check ``device``'s update, then aggregate it (nothing changes on error).

        Raises
        ------
        BitstreamError
            The stream does not decode with the class's codec.
        ValueError
            It decodes to other names or shapes than the unit's, or to non-finite values.
        """
        data = payloads[UPDATE_KEY]
        co = self.cohorts[self.cohort_of(device.class_name)]
        names, shapes, values = self.codecs[device.class_name].decode_flat(data)  # refuses non-finite values
        cur = co.current.tensors
        if names != list(cur) or shapes != [a.shape for a in cur.values()]:  # another order, or refused
            check_update(unflatten(names, shapes, values), cur, finite=False)
        w = self.weights[device.class_name]
        flat = co.mean.add_flat(w, names, shapes, values)  # checked above: it cannot fail half-way
        if self.fed["aggregation"] in ("fedmedian", "fedtrimmedavg", "krum"):
            co.held.append((w, unflatten(names, shapes, values)))
        co.up_bits += 8 * len(data)
        co.contributors.add(device.device_id)
        self.held[device.device_id] = str(co.current.meta["content_hash"])  # it trained from it: instructions were verified
        return {"unit_update_decoded_norm": update_norm([flat]), "unit_generation": float(co.current.meta.get("generation", 0))}

    def acknowledge(self, device: DeviceProfile, instructions: dict[str, Any], payloads: dict[str, bytes]) -> None:
        """A late reply with an update: the device holds the version it was told to train
        from (it refuses to train from any other, ``clients.device``), so later rounds send
        it only the steps after that one. Its update is not aggregated."""
        co = self.cohorts.get(self.cohort_of(device.class_name))
        version = str(instructions.get(UNIT_VERSION, ""))
        if co is not None and UPDATE_KEY in payloads and version in co.index:
            self.held[device.device_id] = version

    def end_round(self, rnd: int) -> dict[str, list[dict[str, Any]]]:
        every, after = int(self.fed["publish_every_rounds"]), int(self.fed["publish_after_updates"])
        for co in self.cohorts.values():
            n = co.mean.count
            if n and ((every and rnd % every == 0) or (after and n >= after)):
                self._publish(co, rnd)
        rows, self._new_rows = self._new_rows, []
        return {UNIT_VERSIONS_TABLE: rows} if rows else {}

    # -- publication -----------------------------------------------------------------------
    def _aggregate(self, co: _Cohort) -> dict[str, np.ndarray]:
        """The cohort's step ``new - current`` by the scenario's rule."""
        rule = self.fed["aggregation"]
        mean = co.mean.mean()
        if rule == "weighted_mean":
            return mean
        from server.flower_aggregate import FlowerRule

        if co.name not in self._rules:
            self._rules[co.name] = FlowerRule(rule, self.fed["options"])
        cur = co.current.tensors
        contrib = [(1.0, add_delta(cur, mean))] if rule in ("fedavgm", "fedadam") else [(w, add_delta(cur, d)) for w, d in co.held]
        new = self._rules[co.name].aggregate(len(co.versions), cur, contrib)
        return {k: np.subtract(new[k], cur[k], dtype=np.float32) for k in cur}

    def _publish(self, co: _Cohort, rnd: int) -> None:
        step = self._aggregate(co)
        enc = co.down.encode(step, co.down_residual if co.down.stateful else None)
        decoded = co.down.decode(enc.data)  # exactly what the devices will add
        parent = co.current
        unit = LearngeneUnit(add_delta(parent.tensors, decoded), version_meta(parent.meta, rnd, co.down_label))
        h = str(unit.meta["content_hash"])
        if co.down.stateful:
            co.down_residual = enc.residual
        co.index[h] = len(co.versions)
        co.versions.append(unit)
        co.steps.append(enc.data)
        self._new_rows.append(self._row(co.name, h, str(parent.meta["content_hash"]), rnd, len(co.contributors), update_norm(step.values()), update_norm(decoded.values()), co.up_bits, 8 * len(enc.data)))
        co.mean, co.held, co.up_bits, co.contributors = WeightedMean(), [], 0, set()

    def _row(self, cohort: str, version: str, parent: str | None, rnd: int, contributors: int, norm: float, coded_norm: float, up_bits: int, down_bits: int) -> dict[str, Any]:
        co = self.cohorts[cohort]
        return {
            "cohort": cohort,
            "generation": co.index.get(version, 0),
            "version": version,
            "parent": parent,
            "round_published": rnd,
            "contributors": contributors,
            "aggregation": self.fed["aggregation"],
            "update_norm": norm,  # L2 of the aggregated step before downlink coding
            "coded_update_norm": coded_norm,  # L2 of the step the version adds (after coding)
            "up_bits": up_bits,  # uplink bits of the updates aggregated into it
            "down_codec": co.down_label,
            "down_bits": down_bits,  # bits of the coded step to it from its parent
        }

    # -- checkpoint (airfleet run --resume, issue #22) --------------------------------------
    def checkpoint(self) -> dict[str, np.ndarray]:
        """Every cohort's lineage (versions, coded steps), the window being aggregated (the
        streamed sum, the held updates of robust rules, bits, contributors), the downlink
        residual, which version each device holds and the Flower rules' server-side
        optimizer state (FedAdam's moments, FedAvgM's momentum), as flat arrays plus one
        JSON blob."""
        out: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"held": {str(d): v for d, v in self.held.items()}, "cohorts": {}, "rules": sorted(self._rules)}
        for name, rule in self._rules.items():
            out.update({f"{name}/rule/{k}": a for k, a in rule.state().items()})
        for name, co in self.cohorts.items():
            p = f"{name}/"
            for k, v in enumerate(co.versions):
                out.update({f"{p}v{k}/{t}": a for t, a in v.tensors.items()})
            for k, s in enumerate(co.steps):
                out[f"{p}step{k}"] = np.frombuffer(s, dtype=np.uint8)
            out.update({f"{p}res/{t}": a for t, a in (co.down_residual or {}).items()})
            if co.mean.sum is not None:
                out[f"{p}mean"] = co.mean.sum
            for j, (_, d) in enumerate(co.held):
                out.update({f"{p}held{j}/{t}": a for t, a in d.items()})
            meta["cohorts"][name] = {
                "version_meta": [v.meta for v in co.versions],
                "residual": co.down_residual is not None,
                "mean": {"names": co.mean.names, "shapes": [list(s) for s in co.mean.shapes], "weight": co.mean.weight, "count": co.mean.count},
                "held_weights": [w for w, _ in co.held],
                "up_bits": co.up_bits,
                "contributors": sorted(co.contributors),
            }
        out["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what :meth:`checkpoint` returned (the cohorts' down codecs come from the
        scenario, as in ``begin_round``)."""
        if not arrays:
            return
        meta = json.loads(bytes(arrays["__meta__"].astype(np.uint8)).decode())
        self.held = {int(d): str(v) for d, v in meta["held"].items()}
        self.cohorts = {}
        for c, cfg in self.cfg_by_class.items():
            name = self.cohort_of(c)
            if name in self.cohorts or name not in meta["cohorts"]:
                continue
            m, p = meta["cohorts"][name], f"{name}/"

            def group(prefix: str) -> dict[str, np.ndarray]:
                return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

            versions = [LearngeneUnit(group(f"{p}v{k}/"), dict(vm)) for k, vm in enumerate(m["version_meta"])]
            co = _Cohort(name, versions[0], make_codec(str(cfg["down_codec"]), **dict(cfg["down_options"])), codec_label(str(cfg["down_codec"]), cfg["down_options"]))
            co.versions = versions
            co.index = {str(v.meta["content_hash"]): k for k, v in enumerate(versions)}
            co.steps = [bytes(arrays[f"{p}step{k}"].astype(np.uint8)) for k in range(len(versions))]
            co.down_residual = group(f"{p}res/") if m["residual"] else None
            mm = m["mean"]
            if mm["count"]:
                co.mean.names, co.mean.shapes = list(mm["names"]), [tuple(s) for s in mm["shapes"]]
                co.mean.sum, co.mean.weight, co.mean.count = np.array(arrays[f"{p}mean"], dtype=np.float64), float(mm["weight"]), int(mm["count"])
            co.held = [(float(w), group(f"{p}held{j}/")) for j, w in enumerate(m["held_weights"])]
            co.up_bits, co.contributors = int(m["up_bits"]), {int(d) for d in m["contributors"]}
            self.cohorts[name] = co
        self._rules = {}
        if meta.get("rules"):
            from server.flower_aggregate import FlowerRule

            for name in meta["rules"]:
                rule = FlowerRule(self.fed["aggregation"], self.fed["options"])
                rule.load_state({k[len(f"{name}/rule/"):]: v for k, v in arrays.items() if k.startswith(f"{name}/rule/")})
                self._rules[name] = rule
