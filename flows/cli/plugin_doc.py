"""``vicflow plugins --doc STEP``: one step type's parameters, outputs, rollback and an example, as ansible-doc
shows a module."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from vicflow.plugins.errors import PluginError
from vicflow.plugins.hints import did_you_mean


def describe(name: str, registry) -> dict[str, Any]:
    """What ``--doc`` shows, as data (``--output json`` prints it as is)."""
    step_type = registry.step_types.get(name)
    if step_type is None:
        known = ", ".join(sorted(registry.step_types))
        raise PluginError(f"no step type {name!r}", f"{did_you_mean(name, registry.step_types)}installed: {known}")
    plugin = next((p for p in registry.plugins.values() if name in p.step_types), None)
    schema = step_type.Params.model_json_schema(by_alias=True)
    parameters = [_parameter(key, field, schema) for key, field in step_type.Params.model_fields.items()]
    return {
        "step_type": name,
        "plugin": plugin.name if plugin else "?",
        "version": plugin.version if plugin else "?",
        "description": (step_type.__doc__ or "").strip(),
        "parameters": parameters,
        "outputs": dict(step_type.outputs),
        "can_rollback": step_type.can_rollback(),
        "example": example(name, parameters),
    }


def _parameter(key: str, field: FieldInfo, schema: dict[str, Any]) -> dict[str, Any]:
    required = field.is_required()
    default = None if required else field.get_default(call_default_factory=True)
    name = field.alias or key
    return {
        "name": name,
        "type": _kind(schema.get("properties", {}).get(name, {})),
        "required": required,
        "default": default,
        "description": field.description or "",
    }


def _kind(schema: dict[str, Any]) -> str:
    """A parameter's type in words, from its JSON Schema: "string", "list of string", "integer or null"."""
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "const" in schema:
        return repr(schema["const"])
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        kinds = [_kind(option) for option in schema["anyOf"] if option.get("type") != "null"]
        optional = " (or null)" if any(option.get("type") == "null" for option in schema["anyOf"]) else ""
        return " or ".join(kinds) + optional
    if schema.get("type") == "array":
        return "list of " + _kind(schema.get("items", {})) if schema.get("items") else "list"
    if schema.get("type") == "object":
        return "mapping"
    return str(schema.get("type", "any"))


def example(name: str, parameters: list[dict[str, Any]]) -> str:
    """A blueprint that uses the step type with its required parameters, each from an input: it validates."""
    required = [p["name"] for p in parameters if p["required"]]
    document: dict[str, Any] = {"name": "example"}
    if required:
        document["inputs"] = {p: {"type": "string"} for p in required}
    step: dict[str, Any] = {"id": name.replace("-", "_"), "uses": name}
    if required:
        step["with"] = {p: "${{ inputs." + p + " }}" for p in required}
    document["steps"] = [step]
    return yaml.safe_dump(document, sort_keys=False)


def as_text(doc: dict[str, Any]) -> str:
    lines = [f"{doc['step_type']}  (plugin {doc['plugin']} {doc['version']})", ""]
    lines += [f"  {line}" for line in doc["description"].splitlines()] + ["", "PARAMETERS"]
    for p in doc["parameters"]:
        mark = "required" if p["required"] else f"default: {json.dumps(p['default'], default=str)}"
        lines.append(f"  {p['name']}  ({p['type']}; {mark})")
        if p["description"]:
            lines.append(f"      {p['description']}")
    lines += ["", "OUTPUTS"] + ([f"  {k}: {v}" for k, v in doc["outputs"].items()] or ["  (none)"])
    rollback = "yes: a later failure undoes what it did" if doc["can_rollback"] else "no"
    lines += ["", f"ROLLBACK  {rollback}", "", "EXAMPLE"] + [f"  {line}" for line in doc["example"].splitlines()]
    return "\n".join(lines)
