"""The spec half of the stage contract: :class:`StageSpec` and the registry of stages.

What both halves of a stage agree on (name, schema, checks, payload keys), and which stages
exist in which order. ``common.scenario`` validates a class's stage tables with it, so it
sits below the scenario; the halves that run a stage (``common.stage``) sit above the
device profiles and re-export everything here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.schema import Field, ScenarioError, validate_section

__all__ = ["StageSpec", "STAGE_MODULES", "stage_spec", "stage_names"]


@dataclass(frozen=True)
class StageSpec:
    """What both halves of a stage agree on.

    Parameters
    ----------
    name : str
        The class table's key (``[fleet.<name>]``) and the prefix of its metrics and state.
    schema : dict of str -> Field
        Keys, defaults and ranges of the table.
    payload_keys : tuple of str, default ()
        The uplink payloads (ConfigRecord bytes fields) its device half sends; the base
        station hands exactly these to the stage's base-station half.
    check : callable or None, default None
        The stage's own checks of a schema-valid table beyond types and ranges
        (``check(cfg)`` raises ``ValueError`` with what is wrong, or ``ScenarioError`` with
        the key inside the table), so that a table the stage would refuse fails at
        validation, not in round 1.
    """

    name: str
    schema: dict[str, Field]
    payload_keys: tuple[str, ...] = ()
    check: Callable[[dict[str, Any]], None] | None = None

    def validate(self, raw: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
        """Validate a class's table: schema, then the stage's own checks.

        Raises
        ------
        ScenarioError
            Naming ``key`` (the dotted path of the table) and what is wrong.
        """
        cfg = validate_section(raw, self.schema, key)
        if self.check is not None:
            try:
                self.check(cfg)
            except ScenarioError as e:
                raise ScenarioError(f"{key}.{e.key}" if e.key else key, e.message) from None
            except ValueError as e:
                raise ScenarioError(key, str(e)) from None
        return cfg


#: stage name -> module whose ``SPEC`` is its StageSpec, in the order a device runs them
STAGE_MODULES: dict[str, str] = {
    "influence": "common.influence.config",
    "unit_update": "common.learngene.federation",  # codes the trained unit layers, before pruning reshapes them
    "prune": "common.xrefine.config",
    "csi_feedback": "common.csi.config",
}


def stage_names() -> tuple[str, ...]:
    """Registered stages, in the order a device runs them."""
    return tuple(STAGE_MODULES)


def stage_spec(name: str) -> StageSpec:
    """The :class:`StageSpec` of stage ``name`` (``KeyError`` if none is registered)."""
    spec = importlib.import_module(STAGE_MODULES[name]).SPEC
    if spec.name != name:
        raise RuntimeError(f"{STAGE_MODULES[name]}.SPEC is named {spec.name!r}, registered as {name!r}")
    return spec
