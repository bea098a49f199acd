"""Serialized sizes of Flower messages, in bytes, as Flower 1.41 transfers them.

Flower moves a message's content as a tree of deflated objects (RecordDict, records,
arrays, array chunks), each ``"<type> <child ids> <body length>" + body`` with children
named by their 64-hex SHA-256 id and identical objects sent once. :func:`message_bytes`
is the sum of those lengths: the bytes the records put on the wire.

Deflating and hashing a record tree costs about 0.1 ms of driver CPU a message, which
at 1,000 devices is a tenth of a round. The instructions and replies of a round differ
only in values whose encoded length is the same (a device id, a round number, a loss),
so a content that holds only ConfigRecords and MetricRecords is sized once per *layout*:
its keys, record types and, for every value, the facts its protobuf length depends on
(type; the varint lengths of an int; the byte length of a str or bytes; element layouts
of a list). Child ids are fixed-length, so two contents of one layout deflate to the same
lengths. Anything holding arrays is sized exactly, object by object.
"""

from __future__ import annotations

import re
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, no_object_id_recompute

__all__ = ["message_bytes", "payload_bytes", "content_layout", "clean_error"]

_INT64_MAX = 2**63 - 1
_MASK64 = 2**64 - 1
_LAYOUT_BYTES: dict[tuple, int] = {}
_MAX_LAYOUTS = 65536


def _exact_bytes(obj: Any) -> int:
    # each child's id is computed once (Flower's own no_object_id_recompute, as it uses
    # when pushing) instead of once per ancestor
    with no_object_id_recompute():
        return sum(len(o.deflate()) for o in get_all_nested_objects(obj).values())


def _varint_len(u: int) -> int:
    return max(1, (u.bit_length() + 6) // 7)


def _value_layout(v: Any) -> tuple:
    """What a record value's encoded length depends on (Flower tests bool before int)."""
    if isinstance(v, bool):
        return ("b",)
    if isinstance(v, int):
        zigzag = 2 * v if v >= 0 else -2 * v - 1
        return ("i", v > _INT64_MAX, _varint_len(zigzag), _varint_len(v & _MASK64))
    if isinstance(v, float):
        return ("f",)
    if isinstance(v, str):
        return ("s", len(v.encode("utf-8")))
    if isinstance(v, (bytes, bytearray)):
        return ("y", len(v))
    if isinstance(v, list):
        return ("l", tuple(_value_layout(x) for x in v))
    return ("?", type(v).__name__, repr(v))  # unknown: never shares a layout


def content_layout(content: RecordDict) -> tuple | None:
    """The layout key of ``content``, or None when it must be sized exactly.

    None when a record holds arrays (ArrayRecord) or two records are identical (Flower
    would send their shared object once).
    """
    records = list(content.values())
    if not all(type(r) in (ConfigRecord, MetricRecord) for r in records):
        return None
    items = [(type(r), list(r.items())) for r in records]
    if any(items[i] == items[j] for i in range(len(items)) for j in range(i)):
        return None
    return tuple(
        (name, type(r).__name__, tuple((k, _value_layout(v)) for k, v in r.items())) for name, r in content.items()
    )


def message_bytes(obj: Any) -> int:
    """Serialized size in bytes of a Flower record tree (a RecordDict or one record).

    Exactly the sum of Flower's deflated object lengths; record-only contents are looked
    up by :func:`content_layout` after the first of their layout.
    """
    key = content_layout(obj) if isinstance(obj, RecordDict) else None
    if key is None:
        return _exact_bytes(obj)
    size = _LAYOUT_BYTES.get(key)
    if size is None:
        if len(_LAYOUT_BYTES) >= _MAX_LAYOUTS:
            _LAYOUT_BYTES.clear()
        size = _LAYOUT_BYTES[key] = _exact_bytes(obj)
    return size


def payload_bytes(msg: Message) -> int:
    """Bytes a message carries: its serialized content records (ArrayRecords,
    ConfigRecords, MetricRecords), or for an error reply the device's error text
    (:func:`clean_error`).

    The Flower envelope (metadata: random node ids, timestamps, about 150 bytes) is left
    out on purpose: it is transport-specific and would make same-seed runs differ.
    """
    if msg.has_content():
        return message_bytes(msg.content)
    # the device's own error text: the engine's wrapping names process ids (Ray's pid=...)
    # whose digit count would make same-seed runs differ by a byte or two
    return len(clean_error(str(msg.error.reason)).encode()) if msg.has_error() else 0


def clean_error(reason: str) -> str:
    """The device's own exception message out of a Flower/Ray error reason."""
    marker = "Message: "
    text = reason[reason.rindex(marker) + len(marker):] if marker in reason else reason
    engine = re.match(r"<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)", text, re.S)  # the engine's own "<class 'X'>:<'msg'>"
    if engine and marker not in reason:
        text = f"{engine.group(1)}: {engine.group(2)}"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else reason.strip()
    return first.rstrip("'\">")[:2000]  # Flower wraps the text as "<class ...>:<'...'>"
