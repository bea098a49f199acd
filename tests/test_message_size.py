"""Message sizes from the layout cache equal Flower's own deflated lengths, byte for byte."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from server.message_size import _exact_bytes, content_layout, message_bytes

_ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1), st.integers(-300, 300))
_floats = st.floats(allow_nan=False)
_config_values = st.one_of(
    st.booleans(), _ints, _floats, st.text(max_size=40), st.binary(max_size=300),
    # Flower codes an int list as sint64 or, when any element needs it, uint64: a list
    # mixing negatives with values above 2**63 - 1 is not serializable at all
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5), st.lists(st.integers(0, 2**64 - 1), max_size=5),
    st.lists(_floats, max_size=5), st.lists(st.text(max_size=8), max_size=4),
    st.lists(st.booleans(), max_size=4), st.lists(st.binary(max_size=8), max_size=3),
)
_metric_values = st.one_of(_ints, _floats, st.lists(_floats, max_size=5), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5))
_keys = st.text(min_size=1, max_size=12)


def _same_layout(v):
    """Another value whose encoding has the same length (different content)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v ^ 1 if v not in (0, 1, -1, -2) else v
    if isinstance(v, float):
        return -v
    if isinstance(v, str):
        return "x" * len(v.encode("utf-8"))
    if isinstance(v, bytes):
        return bytes(255 - b for b in v)
    return [_same_layout(x) for x in v]


@settings(max_examples=300, deadline=None)
@given(
    config=st.dictionaries(_keys, _config_values, max_size=6),
    metrics=st.dictionaries(_keys, _metric_values, max_size=6),
    names=st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=2, unique=True),
)
def test_layout_sizes_equal_flowers_deflated_lengths(config, metrics, names) -> None:
    a = RecordDict({names[0]: ConfigRecord(config), names[1]: MetricRecord(metrics)})
    b = RecordDict({names[0]: ConfigRecord({k: _same_layout(v) for k, v in config.items()}), names[1]: MetricRecord({k: _same_layout(v) for k, v in metrics.items()})})
    assert message_bytes(a) == _exact_bytes(a)
    if content_layout(b) == content_layout(a) and content_layout(a) is not None:
        assert message_bytes(b) == _exact_bytes(b)  # served from a's layout


def test_identical_records_and_arrays_are_sized_exactly() -> None:
    twin = RecordDict({"a": ConfigRecord({"k": 1}), "b": ConfigRecord({"k": 1})})
    assert content_layout(twin) is None  # Flower sends the shared object once
    assert message_bytes(twin) == _exact_bytes(twin) < message_bytes(RecordDict({"a": ConfigRecord({"k": 1}), "b": ConfigRecord({"k": 2})}))
    arrays = RecordDict({"w": ArrayRecord({"x": Array(np.arange(10, dtype=np.float32))}), "c": ConfigRecord({"r": 1})})
    assert content_layout(arrays) is None
    assert message_bytes(arrays) == _exact_bytes(arrays) > 40
