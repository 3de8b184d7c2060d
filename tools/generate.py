"""Writes generated/models.py: one pydantic v2 module from both contracts.

The schemas of openapi.yaml and asyncapi.yaml are merged into one JSON Schema document (`$defs`, by
consumers.contract.merged_schemas, which the consumer checks payloads against), so a schema both contracts use
(asyncapi.yaml refers to openapi.yaml's) becomes one class. `--check` exits 1 when the committed module differs
from what the contracts produce.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from consumers.contract import merged_schemas

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "generated" / "models.py"


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
    try:
        text = render()
    except ValueError as error:  # the contracts disagree: say where, without a traceback
        sys.exit(str(error))
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            sys.exit("generated/models.py is stale: run `make generate`")
        return
    OUTPUT.write_text(text)


if __name__ == "__main__":
    main()
