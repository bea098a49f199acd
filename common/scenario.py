"""Scenario files: schema, validation, defaults.

A scenario is one TOML file. Either it describes a **fleet run** (a manufacturer and a
heterogeneous fleet of devices, run as a Flower simulation) or it names a **study**
(a paper experiment, ``[study] kind = ...``, see ``studies``).

Fleet scenario, with every key and its default in ``TOP_SCHEMA`` and the section schemas
below (``airfleet schema`` prints them all as one JSON Schema)::

    name = "quickstart"        # run directory prefix
    seed = 7                   # every random draw derives from it
    rounds = 3

    [channels]                 # defaults for every device class
    source = "gbsm"            # a registered channel source (common.channels)
    n_rx = 32                  # BS antennas
    n_tx = 8                   # UE antennas
    snr_db = 25.0
    n_pilots = 16
    options = {}               # source-specific options (ChannelTask params)

    [manufacturer]             # collective SDNet and its learngene unit
    n_conv = 12
    tasks = 4                  # collective channel tasks (task ids 0..tasks-1)
    ...

    [server]
    round_timeout_s = 300.0
    cpus_per_device = 1.0

    [radio]                    # optional: transfers over a 5G NR cell (common.radio)
    bandwidth_hz = 20e6        # ... see common.radio.config.RADIO_SCHEMA

    [[fleet]]                  # one table per device class
    name = "phone"
    count = 4
    n_conv = 8                 # individual SDNet depth: the model size
    flops_per_s = 5e9          # emulated compute
    uplink_bps = 2e6
    downlink_bps = 2e7
    availability = 1.0         # probability of taking part in a round
    tasks = [100, 101]         # channel task ids its devices draw from

Device classes may add stage tables (``[fleet.influence]``, ``[fleet.prune]``,
``[fleet.csi_feedback]``), validated by the stage's own spec (``common.stage``): its
schema and its own checks.

``read_scenario_file(path)`` reads a file into a raw mapping (any scenario, fleet or
study); ``load_scenario(path)`` reads and validates a fleet scenario and returns a ``Scenario`` whose ``data`` is the fully resolved,
JSON-serialisable dict (every default filled in): it is what the run directory stores
as ``scenario.resolved.json`` and what the server ships to devices.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.radio.config import RADIO_CLASS_SCHEMA, RADIO_SCHEMA, validate_radio, validate_radio_class
from common.schema import Field, ScenarioError, section_json_schema, validate_section
from common.runtime import DEVICE_CHOICES, cache_root
from common.stage_spec import stage_names, stage_spec
from common.train_draws import TRAIN_DRAWS

if TYPE_CHECKING:
    from common.channels import ChannelTask

__all__ = [
    "Scenario",
    "DeviceSpec",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
    "read_scenario_file",
    "fleet_json_schema",
    "study_json_schema",
    "TOP_SCHEMA",
    "STUDY_TOP_SCHEMA",
    "CHANNELS_SCHEMA",
    "MANUFACTURER_SCHEMA",
    "SERVER_SCHEMA",
    "CLASS_SCHEMA",
]

TOP_SCHEMA: dict[str, Field] = {
    "name": Field(str, "scenario", doc="run directory prefix"),
    "seed": Field(int, 0, min=0, doc="root of every random draw"),
    "rounds": Field(int, 3, min=1, max=100_000, doc="server rounds"),
}

#: the top-level keys of a study scenario (besides its ``[study]`` table)
STUDY_TOP_SCHEMA: dict[str, Field] = {k: TOP_SCHEMA[k] for k in ("name", "seed")}

CHANNELS_SCHEMA: dict[str, Field] = {
    "source": Field(str, "gbsm", doc="channel source name (common.channels.available_sources())"),
    "n_rx": Field(int, 32, min=1, max=1024, doc="BS antennas"),
    "n_tx": Field(int, 8, min=1, max=64, doc="UE antennas"),
    "snr_db": Field(float, 25.0, min=-30.0, max=60.0, doc="operating SNR per receive antenna (dB)"),
    "n_pilots": Field(int, 16, min=1, max=1024, doc="orthogonal pilot symbols (>= n_tx)"),
    "options": Field(dict, {}, doc="source-specific options (ChannelTask params)"),
}

MANUFACTURER_SCHEMA: dict[str, Field] = {
    "n_conv": Field(int, 12, min=3, max=64, doc="collective SDNet depth N_conv^col"),
    "tasks": Field(int, 4, min=1, max=1000, doc="sequential collective tasks (task ids 0..tasks-1)"),
    "samples_per_task": Field(int, 2000, min=10, doc="training samples per collective task"),
    "epochs_per_task": Field(int, 2, min=1, doc="epochs per collective task"),
    "batch_size": Field(int, 100, min=1, doc="mini-batch of the collective's training (the paper's 500 goes with its 8,100 samples x 50 epochs a task; at this table's quick defaults 500 would give 8 Adam steps a task, and batch 100 reaches batch 500's held-out SER in about half the epochs at the same cost per epoch: docs/sdnet_fidelity.md Experiment 11, variant b100)"),
    "lr": Field(float, 1e-3, min=0.0, max=1.0),
    "epsilon": Field(float, 1e-4, min=0.0, doc="gradient-significance threshold, eq. (20)"),
    "unit_layers": Field(int, 4, min=1, max=64, doc="conv layers in the learngene unit"),
    "train_draws": Field(str, "per-epoch", choices=TRAIN_DRAWS, doc="'per-epoch' (default): fresh symbols, pilots and noise every epoch over each collective task's same channels, as device classes do ([[fleet]] train_draws, docs/sdnet_fidelity.md 'Redrawn noise'); 'fixed': each task's samples drawn once (the paper's)"),
    "strategy": Field(
        str,
        "bottom-inherit",
        choices=tuple(f"{p}-{m}" for p in ("top", "middle", "bottom") for m in ("embed", "inherit")),
        doc="expansion strategy devices use",
    ),
}

SERVER_SCHEMA: dict[str, Field] = {
    "round_timeout_s": Field(float, 600.0, min=0.1, doc="per-round reply timeout"),
    "round_deadline_s": Field(float, 0.0, min=0.0, doc="emulated-time deadline of a round: a device whose compute + downlink + uplink ends later is 'late' (0: none)"),
    "register_timeout_s": Field(float, 120.0, min=0.1, doc="time to wait for every device to register"),
    "min_registered_fraction": Field(
        float, 1.0, min=0.0, max=1.0,
        doc="fraction of the fleet that must register before round 1 (1.0: every device; below it the run goes on without the rest, listed as missing in setup.parquet and summary.json; at least one device is always needed)",
    ),
    "worker_niceness": Field(
        int, 0, min=0, max=19,
        doc="CPU niceness of the simulated devices' Ray workers (Ray's own default is 15, which starves them on a busy machine); 0 = the driver's priority. Ignored with --ray-address (the cluster's setting applies)",
    ),
    "poll_interval_s": Field(float, 0.1, min=0.001, max=10.0, doc="how often the server pulls replies (Flower's default 0.1 s)"),
    "cpus_per_device": Field(float, 1.0, min=0.01, max=512.0, doc="Ray CPUs per simulated device"),
    "gpus_per_device": Field(float, 0.0, min=0.0, max=64.0, doc="Ray GPUs per simulated device (fractional: devices share a GPU); 0 = none"),
    "device": Field(str, "cpu", choices=DEVICE_CHOICES, doc="torch device of the base station's training (collective model): cpu, cuda, or auto (CUDA when present)"),
    "cache_dir": Field(str, "", doc="artifact cache root: collective/, channels/ and csi_pretrain/ below it; '' = $AIRFLEET_CACHE_DIR, else ~/.cache/airfleet"),
}

CLASS_SCHEMA: dict[str, Field] = {
    "name": Field(str, doc="device class name"),
    "count": Field(int, min=1, max=100_000, doc="devices of this class"),
    "workload": Field(str, "sdnet", choices=("sdnet", "none"), doc="'none': reply at once (overhead studies)"),
    "n_conv": Field(int, 8, min=1, max=64, doc="individual SDNet depth N_conv^ind (the model size)"),
    "n_rx": Field(int, 0, min=0, max=1024, doc="BS antennas (0: [channels] default)"),
    "n_tx": Field(int, 0, min=0, max=64, doc="UE antennas (0: [channels] default)"),
    "snr_db": Field(float, -999.0, doc="operating SNR (default: [channels])"),
    "n_pilots": Field(int, 0, min=0, max=1024, doc="orthogonal pilot symbols of its LS channel estimate (0: [channels] default; >= n_tx)"),
    "flops_per_s": Field(float, 1e10, min=1.0, doc="emulated compute (FLOP/s)"),
    "uplink_bps": Field(float, 1e6, min=1.0, doc="emulated uplink rate (bit/s)"),
    "downlink_bps": Field(float, 1e7, min=1.0, doc="emulated downlink rate (bit/s)"),
    "availability": Field(float, 1.0, min=0.0, max=1.0, doc="probability of taking part in a round"),
    "tasks": Field(list, [100], item=int, min=0, doc="channel task ids its devices draw from"),
    "train_samples": Field(int, 2000, min=1, doc="local training samples (a quick default: SDNet goes below MMSE only on tasks of the kind docs/sdnet_fidelity.md Experiment 11 calls learners, with the paper's 8,100 samples and 20+ epochs)"),
    "val_samples": Field(int, 1000, min=1),
    "epochs": Field(int, 2, min=0, doc="local fine-tuning epochs per round (the model and its data carry over between rounds)"),
    "batch_size": Field(int, 100, min=1, doc="mini-batch: at equal epochs batch 100 reached batch 500's (the paper's) held-out SER in about half the epochs at the same cost per epoch on one CPU thread, and the same plateau where SDNet does not learn (docs/sdnet_fidelity.md Experiment 11, variant b100)"),
    "lr": Field(float, 1e-3, min=0.0, max=1.0),
    "train_draws": Field(str, "per-epoch", choices=TRAIN_DRAWS, doc="'per-epoch' (default): fresh symbols, pilots and noise every epoch over the device's same training channels (common.learngene.training.Redraw; a device receives pilots in every slot, so only new channels cost it). At equal cost it was better or equal on every task measured: on the learner tasks at Table III's 200 epochs SDNet stops memorising its fixed samples' noise and ends below its fixed-sample self on all 15 tasks of three seeds (docs/sdnet_fidelity.md, 'Redrawn noise'; docs/reproduction.md); in the quickstart (one seed) every class's SER came out lower. 'fixed': the samples drawn once, as the paper's Table III (scenarios/paper_recipe.toml)"),
    "lam": Field(float, 2e-15, min=0.0, doc="L2 weight toward the inherited layers, eq. (21) (paper: 2e-15)"),
    "hblind_baseline": Field(
        bool, False,
        doc="also report ser_hblind_fit: exact ML on x_ZF under the ZF-error covariance fitted from the device's training samples, no H (common.phy.metrics.hblind_fit_indices; SDNet's held-out SER stays above it on every task mapped, docs/sdnet_fidelity.md Experiment 11). An exact pruned search over 4**n_t candidates (its cost a round: benchmarks/hblind_search.py); not reported above n_t = 8",
    ),
    "crash_rounds": Field(list, [], item=int, min=1, doc="fault injection: devices raise in these rounds"),
    "device": Field(str, "cpu", choices=DEVICE_CHOICES, doc="torch device of the device's local fine-tuning: cpu, cuda, or auto (CUDA when its worker sees one; give Ray GPUs with [server] gpus_per_device)"),
    **RADIO_CLASS_SCHEMA,  # used with a [radio] table (common.radio)
}

@dataclass(frozen=True)
class DeviceSpec:
    """One device of the fleet, derived from the scenario alone.

    Attributes
    ----------
    device_id : int
        0..N-1, in class order; equals the Flower partition-id of its supernode.
    class_index : int
    class_name : str
    """

    device_id: int
    class_index: int
    class_name: str


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``data`` is the resolved dict; ``path`` where it came from."""

    data: dict[str, Any]
    path: str = "<memory>"

    @property
    def is_study(self) -> bool:
        return "study" in self.data

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def rounds(self) -> int:
        return int(self.data["rounds"])

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.data.get("fleet", []))

    def devices(self) -> list[DeviceSpec]:
        """Every device, class by class: ids 0..N-1."""
        out: list[DeviceSpec] = []
        for ci, c in enumerate(self.classes):
            for _ in range(int(c["count"])):
                out.append(DeviceSpec(len(out), ci, str(c["name"])))
        return out

    def device(self, device_id: int) -> DeviceSpec:
        """Device ``device_id`` (O(classes), not O(fleet)); ``ValueError`` outside the fleet."""
        first = 0
        for ci, c in enumerate(self.classes):
            if first <= device_id < first + int(c["count"]):
                return DeviceSpec(device_id, ci, str(c["name"]))
            first += int(c["count"])
        raise ValueError(f"device id {device_id} outside the fleet of {first} devices")

    def channel_task(self, task_id: int, n_rx: int, n_tx: int) -> ChannelTask:
        """The channel distribution a task id names in this scenario (server and devices
        must agree on it: the manufacturer's collective tasks and each device's own)."""
        from common.channels import ChannelTask

        ch = self.data["channels"]
        return ChannelTask.make(ch["source"], n_rx, n_tx, task_id, self.seed, **dict(ch["options"]))

    @property
    def num_devices(self) -> int:
        return sum(int(c["count"]) for c in self.classes)

    def to_json(self) -> str:
        """Canonical JSON of the resolved scenario (sorted keys)."""
        return json.dumps(self.data, sort_keys=True)

    def digest(self) -> str:
        """Short hash of the resolved scenario."""
        return hashlib.blake2b(self.to_json().encode(), digest_size=8).hexdigest()

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        """Re-validate a resolved scenario received as JSON (e.g. by a device)."""
        return parse_scenario(json.loads(text), "<json>", check_sources=False)


