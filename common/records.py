"""Arrow schemas of the result tables a fleet run writes.

``rounds.parquet``: one row per device per round. The core columns below are always
present, in this order; every metric a device reports (``ser``, ``ser_zf``,
``influence_ber_after``, ...) follows as a nullable float64 column of its own, so the
table opens directly in pandas, polars or DuckDB.

``setup.parquet``: one row per device for the registration exchange before round 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

__all__ = ["ROUND_CORE", "SETUP_SCHEMA", "WALL_COLUMNS", "STATUSES", "rounds_table", "rows_to_table"]

#: device status in a round; "late": replied, but its compute + downlink + uplink
#: emulated time missed ``[server] round_deadline_s`` (its bits and energy still counted);
#: "out_of_coverage": with a [radio] cell, its downlink or uplink gave up (common.radio.round)
STATUSES = ("ok", "late", "out_of_coverage", "failed", "timeout", "unavailable")

ROUND_CORE = pa.schema(
    [
        pa.field("round", pa.int32(), nullable=False),
        pa.field("device_id", pa.int32(), nullable=False),
        pa.field("device_class", pa.string(), nullable=False),
        pa.field("node_id", pa.uint64()),
        pa.field("task_id", pa.int32()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("n_params", pa.int64()),
        pa.field("flops", pa.int64()),  # FLOPs the device ran this round
        pa.field("bytes_down", pa.int64()),  # serialized server->device message, bytes
        pa.field("bytes_up", pa.int64()),  # serialized device->server message, bytes
        pa.field("bytes_unit", pa.int64()),  # of bytes_down: the learngene unit records
        pa.field("coded_bits", pa.int64()),  # entropy-coded payload bits in the reply
        pa.field("bytes_side", pa.int64()),  # evaluation-only side channel (not in bytes_up)
        pa.field("unit_version", pa.string()),
        pa.field("wall_s", pa.float64()),  # device-measured wall time of its work
        pa.field("emulated_compute_s", pa.float64()),  # flops / class FLOP/s
        pa.field("emulated_transfer_s", pa.float64()),  # bits / class link rates
        pa.field("emulated_s", pa.float64()),
        pa.field("round_wall_s", pa.float64()),  # server-measured wall time of the round
        # with a [radio] table (common.radio), else null: the round over the device's own link
        pa.field("radio_slots_down", pa.int64()),  # slots with PRBs for it (broadcast included)
        pa.field("radio_slots_up", pa.int64()),
        pa.field("radio_prb_slots_down", pa.float64()),  # PRB x slots (its share of a broadcast)
        pa.field("radio_prb_slots_up", pa.float64()),
        pa.field("airtime_down_s", pa.float64()),  # slots on the air x slot length
        pa.field("airtime_up_s", pa.float64()),
        pa.field("mcs_mean_down", pa.float64()),  # mean MCS index of its transport blocks
        pa.field("mcs_mean_up", pa.float64()),
        pa.field("harq_retx", pa.int64()),  # NACKed transport blocks sent again, both links
        pa.field("bits_delivered_down", pa.int64()),
        pa.field("bits_delivered_up", pa.int64()),
        pa.field("energy_tx_j", pa.float64()),  # uplink transmit energy drawn from the battery
        pa.field("energy_rx_j", pa.float64()),  # downlink receive energy: class rx_power_w x downlink airtime
        pa.field("energy_compute_j", pa.float64()),  # flops x class energy per FLOP
        pa.field("prb_util_down", pa.float64()),  # the round's PRB utilisation while transferring
        pa.field("prb_util_up", pa.float64()),
    ]
)

#: columns that legitimately differ between two runs with the same seed
WALL_COLUMNS = ("wall_s", "round_wall_s", "node_id")

SETUP_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.int32()),
        pa.field("device_class", pa.string()),
        pa.field("node_id", pa.uint64()),
        pa.field("bytes_down", pa.int64()),
        pa.field("bytes_up", pa.int64()),
        # "registered", or "missing": no node answered for it within register_timeout_s
        pa.field("status", pa.string()),
    ]
)


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows with exactly the schema's columns -> table."""
    rows = list(rows)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def rounds_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Round rows -> table: the core columns, then every metric column (sorted), float64.

    Each row is a dict with the core keys plus a ``metrics`` dict of float values.
    """
    rows = list(rows)
    metric_names = sorted({k for r in rows for k in (r.get("metrics") or {})} - set(ROUND_CORE.names))
    fields = list(ROUND_CORE) + [pa.field(n, pa.float64()) for n in metric_names]
    columns = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in ROUND_CORE]
    for n in metric_names:
        values = [(r.get("metrics") or {}).get(n) for r in rows]
        columns.append(pa.array([None if v is None else float(v) for v in values], type=pa.float64()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
