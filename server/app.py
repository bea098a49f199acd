"""Flower ServerApp: the manufacturer / base station and its round loop.

Before round 1 the server builds (or loads from its cache) the collective SDNet and its
learngene unit, then registers every device (a ``query`` message carrying the resolved
scenario). Each round it samples the available devices (seeded), sends each its
instructions and, the first time it takes part or when the unit changed, the unit;
collects replies under a per-round timeout; records a device that raised, timed out or
replied with malformed content as failed, and goes on with the rest. Every message's
real serialized size is counted, both ways. One row per device per round is appended to
``rounds.parquet`` after every round.

The run config (``context.run_config``) needs ``scenario`` (a path) and may give
``run-dir``; ``airfleet run`` and ``flwr run .`` both provide them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from common.profiles import DeviceProfile, device_profile, emulated_seconds, is_available, radio_emulation
from common.radio.round import OUT_OF_COVERAGE
from common.progress import ConsoleProgress
from common.protocol import (
    CONFIG_KEY,
    DEVICE_ID,
    FLOPS,
    METRIC_PREFIX,
    METRICS_KEY,
    N_PARAMS,
    PAYLOADS_KEY,
    REGISTER,
    ROUND,
    SCENARIO_KEY,
    SIDE_KEY,
    TRAIN,
    UNIT_KEY,
    UNIT_META_KEY,
    UNIT_VERSION,
    WALL_S,
)
from common.runtime import cache_root
from common.records import SETUP_SCHEMA, rounds_table, rows_to_table
from common.scenario import Scenario, load_scenario
from common.stage import BaseStationStage
from server.dispatch_order import WorkEstimates
from server.flower_dispatch import install as install_dispatch
from server.codec_report import codec_tables_text
from server.message_size import clean_error, message_bytes, payload_bytes
from server.radio_report import format_late_per_round, format_radio_cost_table, has_radio, late_per_round, radio_cost_table
from server.report import class_summary, format_class_table, report_run, round_latency
from server.results import (
    RunError,
    RunInterrupted,
    consolidate_rounds,
    discard_rounds_after,
    init_run_dir,
    load_checkpoint,
    new_run_dir,
    save_checkpoint,
    write_json,
    write_round_part,
    write_table,
)
from server.stages import BASE_STATION_STAGES

__all__ = ["app", "FleetServer", "clean_error", "resolve_scenario_path", "STOP"]

#: set (by ``airfleet run``'s SIGINT / SIGTERM handler) to stop the run at its next poll:
#: the round in flight is dropped, completed rounds and the checkpoint stay
STOP = threading.Event()


app = ServerApp()
install_dispatch()  # before any simulation engine starts: see server.flower_dispatch

#: a poll asks Flower about at most this many of the oldest pending messages ...
PULL_WINDOW = 64
#: ... and about all of them this often (s), and at the deadline
FULL_PULL_S = 1.0


def resolve_scenario_path(path: str) -> Path:
    """A scenario path from the run config: as given, else relative to the project root."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    alt = Path(__file__).resolve().parents[1] / p
    return alt if alt.is_file() else p


@dataclass
class _Device:
    profile: DeviceProfile
    node_id: int
    unit_version: str | None = None  # the unit version it is known to hold