def _validate_class(raw: Any, key: str, channels: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ScenarioError(key, f"expected a table, got {type(raw).__name__} {raw!r}")
    stages = stage_names()
    stage_raw = {k: raw[k] for k in stages if k in raw}
    plain = {k: v for k, v in raw.items() if k not in stages}
    c = validate_section(plain, CLASS_SCHEMA, key)
    for k in ("n_rx", "n_tx"):
        if c[k] == 0:
            c[k] = int(channels[k])
    if c["snr_db"] == -999.0:
        c["snr_db"] = float(channels["snr_db"])
    if c["n_pilots"] == 0:
        c["n_pilots"] = int(channels["n_pilots"])
    if not c["tasks"]:
        raise ScenarioError(f"{key}.tasks", "needs at least one channel task id")
    if c["n_tx"] > c["n_rx"]:
        raise ScenarioError(f"{key}.n_tx", f"{c['n_tx']} UE antennas exceed {c['n_rx']} BS antennas (need n_rx >= n_tx)")
    validate_radio_class(c, key)
    for stage in stages:
        if stage in stage_raw:
            c[stage] = stage_spec(stage).validate(stage_raw[stage], f"{key}.{stage}")
    return c


def parse_scenario(raw: Mapping[str, Any], file: str = "<memory>", check_sources: bool = True) -> Scenario:
    """Validate a parsed TOML mapping and fill every default.

    ``check_sources=False`` skips looking the channel source up in the registry (which
    imports the sources); devices re-validating what the server already checked use it.

    Raises
    ------
    ScenarioError
        Naming ``file`` and the dotted key of the first problem found.
    """
    try:
        if not isinstance(raw, Mapping):
            raise ScenarioError("", f"expected a table of sections, got {type(raw).__name__}")
        raw = dict(raw)
        if "study" in raw:
            raise ScenarioError("study", "this is a study scenario: load it with studies.load_study_scenario")
        sections = {"channels", "manufacturer", "server", "fleet", "radio"}
        top = {k: v for k, v in raw.items() if k not in sections}
        data = validate_section(top, TOP_SCHEMA, "")
        data["channels"] = validate_section(raw.get("channels"), CHANNELS_SCHEMA, "channels")
        m_raw = raw.get("manufacturer")
        federation = m_raw.get("federation") if isinstance(m_raw, Mapping) else None
        if federation is not None:
            m_raw = {k: v for k, v in m_raw.items() if k != "federation"}
        data["manufacturer"] = validate_section(m_raw, MANUFACTURER_SCHEMA, "manufacturer")
        data["server"] = validate_section(raw.get("server"), SERVER_SCHEMA, "server")
        if "radio" in raw:
            data["radio"] = validate_radio(validate_section(raw["radio"], RADIO_SCHEMA, "radio"))
        ch = data["channels"]
        if ch["n_pilots"] < ch["n_tx"]:
            raise ScenarioError("channels.n_pilots", f"{ch['n_pilots']} pilots cannot be orthogonal for {ch['n_tx']} UE antennas")
        if check_sources:
            _check_source(ch["source"], "channels.source")
            _check_channel_options(ch)
        m = data["manufacturer"]
        if m["unit_layers"] > m["n_conv"]:
            raise ScenarioError("manufacturer.unit_layers", f"{m['unit_layers']} exceeds n_conv = {m['n_conv']}")
        fleet = raw.get("fleet")
        if fleet is not None and not isinstance(fleet, list):
            raise ScenarioError("fleet", f"expected an array of tables ([[fleet]]), got {type(fleet).__name__} {fleet!r}")
        if not fleet:
            raise ScenarioError("fleet", "needs at least one device class ([[fleet]] table)")
        data["fleet"] = [_validate_class(c, f"fleet[{i}]", ch) for i, c in enumerate(fleet)]
        _share_cache_root(data)
        if federation is not None or any("unit_update" in c for c in data["fleet"]):
            from common.learngene.federation import validate_federation  # the federated learngene loop

            m["federation"] = validate_federation(federation, data["fleet"])
        names = [c["name"] for c in data["fleet"]]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ScenarioError(f"fleet[{i}].name", f"duplicate device class name {n!r}")
        for i, c in enumerate(data["fleet"]):
            if c["workload"] == "sdnet" and c["n_conv"] < m["unit_layers"]:
                raise ScenarioError(f"fleet[{i}].n_conv", f"{c['n_conv']} conv layers cannot hold a {m['unit_layers']}-layer learngene unit")
            if c["workload"] == "sdnet" and c["n_rx"] != ch["n_rx"]:
                raise ScenarioError(f"fleet[{i}].n_rx", f"{c['n_rx']} BS antennas: the learngene unit is learnt at [channels] n_rx = {ch['n_rx']} and its rows are not resampled")
            if c["n_tx"] > c["n_pilots"]:
                raise ScenarioError(f"fleet[{i}].n_tx", f"{c['n_tx']} UE antennas need at least as many pilots ({c['n_pilots']})")
        return Scenario(data, file)
    except ScenarioError as e:
        raise e.in_file(file) from None


def _share_cache_root(data: dict[str, Any]) -> None:
    """``[server] cache_dir`` is the root of every artifact cache: a stage table that names
    no cache of its own (CSI backbones) caches below it."""
    root = str(data["server"]["cache_dir"])
    if not root:
        return
    for c in data["fleet"]:
        csi = c.get("csi_feedback")
        if csi is not None and not csi.get("cache_dir"):
            csi["cache_dir"] = str(cache_root(root) / "csi_pretrain")


def _check_source(name: str, key: str) -> None:
    from common.channels import available_sources

    if name not in available_sources():
        raise ScenarioError(key, f"unknown channel source {name!r}; expected one of {available_sources()}")


def _check_channel_options(ch: dict[str, Any]) -> None:
    """The built-in model's options, checked by building one task's environment (ms), so a
    bad ``[channels] options`` fails at validation, not in every device."""
    if ch["source"] != "gbsm":
        return
    from common.channels import ChannelTask
    from common.channels.gbsm import gbsm_environment

    try:
        gbsm_environment(ChannelTask.make("gbsm", ch["n_rx"], ch["n_tx"], 0, 0, **dict(ch["options"])))
    except (TypeError, ValueError) as e:
        raise ScenarioError("channels.options", str(e)) from None


def read_scenario_file(path: str | Path) -> dict[str, Any]:
    """Read a scenario TOML file into its raw mapping (fleet or study; not validated).

    Raises
    ------
    ScenarioError
        The file is missing or unreadable, is not UTF-8 text, or is not valid TOML; the
        message names the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError("", f"cannot read scenario file: {e.strerror}", str(p)) from None
    except UnicodeDecodeError as e:
        byte = e.object[e.start : e.start + 1].hex()
        raise ScenarioError("", f"not UTF-8 text (byte 0x{byte} at offset {e.start}); a scenario is a TOML file", str(p)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError("", f"not valid TOML: {e}", str(p)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and validate a fleet scenario TOML file.

    Raises
    ------
    ScenarioError
        The file is missing, is not valid TOML, or fails validation; the message names
        the file and the key.
    """
    return parse_scenario(read_scenario_file(path), str(Path(path)))


JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def _document(title: str, top: dict[str, Any], sections: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": title,
        "type": "object",
        "properties": {**top["properties"], **sections},
        "required": required,
        "additionalProperties": False,
    }


def _manufacturer_json_schema() -> dict[str, Any]:
    from common.learngene.federation import FEDERATION_SCHEMA

    m = section_json_schema(MANUFACTURER_SCHEMA, "[manufacturer]", "collective SDNet and its learngene unit")
    m["properties"]["federation"] = section_json_schema(
        FEDERATION_SCHEMA, "[manufacturer.federation]", "the federated learngene loop: how the unit is learnt from the devices' unit_update stages"
    )
    return m


def fleet_json_schema() -> dict[str, Any]:
    """The JSON Schema of a fleet scenario file (``airfleet schema``).

    Every section, every device-class key and every registered stage table
    (``[fleet.<stage>]``, from its :class:`~common.stage.StageSpec`), with each key's type,
    bounds, choices, default and doc, for editors (Taplo: ``#:schema FILE`` on the
    file's first line) and for checking a resolved scenario.
    """
    cls = section_json_schema(CLASS_SCHEMA, "[[fleet]]", "one device class")
    for name in stage_names():
        cls["properties"][name] = section_json_schema(
            stage_spec(name).schema, f"[fleet.{name}]", f"stage {name}: runs in this class's rounds when the table is present"
        )
    sections = {
        "channels": section_json_schema(CHANNELS_SCHEMA, "[channels]", "channel defaults for every device class"),
        "manufacturer": _manufacturer_json_schema(),
        "server": section_json_schema(SERVER_SCHEMA, "[server]", "the base station's run settings"),
        "radio": section_json_schema(RADIO_SCHEMA, "[radio]", "the cell every transfer goes over (common.radio); absent: fixed uplink_bps/downlink_bps"),
        "fleet": {"type": "array", "minItems": 1, "items": cls, "description": "device classes, one [[fleet]] table each"},
    }
    return _document("airfleet fleet scenario", section_json_schema(TOP_SCHEMA), sections, ["fleet"])


def study_json_schema(kind: str, schema: Mapping[str, Field]) -> dict[str, Any]:
    """The JSON Schema of a study scenario file: ``name``, ``seed`` and a ``[study]`` table
    with ``kind = "<kind>"`` and the study module's ``SCHEMA`` keys."""
    study = section_json_schema(schema, "[study]", f"the {kind} study")
    study["properties"] = {"kind": {"const": kind, "type": "string", "title": "kind", "description": "the study to run"}, **study["properties"]}
    study["required"] = ["kind", *study.get("required", [])]
    return _document(f"airfleet study scenario: {kind}", section_json_schema(STUDY_TOP_SCHEMA), {"study": study}, ["study"])
