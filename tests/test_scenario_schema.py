"""``airfleet schema``: the JSON Schema an editor checks scenario files with."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cli.main import load_any_scenario, main
from common.scenario import CHANNELS_SCHEMA, CLASS_SCHEMA, MANUFACTURER_SCHEMA, SERVER_SCHEMA, TOP_SCHEMA
from common.radio.config import RADIO_SCHEMA
from common.stage import stage_names, stage_spec
from studies import STUDIES, load_study

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))


def _schema(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "schema.json"
    assert main(["schema", *args, "-o", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def fleet_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _schema(tmp_path_factory.mktemp("schema"))


def _errors(schema: dict[str, Any], data: Any) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(data)]


def test_schema_lists_every_key_of_every_section(fleet_schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(fleet_schema)
    props = fleet_schema["properties"]
    cls = props["fleet"]["items"]
    sections = {"": (fleet_schema, TOP_SCHEMA), "channels": (props["channels"], CHANNELS_SCHEMA),
                "manufacturer": (props["manufacturer"], MANUFACTURER_SCHEMA), "server": (props["server"], SERVER_SCHEMA),
                "radio": (props["radio"], RADIO_SCHEMA)}
    sections |= {f"fleet.{s}": (cls["properties"][s], stage_spec(s).schema) for s in stage_names()}
    assert set(props) == set(TOP_SCHEMA) | {"channels", "manufacturer", "server", "fleet", "radio"}
    assert set(cls["properties"]) == set(CLASS_SCHEMA) | set(stage_names()) >= {"influence", "prune", "csi_feedback"}
    assert sorted(cls["required"]) == ["count", "name"]
    for where, (section, fields) in [*sections.items(), ("fleet", (cls, CLASS_SCHEMA))]:
        assert section["additionalProperties"] is False, where
        for key, f in fields.items():
            p = section["properties"][key]
            assert p.get("description", "") == f.doc, f"{where}.{key}"
            if f.required:
                assert "default" not in p and key in section["required"], f"{where}.{key}"
            else:
                assert p["default"] == f.default, f"{where}.{key}"


def test_schema_carries_types_bounds_and_choices(fleet_schema: dict[str, Any]) -> None:
    cls = fleet_schema["properties"]["fleet"]["items"]["properties"]
    assert cls["availability"] == {
        "type": "number", "minimum": 0.0, "maximum": 1.0, "default": 1.0, "title": "availability",
        "description": "probability of taking part in a round",
    }
    assert cls["tasks"]["type"] == "array" and cls["tasks"]["items"] == {"type": "integer", "minimum": 0}
    assert cls["workload"]["enum"] == ["sdnet", "none"]
    assert cls["csi_feedback"]["properties"]["scheme"]["enum"] == ["none", "eo", "fm", "ga"]
    assert cls["csi_feedback"]["properties"]["dense_latent"]["type"] == "boolean"
    assert "bottom-inherit" in fleet_schema["properties"]["manufacturer"]["properties"]["strategy"]["enum"]
    assert fleet_schema["properties"]["channels"]["properties"]["options"]["type"] == "object"
    assert fleet_schema["required"] == ["fleet"] and fleet_schema["properties"]["fleet"]["minItems"] == 1


@pytest.mark.parametrize("path", [p for p in SCENARIOS if "study" not in tomllib.loads(p.read_text())], ids=lambda p: p.name)
def test_shipped_fleet_scenarios_validate_against_the_schema(fleet_schema: dict[str, Any], path: Path) -> None:
    assert _errors(fleet_schema, tomllib.loads(path.read_text())) == []  # what the editor sees
    assert _errors(fleet_schema, load_any_scenario(path).data) == []  # what the run stores


@pytest.mark.parametrize("path", [p for p in SCENARIOS if "study" in tomllib.loads(p.read_text())], ids=lambda p: p.name)
def test_shipped_study_scenarios_validate_against_their_schema(tmp_path: Path, path: Path) -> None:
    kind = tomllib.loads(path.read_text())["study"]["kind"]
    schema = _schema(tmp_path, "--study", kind)
    jsonschema.Draft7Validator.check_schema(schema)
    assert set(schema["properties"]["study"]["properties"]) == {"kind"} | set(load_study(kind).SCHEMA)
    assert _errors(schema, tomllib.loads(path.read_text())) == []
    assert _errors(schema, load_any_scenario(path).data) == []
    other = next(k for k in STUDIES if k != kind)
    assert _errors(schema, {"study": {"kind": other}}) != []


def _edit(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = path.split("/")
    node: Any = out
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("fleet/0/availability", 1.5),
        ("fleet/0/count", "two"),
        ("fleet/0/colour", 1),
        ("fleet/0/tasks", [1, "x"]),
        ("fleet/0/csi_feedback", {"scheme": "zz"}),
        ("fleet/0/influence", {"bugdet": 3}),
        ("manufacturer/strategy", "sideways"),
        ("server/cpus_per_device", 0.0),
        ("rounds", 0),
        ("fleet", []),
    ],
)
def test_schema_refuses_bad_values(fleet_schema: dict[str, Any], path: str, value: Any) -> None:
    data = load_any_scenario(ROOT / "scenarios" / "quickstart.toml").data
    assert _errors(fleet_schema, data) == []
    assert _errors(fleet_schema, _edit(data, path, value)) != []


def test_schema_to_stdout_and_unknown_study(capsys: pytest.CaptureFixture[str], fleet_schema: dict[str, Any]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == fleet_schema
    assert main(["schema", "--study", "nosuch"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: --study: unknown study kind 'nosuch'")
