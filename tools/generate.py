"""Writes generated/models.py: one pydantic v2 module from both contracts.

The schemas of openapi.yaml and asyncapi.yaml are merged into one JSON Schema document (`$defs`), so a schema both
contracts use (asyncapi.yaml refers to openapi.yaml's) becomes one class. `--check` exits 1 when the committed
module differs from what the contracts produce.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "generated" / "models.py"
LOCAL_PREFIXES = ("#/components/schemas/", "openapi.yaml#/components/schemas/", "./openapi.yaml#/components/schemas/")


def _rewrite_refs(node):
    """Points every schema reference at the merged document's `$defs`."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                for prefix in LOCAL_PREFIXES:
                    if value.startswith(prefix):
                        value = "#/$defs/" + value[len(prefix):]
                        break
            out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def _nullable(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it (`type: [T, "null"]`), which the generator reads."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def merged_schemas() -> dict:
    defs: dict = {}
    for name in ("openapi.yaml", "asyncapi.yaml"):
        path = ROOT / name
        if not path.exists():
            continue
        schemas = (yaml.safe_load(path.read_text()).get("components") or {}).get("schemas") or {}
        for key, schema in schemas.items():
            if "$ref" in schema and len(schema) == 1:
                continue  # an alias of a schema defined in the other contract
            if key in defs and defs[key] != schema:
                sys.exit(f"schema {key!r} is defined differently in two contracts; define it once")
            defs[key] = schema
    return {"title": "TirisContracts", "type": "object", "$defs": _nullable(_rewrite_refs(defs))}


def render() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "contracts.json"
        target = Path(tmp) / "models.py"
        source.write_text(json.dumps(merged_schemas(), indent=1, sort_keys=True))
        subprocess.run(
            [
                sys.executable, "-m", "datamodel_code_generator",
                "--input", str(source), "--input-file-type", "jsonschema",
                "--output", str(target), "--output-model-type", "pydantic_v2.BaseModel",
                "--target-python-version", "3.11", "--use-annotated", "--field-constraints",
                "--use-standard-collections", "--use-union-operator", "--enum-field-as-literal", "none",
                "--formatters", "builtin", "--disable-timestamp", "--use-double-quotes",
            ],
            check=True,
        )
        return target.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when generated/ is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            sys.exit("generated/models.py is stale: run `make generate`")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
