"""A small declarative schema for TOML sections, validated by pydantic.

Every section of a scenario (the fleet's, each stage table, each study's ``[study]``
table) is declared once as a ``dict[str, Field]``: type, default, range, choices, item
type and a one-line doc. :func:`section_model` turns such a dict into a strict pydantic
model (TOML ``true`` is not a number, an int is accepted for a float, unknown keys are
refused, NaN and infinity are refused); :func:`validate_section` runs it and reports the
first problem as a :class:`ScenarioError` naming the dotted key; :func:`section_json_schema`
gives the same model's JSON Schema (``airfleet schema``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

__all__ = ["ScenarioError", "Field", "validate_section", "section_model", "section_json_schema"]

_REQUIRED = object()


class ScenarioError(ValueError):
    """Bad scenario input. ``key`` is the dotted path, e.g. ``fleet[1].count``.

    Its text is ``file: key: message``; a file-level problem has an empty ``key`` and reads
    ``file: message``.
    """

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        super().__init__(self._text())

    def _text(self) -> str:
        return ": ".join(part for part in (self.file, self.key, self.message) if part)

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
        Allowed values (for lists: of every element).
    item : type, optional
        For ``list`` fields: the type of every element (needed for bounds or choices).
    doc : str
        One line for ``airfleet schema`` and the README.
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
        """True when the key has no default."""
        return self.default is _REQUIRED


# ----- Field -> pydantic ----------------------------------------------------------------

_CONFIG = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _types(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _type_name(typ: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _types(typ))


def _finite_tree(value: Any, path: str = "") -> Any:
    """Refuse NaN and infinity anywhere inside a free-form table (e.g. source options)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        sub = f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}" if path else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            raise PydanticCustomError("finite_number", "not finite", {"path": sub, "value": v})
        _finite_tree(v, sub)
    return value


def _not_bool(value: Any) -> Any:
    """Literal choices compare by ``==``: keep TOML ``true`` from matching a choice ``1``."""
    if isinstance(value, bool):
        raise PydanticCustomError("literal_error", "not a choice")
    return value


def _scalar(typ: type | tuple[type, ...], f: Field) -> Any:
    """The annotation of one value (a scalar field, or one element of a list field)."""
    types = _types(typ)
    if f.choices is not None:
        choice: Any = Literal[tuple(f.choices)]
        if bool not in types and not all(isinstance(c, str) for c in f.choices):
            choice = Annotated[choice, BeforeValidator(_not_bool)]
        return choice
    ann: Any = Union[tuple(dict[str, Any] if t is dict else t for t in types)] if len(types) > 1 else types[0]  # noqa: UP007
    if ann is dict:
        ann = Annotated[dict[str, Any], pydantic.AfterValidator(_finite_tree)]
    bounds = {k: v for k, v in (("ge", f.min), ("le", f.max)) if v is not None}
    return Annotated[ann, pydantic.Field(**bounds)] if bounds else ann


def _annotation(key: str, f: Field) -> Any:
    if f.type is list:
        if f.item is None:
            if f.min is not None or f.max is not None or f.choices is not None:
                raise TypeError(f"schema key {key!r}: a list with bounds or choices needs an item type")
            return Annotated[list[Any], pydantic.AfterValidator(_finite_tree)]
        return list[_scalar(f.item, f)]  # type: ignore[misc]
    return _scalar(f.type, f)


_MODELS: dict[tuple[tuple[str, int], ...], tuple[tuple[Field, ...], type[BaseModel]]] = {}


def section_model(schema: Mapping[str, Field]) -> type[BaseModel]:
    """The strict pydantic model of a section (built once per schema).

    Each key becomes a field aliased by its name (so a key may be any TOML key), with
    ``ge``/``le`` bounds, ``Literal`` choices, typed list items, the default and ``doc``
    as its description; the model forbids unknown keys, NaN and infinity.
    """
    cache_key = tuple((k, id(f)) for k, f in schema.items())
    hit = _MODELS.get(cache_key)
    if hit is not None:
        return hit[1]
    fields: dict[str, Any] = {}
    for i, (key, f) in enumerate(schema.items()):
        default = ... if f.required else f.default
        fields[f"k{i}"] = (_annotation(key, f), pydantic.Field(default, alias=key, title=key, description=f.doc or None))
    model = pydantic.create_model("Section", __config__=_CONFIG, **fields)
    if len(_MODELS) > 256:  # schemas are module constants; this only bounds odd callers
        _MODELS.clear()
    _MODELS[cache_key] = (tuple(schema.values()), model)  # holding the Fields keeps their ids unique
    return model


def _dotted(prefix: str, loc: tuple[Any, ...]) -> str:
    # loc = (key, index, ...) plus pydantic's union-member tags, which name no key
    key = f"{prefix}.{loc[0]}" if prefix else str(loc[0])
    return key + "".join(f"[{i}]" for i in loc[1:] if isinstance(i, int))


def _to_scenario_error(err: pydantic.ValidationError, schema: Mapping[str, Field], prefix: str) -> ScenarioError:
    """The first error, unknown keys first (a misspelt key explains the rest)."""
    first = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
    kind, loc, value, ctx = first["type"], first["loc"], first.get("input"), first.get("ctx") or {}
    key = _dotted(prefix, loc)
    f = schema.get(str(loc[0]))
    if kind == "extra_forbidden" or f is None:
        return ScenarioError(key, f"unknown key; expected one of {sorted(schema)}")
    if kind == "missing":
        return ScenarioError(key, "required key is missing")
    if kind == "greater_than_equal":
        return ScenarioError(key, f"{value!r} is below the minimum {ctx['ge']!r}")
    if kind == "less_than_equal":
        return ScenarioError(key, f"{value!r} is above the maximum {ctx['le']!r}")
    if kind == "literal_error":
        return ScenarioError(key, f"{value!r} is not one of {list(f.choices or ())}")
    if kind == "finite_number":
        if "path" in ctx:
            path = str(ctx["path"])
            return ScenarioError(key + ("" if path.startswith("[") else ".") + path, f"expected a finite number, got {ctx['value']!r}")
        return ScenarioError(key, f"expected a finite number, got {value!r}")
    typ = f.item if f.item is not None and any(isinstance(i, int) for i in loc[1:]) else f.type
    return ScenarioError(key, f"expected {_type_name(typ)}, got {type(value).__name__} {value!r}")


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
        Every schema key, in schema order, with defaults filled in (ints given for
        floats become floats).

    Raises
    ------
    ScenarioError
        Not a table, unknown key, missing required key, wrong type, NaN or infinity, or
        out-of-range value; the first one, naming its dotted key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ScenarioError(prefix, f"expected a table, got {type(raw).__name__} {raw!r}")
    try:
        return section_model(schema).model_validate(dict(raw)).model_dump(by_alias=True)
    except pydantic.ValidationError as e:
        raise _to_scenario_error(e, schema, prefix) from None


def section_json_schema(schema: Mapping[str, Field], title: str = "", description: str = "") -> dict[str, Any]:
    """The JSON Schema of a section: ``type: object`` with every key's type, bounds,
    choices, default and ``doc``, and ``additionalProperties: false``."""
    out = section_model(schema).model_json_schema(by_alias=True)
    out.pop("title", None)
    if title:
        out["title"] = title
    if description:
        out["description"] = description
    return out
