"""A small declarative schema for TOML sections: types, defaults, ranges, choices.

Used by ``common.scenario`` for the fleet and by every study module for its own
``[study]`` section, so that all bad input is reported the same way: one error naming
the file and the dotted key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ScenarioError", "Field", "validate_section"]

_REQUIRED = object()


class ScenarioError(ValueError):
    """Bad scenario input. ``key`` is the dotted path, e.g. ``fleet.classes[1].count``."""

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.key}: {self.message}"

    def in_file(self, file: str) -> ScenarioError:
        """The same error, attributed to ``file``."""
        return ScenarioError(self.key, self.message, file)


@dataclass(frozen=True)
class Field:
    """One key of a section.

    Parameters
    ----------
    type : type or tuple of types
        Accepted Python type(s) after TOML parsing (``float`` also accepts ``int``).
    default : Any, optional
        Value when the key is absent; omit to make the key required.
    min, max : float, optional
        Inclusive bounds for numbers (for lists: for every element).
    choices : tuple, optional
        Allowed values.
    item : type, optional
        For ``list`` fields: the type of every element.
    doc : str
        One line for ``airfleet validate --explain`` and the README.
    """

    type: type | tuple[type, ...]
    default: Any = _REQUIRED
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _type_ok(value: Any, typ: type | tuple[type, ...]) -> bool:
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types:
        return False  # TOML true is not a number
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


def _type_name(typ: type | tuple[type, ...]) -> str:
    types = typ if isinstance(typ, tuple) else (typ,)
    return " or ".join(t.__name__ for t in types)


def _check_value(key: str, value: Any, f: Field) -> Any:
    if not _type_ok(value, f.type):
        raise ScenarioError(key, f"expected {_type_name(f.type)}, got {type(value).__name__} {value!r}")
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and f.item is not None:
        for i, v in enumerate(value):
            if not _type_ok(v, f.item):
                raise ScenarioError(f"{key}[{i}]", f"expected {_type_name(f.item)}, got {type(v).__name__} {v!r}")
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if f.min is not None and v < f.min:
                raise ScenarioError(key, f"{v!r} is below the minimum {f.min!r}")
            if f.max is not None and v > f.max:
                raise ScenarioError(key, f"{v!r} is above the maximum {f.max!r}")
        if f.choices is not None and v not in f.choices:
            raise ScenarioError(key, f"{v!r} is not one of {list(f.choices)}")
    if float in (f.type if isinstance(f.type, tuple) else (f.type,)) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def validate_section(raw: Mapping[str, Any] | None, schema: Mapping[str, Field], prefix: str) -> dict[str, Any]:
    """Validate ``raw`` against ``schema`` and fill defaults.

    Parameters
    ----------
    raw : mapping or None
        The parsed TOML table (None: empty).
    schema : mapping of key -> Field
    prefix : str
        Dotted path of the section, used in error messages (e.g. ``"study"``).

    Returns
    -------
    dict
        Every schema key, with defaults filled in.

    Raises
    ------
    ScenarioError
        Unknown key, missing required key, wrong type or out-of-range value.
    """
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ScenarioError(prefix, f"expected a table, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for k in raw:
        if k not in schema:
            raise ScenarioError(f"{prefix}.{k}" if prefix else k, f"unknown key; expected one of {sorted(schema)}")
    for k, f in schema.items():
        key = f"{prefix}.{k}" if prefix else k
        if k in raw:
            out[k] = _check_value(key, raw[k], f)
        elif f.required:
            raise ScenarioError(key, "required key is missing")
        else:
            out[k] = copy.deepcopy(f.default)
    return out