@dataclass
class FleetServer:
    """The round loop, given a Flower Grid and a validated scenario."""

    grid: Grid
    scenario: Scenario
    run_dir: Path
    quiet: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        self.progress = ConsoleProgress(self.quiet or os.environ.get("AIRFLEET_QUIET") == "1")
        self.devices: dict[int, _Device] = {}
        self.missing: list[int] = []  # device ids that did not register
        self._stale_nodes: set[int] = set()  # node ids that left or never answered (adopt_new_nodes)
        self.done_round = 0  # the last completed round (from the checkpoint on resume)
        self._restored: dict[str, Any] | None = None
        self.unit: Any = None
        self.unit_records: tuple[ArrayRecord, ConfigRecord] | None = None
        self.unit_nbytes = 0
        self.stages: dict[str, BaseStationStage] = {}
        self.work = WorkEstimates()  # FLOPs per device round, for longest-first dispatch
        for name, half in BASE_STATION_STAGES.items():
            cfgs = {c["name"]: c[name] for c in self.scenario.classes if name in c}
            if cfgs:
                self.stages[name] = half.from_scenario(cfgs, self.scenario)
        self.stage_tables: dict[str, list[dict[str, Any]]] = {}  # rows stages add to run tables (unit_versions)

    # -- manufacturer -------------------------------------------------------------
    def build_learngene(self) -> None:
        """Train (or load) the collective model and extract the learngene unit."""
        if not any(c["workload"] == "sdnet" for c in self.scenario.classes):
            return
        from common.learngene.collective import collective_config, load_or_train_collective, unit_for_strategy
        from common.runtime import resolve_device

        m = self.scenario.data["manufacturer"]
        cfg = collective_config(self.scenario)
        root = cache_root(self.scenario.data["server"]["cache_dir"])
        dev = resolve_device(str(self.scenario.data["server"]["device"]))
        res = load_or_train_collective(cfg, root / "collective", progress=self.progress, device=dev, channel_cache=root / "channels")
        self.unit = unit_for_strategy(res, str(m["strategy"]))  # the unit the devices' strategy expands
        out = self.run_dir / "collective"
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / "significance.parquet", res.significance)
        # the unit that is distributed (and whose hash rows record): the strategy's, which is the
        # selected unit itself unless an X-inherit strategy cuts another segment
        self.unit.save(out / "learngene_unit.bin")
        self.unit_records = (
            ArrayRecord({k: Array(v) for k, v in self.unit.to_arrays().items()}),
            ConfigRecord(dict(self.unit.meta)),
        )
        self.unit_nbytes = sum(message_bytes(r) for r in self.unit_records)

    @property
    def unit_version(self) -> str | None:
        return None if self.unit is None else str(self.unit.meta["content_hash"])

    # -- registration ---------------------------------------------------------------
    def register(self) -> None:
        """Send the scenario to every node; learn each node's device id and class."""
        want = self.scenario.num_devices
        deadline = time.monotonic() + float(self.scenario.data["server"]["register_timeout_s"])
        node_ids = list(self.grid.get_node_ids())
        while len(node_ids) < want and time.monotonic() < deadline:
            self.progress.update(f"waiting for devices: {len(node_ids)}/{want} connected")
            time.sleep(0.5)
            node_ids = list(self.grid.get_node_ids())
        text = self.scenario.to_json()
        msgs = [
            Message(RecordDict({SCENARIO_KEY: ConfigRecord({"json": text})}), dst_node_id=nid, message_type=REGISTER, group_id="register")
            for nid in node_ids
        ]
        replies: dict[int, Message] = {}
        sizes_down = self._exchange(msgs, max(0.1, deadline - time.monotonic()), "registering devices", replies.__setitem__)
        setup = []
        for nid, reply in replies.items():
            if reply.has_error():
                raise RuntimeError(f"node {nid} failed to register: {clean_error(str(reply.error.reason))}")
            cfg = reply.content.config_records[CONFIG_KEY]
            did = int(cfg[DEVICE_ID])
            if did in self.devices:
                raise RuntimeError(f"two nodes claim device id {did} (nodes {self.devices[did].node_id} and {nid})")
            profile = device_profile(self.scenario, did)
            self.devices[did] = _Device(profile, nid)
            setup.append(
                {
                    "device_id": did,
                    "device_class": profile.class_name,
                    "node_id": nid,
                    "bytes_down": sizes_down[nid],
                    "bytes_up": payload_bytes(reply),
                }
            )
        self.missing = sorted(set(range(want)) - set(self.devices))
        for did in self.missing:  # who is missing: the device ids no node answered for
            setup.append({"device_id": did, "device_class": device_profile(self.scenario, did).class_name, "node_id": None, "status": "missing"})
        for row in setup:
            row.setdefault("status", "registered")
        write_table(self.run_dir / "setup.parquet", rows_to_table(sorted(setup, key=lambda r: r["device_id"]), SETUP_SCHEMA))
        got = len(self.devices)
        self.progress.update(f"registered {got}/{want} devices" + (f" ({len(self.missing)} missing)" if self.missing else ""), final=True)
        timeout_s = float(self.scenario.data["server"]["register_timeout_s"])
        if got == 0:
            raise RunError(
                f"no device registered within server.register_timeout_s = {timeout_s:g} s ({len(node_ids)}/{want} nodes connected): "
                "raise [server] register_timeout_s, lower [server] cpus_per_device, or run on a less busy machine"
            )
        fraction = float(self.scenario.data["server"]["min_registered_fraction"])
        need = max(1, math.ceil(fraction * want - 1e-9))
        if got < need:
            raise RunError(
                f"{got}/{want} devices registered within server.register_timeout_s = {timeout_s:g} s, "
                f"below server.min_registered_fraction = {fraction:g} ({need} needed); missing device ids: {_id_list(self.missing)}. "
                "Raise register_timeout_s, or lower min_registered_fraction to go on without them"
            )
        if self.missing:
            self.progress.update(
                f"going on without {len(self.missing)} device(s) (server.min_registered_fraction = {fraction:g}): {_id_list(self.missing)}; "
                "their rows are absent from rounds.parquet, setup.parquet lists them as missing",
                final=True,
            )

    def adopt_new_nodes(self) -> None:
        """Register nodes that joined after registration, before a round.

        A SuperNode restarted after a crash comes back with a new node id and an empty
        device: its device id moves to the new node and it gets the unit again (its kept
        state went with the old process). A device that was missing at registration joins
        the fleet now. Nodes that do not answer within the registration timeout are asked
        again never (a dead node can stay listed for a while: it must not cost every round a
        timeout).
        """
        known = {dev.node_id for dev in self.devices.values()} | self._stale_nodes
        new = [nid for nid in self.grid.get_node_ids() if nid not in known]
        if not new:
            return
        text = self.scenario.to_json()
        msgs = [Message(RecordDict({SCENARIO_KEY: ConfigRecord({"json": text})}), dst_node_id=nid, message_type=REGISTER, group_id="register") for nid in new]
        replies: dict[int, Message] = {}
        timeout = min(float(self.scenario.data["server"]["register_timeout_s"]), float(self.scenario.data["server"]["round_timeout_s"]))
        self._exchange(msgs, timeout, "registering new nodes", replies.__setitem__)
        self._stale_nodes.update(nid for nid in new if nid not in replies)
        for nid, reply in replies.items():
            if reply.has_error():
                continue
            did = int(reply.content.config_records[CONFIG_KEY][DEVICE_ID])
            if did in self.devices:
                old = self.devices[did].node_id
                self._stale_nodes.add(old)
                self.devices[did].node_id, self.devices[did].unit_version = nid, None
                self.progress.update(f"device {did} is back on a new node ({old} -> {nid}); it gets the unit again", final=True)
            elif 0 <= did < self.scenario.num_devices:
                self.devices[did] = _Device(device_profile(self.scenario, did), nid)
                self.missing = [d for d in self.missing if d != did]
                self.progress.update(f"device {did} registered late (node {nid}); it takes part from the next round", final=True)

    # -- messaging ------------------------------------------------------------------
    def _exchange(self, msgs: list[Message], timeout: float, label: str, on_reply: Callable[[int, Message], None]) -> dict[int, int]:
        """Push ``msgs`` (in this order: the engine starts them first-pushed first); pull
        replies until all arrive or ``timeout`` s pass.

        Each reply is handed to ``on_reply(node_id, reply)`` as it arrives. Returns the
        serialized size (bytes) of every message sent, by node id, measured in the idle
        time between polls (``server.message_size``: about 20 us for an instruction of a
        layout already seen; a message with arrays deflates and hashes every object).

        A poll asks Flower only about the oldest ``PULL_WINDOW`` pending messages (more
        when replies come faster): the engine runs messages in push order, so later ones
        cannot have replied yet, and Flower's cost of a pull grows with the ids asked
        about. Every ``FULL_PULL_S`` s, and at the deadline, a poll asks about all of
        them, so a reply out of order (an error, a slow device) is never left behind.
        """
        ids = list(self.grid.push_messages(msgs))
        by_id = {mid: m.metadata.dst_node_id for mid, m in zip(ids, msgs)}
        unsized = list(msgs)
        sizes: dict[int, int] = {}
        pending = dict.fromkeys(ids)  # insertion-ordered: oldest first
        window = PULL_WINDOW
        t0 = last_full = time.monotonic()
        end = t0 + timeout
        while pending:
            if STOP.is_set():
                raise RunInterrupted(f"interrupted during {label}")
            now = time.monotonic()
            full = now - last_full >= FULL_PULL_S or now >= end
            ask = list(pending) if full else list(itertools.islice(pending, window))
            last_full = now if full else last_full
            got = 0
            for r in self.grid.pull_messages(ask):
                mid = r.metadata.reply_to_message_id
                if mid in pending:
                    del pending[mid]
                    got += 1
                    on_reply(by_id[mid], r)
            window = max(PULL_WINDOW, 4 * got)
            self.progress.update(f"{label}: {len(msgs) - len(pending)}/{len(msgs)} replies, {time.monotonic() - t0:.1f} s")
            if not pending or now >= end:
                break
            poll_at = time.monotonic() + float(self.scenario.data["server"]["poll_interval_s"])
            while unsized and time.monotonic() < poll_at:
                m = unsized.pop()
                sizes[m.metadata.dst_node_id] = payload_bytes(m)
            time.sleep(max(0.0, min(poll_at, end) - time.monotonic()))
        for m in unsized:
            sizes[m.metadata.dst_node_id] = payload_bytes(m)
        return sizes

    # -- rounds ----------------------------------------------------------------------
    def run_round(self, rnd: int) -> list[dict[str, Any]]:
        """One round; returns its rows (one per device of the fleet)."""
        t0 = time.perf_counter()
        rows: dict[int, dict[str, Any]] = {}
        msgs: list[Message] = []
        unit_bytes: dict[int, int] = {}
        sent_unit: dict[int, bool] = {}
        trains_from: dict[int, str] = {}  # the unit version each device is told to train from (a stage may move it on)
        told: dict[int, dict[str, Any]] = {}  # each device's instructions
        for stage in self.stages.values():
            stage.begin_round(rnd, self.unit)
        for did, dev in sorted(self.devices.items()):
            base = {"round": rnd, "device_id": did, "device_class": dev.profile.class_name, "node_id": dev.node_id, "task_id": dev.profile.task.task_id}
            if not is_available(self.scenario, dev.profile, rnd):
                rows[did] = {**base, "status": "unavailable", "bytes_down": 0, "bytes_up": 0}
                continue
            instructions: dict[str, Any] = {ROUND: rnd, DEVICE_ID: did, UNIT_VERSION: self.unit_version or ""}
            for name, stage in self.stages.items():
                if name in dev.profile.cfg:
                    instructions.update(stage.instructions(dev.profile))
            told[did] = instructions
            trains_from[did] = str(instructions[UNIT_VERSION])
            content = RecordDict({CONFIG_KEY: ConfigRecord(instructions)})
            send_unit = self.unit_records is not None and dev.unit_version != self.unit_version
            if send_unit:
                arrays, meta = self.unit_records  # type: ignore[misc]
                content[UNIT_KEY] = arrays
                content[UNIT_META_KEY] = meta
                unit_bytes[did] = self.unit_nbytes
            sent_unit[did] = send_unit
            rows[did] = {**base, "status": "timeout", "error": f"no reply within {self.scenario.data['server']['round_timeout_s']} s"}
            msgs.append(Message(content, dst_node_id=dev.node_id, message_type=TRAIN, group_id=str(rnd)))
        by_node = {dev.node_id: did for did, dev in self.devices.items()}
        # longest device work first (server.dispatch_order): the engine starts them in push order
        rank = {p.device_id: i for i, p in enumerate(self.work.longest_first(d.profile for d in self.devices.values()))}
        msgs.sort(key=lambda m: rank[by_node[m.metadata.dst_node_id]])

        def on_reply(nid: int, reply: Message) -> None:
            did = by_node[nid]
            row = rows[did]
            side = reply.content.array_records.get(SIDE_KEY) if reply.has_content() else None
            row["bytes_side"] = message_bytes(side) if side is not None else 0
            # the evaluation-only side channel is not feedback: kept out of bytes_up and time
            row["bytes_up"] = payload_bytes(reply) - row["bytes_side"]
            try:
                self._read_reply(did, reply, row)
            except Exception as e:  # noqa: BLE001 - any bad reply is recorded, the round goes on
                row["status"] = "failed"
                row["error"] = f"{type(e).__name__}: {e}"
            if row["status"] == "ok":
                self.work.observe(self.devices[did].profile, int(row["flops"]))

        timeout = float(self.scenario.data["server"]["round_timeout_s"])
        sizes = self._exchange(msgs, timeout, f"round {rnd}/{self.scenario.rounds}", on_reply)
        for nid, size in sizes.items():
            row = rows[by_node[nid]]
            row["bytes_down"] = size
            row["bytes_unit"] = unit_bytes.get(by_node[nid], 0)
            row["unit_version"] = trains_from[by_node[nid]] or None  # the device checks it holds it
            row.setdefault("bytes_up", 0)
        self._emulate(rnd, rows)
        for did, row in rows.items():
            self._take_reply(did, row, told.get(did, {}))
            if row["status"] in ("ok", "late") and sent_unit.get(did):
                self.devices[did].unit_version = self.unit_version
        for stage in self.stages.values():
            for name, trows in stage.end_round(rnd).items():
                self.stage_tables.setdefault(name, []).extend(trows)
                write_table(self.run_dir / f"{name}.parquet", pa.Table.from_pylist(self.stage_tables[name]))
        wall = time.perf_counter() - t0
        for row in rows.values():
            row["round_wall_s"] = wall
        return [rows[d] for d in sorted(rows)]

    def _emulate(self, rnd: int, rows: dict[int, dict[str, Any]]) -> None:
        """Emulated time (and, with a ``[radio]`` table, airtime and energy) of every
        device that took part; a reply later than ``[server] round_deadline_s`` is late, one
        whose radio link gave up is out of coverage."""
        took_part = [did for did, row in rows.items() if row["status"] in ("ok", "failed", "timeout")]
        if "radio" in self.scenario.data:
            priced = radio_emulation(self.scenario, [self.devices[d].profile for d in took_part], [rows[d] for d in took_part], rnd)
            for did, cols in zip(took_part, priced):
                if cols.pop(OUT_OF_COVERAGE) and rows[did]["status"] == "ok":  # its reply never arrived: stages ignore it
                    rows[did]["status"] = "out_of_coverage"
                    rows[did]["error"] = f"radio link gave up after {cols['emulated_s']:.3f} s (out of coverage)"
                rows[did].update(cols)
        else:
            for did in took_part:
                row = rows[did]
                compute, transfer = emulated_seconds(self.devices[did].profile, int(row.get("flops") or 0), int(row.get("bytes_down") or 0), int(row.get("bytes_up") or 0))
                row["emulated_compute_s"], row["emulated_transfer_s"] = compute, transfer
                row["emulated_s"] = compute + transfer
        deadline = float(self.scenario.data["server"]["round_deadline_s"])
        if deadline > 0:
            for did in took_part:
                row = rows[did]
                if row["status"] == "ok" and not row["emulated_s"] <= deadline:
                    row["status"] = "late"
                    row["error"] = f"emulated {row['emulated_s']:.3f} s > deadline {deadline} s"

    def _read_reply(self, did: int, reply: Message, row: dict[str, Any]) -> None:
        if reply.has_error():
            row["status"] = "failed"
            row["error"] = clean_error(str(reply.error.reason))
            return
        m = reply.content.metric_records[METRICS_KEY]
        if int(m[DEVICE_ID]) != did:
            raise ValueError(f"reply claims device id {m[DEVICE_ID]}, expected {did}")
        payloads = reply.content.config_records.get(PAYLOADS_KEY, ConfigRecord())
        for k, v in payloads.items():
            if not isinstance(v, bytes):
                raise ValueError(f"payload {k!r} is {type(v).__name__}, expected bytes")
        metrics = {k[len(METRIC_PREFIX):]: float(v) for k, v in m.items() if k.startswith(METRIC_PREFIX)}
        row.update(
            status="ok",
            error=None,
            flops=int(m[FLOPS]),
            n_params=int(m[N_PARAMS]),
            wall_s=float(m[WALL_S]),
            coded_bits=8 * sum(len(v) for v in payloads.values()),
        )
        metrics.update({f"payload_bits_{k}": 8.0 * len(v) for k, v in payloads.items()})
        row["metrics"] = metrics
        row["_reply"] = (reply, {k: bytes(v) for k, v in payloads.items()})  # ingested once the round is priced

    def _take_reply(self, did: int, row: dict[str, Any], instructions: dict[str, Any]) -> None:
        """The base-station stages take device ``did``'s priced reply: an on-time one is
        ingested, a late one (``round_deadline_s``) only acknowledged
        (``BaseStationStage.acknowledge``: what the device completed its round with)."""
        if row["status"] == "ok":
            try:
                self._ingest(did, row)  # base-station stages aggregate on-time replies only
            except Exception as e:  # noqa: BLE001 - any bad reply is recorded, the round goes on
                row["status"] = "failed"
                row["error"] = f"{type(e).__name__}: {e}"
        elif row["status"] == "late" and "_reply" in row:
            profile = self.devices[did].profile
            for stage, own in self._stage_payloads(profile, row["_reply"][1]):
                stage.acknowledge(profile, instructions, own)
        row.pop("_reply", None)

    def _stage_payloads(self, profile: DeviceProfile, payloads: dict[str, bytes]) -> list[tuple[BaseStationStage, dict[str, bytes]]]:
        """The stages ``profile``'s class enables that ``payloads`` carries some of their keys
        for, each with its own payloads."""
        out = []
        for name, stage in self.stages.items():
            own = {k: v for k, v in payloads.items() if k in stage.spec.payload_keys}
            if name in profile.cfg and own:
                out.append((stage, own))
        return out

    def _ingest(self, did: int, row: dict[str, Any]) -> None:
        """The base-station stages take a device's on-time reply (its payloads, side channel)."""
        if "_reply" not in row:
            return
        reply, payloads = row["_reply"]
        metrics = row["metrics"]
        side_np: dict[str, Any] | None = None
        profile = self.devices[did].profile
        for stage, own in self._stage_payloads(profile, payloads):  # bytes since _read_reply
            if side_np is None:
                side = reply.content.array_records.get(SIDE_KEY)
                side_np = {k: a.numpy() for k, a in side.items()} if side is not None else {}
            try:
                out = stage.ingest(profile, own, side_np)
            except Exception as e:  # noqa: BLE001 - a bad bitstream fails this device only
                row["status"] = "failed"
                row["error"] = f"bitstream rejected: {type(e).__name__}: {e}"
                continue
            metrics.update({f"bs_{k}": float(v) for k, v in out.items()})

    # -- checkpoint and resume --------------------------------------------------------------
    def checkpoint(self, rnd: int) -> None:
        """Everything the rounds after ``rnd`` depend on at the base station, atomically,
        right after round ``rnd``'s rows: the unit version each device holds, and each
        base-station stage's state (``BaseStationStage.checkpoint``). The devices keep
        their own state (``clients.app``); availability, channels and training draws
        derive from (seed, device, round), so nothing else carries over."""
        arrays: dict[str, Any] = {}
        unresumable = []
        for name, stage in self.stages.items():
            try:
                arrays.update({f"stage/{name}/{k}": v for k, v in stage.checkpoint().items()})
            except NotImplementedError as e:  # the rows are kept; only --resume is refused
                unresumable.append(f"{name}: {e}")
        meta = {
            "unresumable": unresumable,
            "round": rnd,
            "seed": self.scenario.seed,
            "scenario": self.scenario.to_json(),
            "unit_version": self.unit_version,
            "device_unit_version": {str(d): dev.unit_version for d, dev in self.devices.items()},
            "stage_tables": {name: len(rows) for name, rows in self.stage_tables.items()},  # rows of completed rounds
        }
        save_checkpoint(self.run_dir, meta, arrays)
        self.done_round = rnd

    def restore(self) -> None:
        """Read the run directory's checkpoint (``--resume``): the last completed round, and
        drop the rows of any round after it (the one in flight when the run stopped)."""
        ck = load_checkpoint(self.run_dir)
        if ck is None:
            self.done_round = 0
        else:
            meta, arrays = ck
            if json.loads(meta["scenario"]) != json.loads(self.scenario.to_json()):
                raise RunError(f"{self.run_dir}: the checkpoint was written by another scenario than {self.scenario.path}; resume the run with its own scenario.toml")
            if meta.get("unresumable"):
                raise RunError(f"{self.run_dir}: cannot resume: " + "; ".join(meta["unresumable"]))
            self.done_round = int(meta["round"])
            self._restored = {"meta": meta, "arrays": arrays}
        gone = discard_rounds_after(self.run_dir, self.done_round)
        self.progress.update(
            f"resuming after round {self.done_round}/{self.scenario.rounds}" + (f" (round(s) {gone} in flight were dropped and run again)" if gone else ""),
            final=True,
        )

    def _apply_restored(self) -> None:
        meta, arrays = self._restored["meta"], self._restored["arrays"]  # type: ignore[index]
        if meta["unit_version"] != self.unit_version:
            raise RunError(f"{self.run_dir}: the checkpoint's learngene unit {meta['unit_version']} is not the one this run built ({self.unit_version})")
        for d, version in meta["device_unit_version"].items():
            if int(d) in self.devices:
                self.devices[int(d)].unit_version = version
        for name, stage in self.stages.items():
            prefix = f"stage/{name}/"
            stage.restore({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        for name, n in meta.get("stage_tables", {}).items():  # without the rows of the round in flight
            self.stage_tables[name] = pq.read_table(self.run_dir / f"{name}.parquet").to_pylist()[: int(n)]
        self._restored = None

    # -- the run ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Build the unit, register devices, run every round; write tables, plots, summary."""
        t_start = time.perf_counter()
        if self.resume:
            self.restore()
        self.build_learngene()
        self.register()
        if self._restored is not None:
            self._apply_restored()
        for rnd in range(self.done_round + 1, self.scenario.rounds + 1):
            if STOP.is_set():
                raise RunInterrupted(f"interrupted before round {rnd}")
            if rnd > 1:
                self.adopt_new_nodes()
            rows = self.run_round(rnd)
            write_round_part(self.run_dir, rnd, rounds_table(rows))
            self.checkpoint(rnd)
            ok = [r for r in rows if r["status"] == "ok"]
            sers = [r["metrics"].get("ser") for r in ok if r.get("metrics", {}).get("ser") is not None]
            ser = f", mean SER {sum(sers) / len(sers):.2e}" if sers else ""
            failed = sum(r["status"] in ("failed", "timeout") for r in rows)
            late = sum(r["status"] == "late" for r in rows)
            ooc = sum(r["status"] == "out_of_coverage" for r in rows)
            self.progress.update(
                f"round {rnd}/{self.scenario.rounds}: {len(ok)} ok, {late} late, " + (f"{ooc} out of coverage, " if ooc else "") + f"{failed} failed{ser}, "
                f"emulated latency {max((r['emulated_s'] for r in ok), default=0.0):.2f} s, wall {max((r['round_wall_s'] for r in rows), default=0.0):.1f} s",
                final=True,
            )
        table = consolidate_rounds(self.run_dir)
        summary = {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "rounds": self.scenario.rounds,
            "devices": len(self.devices),
            "missing_devices": self.missing,
            "unit_version": self.unit_version,
            "unit_params": None if self.unit is None else self.unit.n_params,
            "classes": class_summary(table),
            "round_latency": round_latency(table),
            "wall_s": time.perf_counter() - t_start,
        }
        if has_radio(table):
            summary["radio_cost"] = radio_cost_table(table)
            summary["late_per_round"] = late_per_round(table)
        write_json(self.run_dir / "summary.json", _finite(summary))
        report_run(self.run_dir)  # the same plots `airfleet report` draws
        if not self.progress.quiet:
            print("\n" + format_class_table(summary["classes"]))
            if "radio_cost" in summary:
                print("\ncost of an update on the air (mean per transfer):\n" + format_radio_cost_table(summary["radio_cost"]))
                print("late devices per round: " + format_late_per_round(summary["late_per_round"]))
            codecs = codec_tables_text(self.run_dir)
            if codecs:
                print("\n" + codecs)
            print(f"\nresults: {self.run_dir}")
        return summary


def _id_list(ids: list[int], most: int = 20) -> str:
    """``[0, 3, 7]`` as "0, 3, 7", cut after ``most`` ids."""
    head = ", ".join(str(i) for i in ids[:most])
    return head + (f", ... ({len(ids) - most} more)" if len(ids) > most else "")


def _finite(obj: Any) -> Any:
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for both ``airfleet run`` and ``flwr run .``."""
    scenario = load_scenario(resolve_scenario_path(str(context.run_config["scenario"])))
    run_dir_cfg = str(context.run_config.get("run-dir", "") or "")
    if run_dir_cfg:
        run_dir = Path(run_dir_cfg)
    else:
        run_dir = new_run_dir(os.environ.get("AIRFLEET_RUNS_DIR", "runs"), scenario.name)
    resume = str(context.run_config.get("resume", "") or "") == "1"
    if not resume:
        init_run_dir(run_dir, scenario)
    FleetServer(grid, scenario, run_dir, resume=resume).run()
