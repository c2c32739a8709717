"""Schema registry inspection through the Confluent-compatible API (any such registry URL works).

The registry decides compatibility; this module explains it. Apicurio answers a
compatibility check with a bare yes or no, so the reasons come from comparing
the two record schemas field by field the way Avro's schema resolution does
(a BACKWARD change must let the new schema read records written with the old).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cryptopulse.errors import RegistryError
from cryptopulse.settings import Settings

# Avro's promotions: a reader of the key type can read data written with each of the values.
PROMOTIONS = {"long": {"int"}, "float": {"int", "long"}, "double": {"int", "long", "float"},
              "string": {"bytes"}, "bytes": {"string"}}


@dataclass
class Registry:
    url: str

    def _get(self, path: str) -> Any:
        try:
            response = requests.get(f"{self.url}{path}", timeout=10)
        except requests.ConnectionError as error:
            raise RegistryError(f"the schema registry is not reachable at {self.url}; "
                                "start the stack with `control stack up`") from error
        if response.status_code == 404:
            raise RegistryError(f"not found in the registry: {path} ({response.text[:200]})")
        response.raise_for_status()
        return response.json()

    def subjects(self) -> list[dict[str, Any]]:
        rows = []
        default = self._get("/config").get("compatibilityLevel", "?")
        for subject in sorted(self._get("/subjects")):
            latest = self.version(subject)
            try:
                level = self._get(f"/config/{subject}").get("compatibilityLevel", default)
            except RegistryError:
                level = default
            rows.append({"subject": subject, "versions": self._get(f"/subjects/{subject}/versions"),
                         "latest_version": latest["version"], "latest_id": latest["id"], "compatibility": level})
        return rows

    def version(self, subject: str, version: int | str = "latest") -> dict[str, Any]:
        """{subject, version, id, schema (parsed)}."""
        data = self._get(f"/subjects/{subject}/versions/{version}")
        return {**data, "schema": json.loads(data["schema"])}

    def is_compatible(self, subject: str, schema: dict[str, Any]) -> bool:
        try:
            response = requests.post(f"{self.url}/compatibility/subjects/{subject}/versions/latest",
                                     json={"schema": json.dumps(schema)}, timeout=10)
        except requests.ConnectionError as error:
            raise RegistryError(f"the schema registry is not reachable at {self.url}") from error
        if response.status_code == 404:
            raise RegistryError(f"subject {subject} has no version yet: nothing to be compatible with")
        if response.status_code == 422:
            raise RegistryError(f"the registry finds the schema invalid: {response.text[:300]}")
        response.raise_for_status()
        return bool(response.json()["is_compatible"])


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "[" + ", ".join(_type_name(t) for t in avro_type) + "]"
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        base = avro_type.get("name") if avro_type["type"] in ("record", "enum", "fixed") else avro_type["type"]
        return f"{base}({logical})" if logical else str(base)
    return str(avro_type)


def _branches(avro_type: Any) -> list[str]:
    return [_type_name(t) for t in avro_type] if isinstance(avro_type, list) else [_type_name(avro_type)]


def _readable(reader: Any, writer: Any) -> bool:
    """Whether data written as `writer` can be read as `reader` (every writer branch has a reader branch)."""
    readers = _branches(reader)
    return all(w in readers or any(w.split("(")[0] in PROMOTIONS.get(r.split("(")[0], ()) for r in readers)
               for w in _branches(writer))


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The changes from `old` to `new`, field by field, as sentences."""
    before = {f["name"]: f for f in old.get("fields", [])}
    after = {f["name"]: f for f in new.get("fields", [])}
    lines = []
    if (old.get("namespace"), old.get("name")) != (new.get("namespace"), new.get("name")):
        lines.append(f"record renamed: {old.get('namespace')}.{old.get('name')} -> "
                     f"{new.get('namespace')}.{new.get('name')}")
    for name in after.keys() - before.keys():
        default = f" (default {json.dumps(after[name]['default'])})" if "default" in after[name] else " (no default)"
        lines.append(f"+ {name}: {_type_name(after[name]['type'])}{default}")
    for name in before.keys() - after.keys():
        lines.append(f"- {name}: {_type_name(before[name]['type'])}")
    for name in before.keys() & after.keys():
        a, b = before[name], after[name]
        if _type_name(a["type"]) != _type_name(b["type"]):
            lines.append(f"~ {name}: type {_type_name(a['type'])} -> {_type_name(b['type'])}")
        if a.get("default", "<none>") != b.get("default", "<none>"):
            lines.append(f"~ {name}: default {json.dumps(a.get('default'))} -> {json.dumps(b.get('default'))}")
        if a.get("doc") != b.get("doc"):
            lines.append(f"~ {name}: doc changed")
    return sorted(lines, key=lambda line: (line[0] not in "+-~", line))


def backward_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why `new` cannot read records written with `old` (empty when it can, as far as fields go)."""
    before = {f["name"]: f for f in old.get("fields", [])}
    problems = []
    if new.get("name") != old.get("name"):
        problems.append(f"the record is renamed from {old.get('name')} to {new.get('name')} without an alias")
    for field in new.get("fields", []):
        name = field["name"]
        if name not in before:
            if "default" not in field:
                problems.append(f"field '{name}' is added without a default: records written before have no "
                                "value for it (give it a default, e.g. null in a [\"null\", ...] union)")
        elif not _readable(field["type"], before[name]["type"]):
            problems.append(f"field '{name}' changes type from {_type_name(before[name]['type'])} to "
                            f"{_type_name(field['type'])}, which cannot read the old values")
    return problems


def check(registry: Registry, subject: str, path: Path) -> tuple[bool, list[str]]:
    """Whether the local .avsc at `path` may be registered under `subject`, and why not."""
    try:
        schema = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RegistryError(f"{path}: not a readable JSON schema ({error})") from error
    compatible = registry.is_compatible(subject, schema)
    if compatible:
        return True, []
    reasons = backward_problems(registry.version(subject)["schema"], schema)
    return False, reasons or ["the registry says incompatible and gives no detail"]


def registry(settings: Settings) -> Registry:
    return Registry(settings.schema_registry_url.rstrip("/"))
