"""openapi.yaml is the truth: it is valid, generated/ is made from it, and the app routes exactly its operations."""

import subprocess
import sys
from pathlib import Path

import yaml
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
METHODS = {"get", "post", "put", "patch", "delete"}


def test_openapi_document_is_valid_openapi_3_0():
    assert SPEC["openapi"].startswith("3.0.")
    validate(SPEC)


def test_generated_models_match_the_contracts():
    result = subprocess.run([sys.executable, "-m", "tools.generate", "--check"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_every_operation_is_client_friendly():
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert operation["operationId"][0].islower() and "_" not in operation["operationId"], where
            assert operation.get("tags") and operation.get("summary"), where
            assert "default" in operation["responses"], where
            if "requestBody" in operation:
                assert "example" in operation["requestBody"]["content"]["application/json"], where
            for status, response in operation["responses"].items():
                if "$ref" in response or "content" not in response:
                    continue
                for media in response["content"].values():
                    assert "example" in media, f"{where} {status}"


def _spec_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item if method in METHODS}


def test_application_routes_exactly_the_operations_of_the_spec(app, client):
    client.get("/health/live")  # Connexion registers the Flask routes on the first request
    served = set()
    for rule in app.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = "/".join(part.split(":")[-1] if part.startswith("{") else part for part in path.split("/"))
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((method, path))
    assert served == _spec_routes()


def test_every_operation_resolves_to_a_handler_function():
    import importlib

    from tiris.app import handler_name

    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            module = importlib.import_module(operation["x-openapi-router-controller"])
            name = handler_name(operation["operationId"])
            assert callable(getattr(module, name, None)), f"{method.upper()} {path} -> {module.__name__}.{name}"


def test_every_v1_operation_documents_the_429_and_a_known_rate_limit_class():
    from tiris import ratelimit

    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            if path.startswith("/v1/"):
                assert operation["responses"].get("429") == {"$ref": "#/components/responses/TooManyRequests"}, where
                assert operation.get("x-rate-limit", "api") in ratelimit.CLASSES, where
            else:
                assert "x-rate-limit" not in operation and "429" not in operation["responses"], where


# Globals of JavaScript that a generated client's types would shadow (hey-api emits one type per schema).
JAVASCRIPT_GLOBALS = {"Array", "Boolean", "Date", "Error", "Function", "JSON", "Map", "Math", "Number", "Object",
                      "Promise", "Record", "RegExp", "Response", "Request", "Set", "String", "Symbol", "URL"}


def test_no_schema_shadows_a_javascript_global_and_error_details_are_typed():
    schemas = SPEC["components"]["schemas"]
    assert not JAVASCRIPT_GLOBALS & set(schemas)
    details = schemas["ErrorBody"]["properties"]["details"]
    assert [branch["type"] for branch in details["oneOf"]] == ["array", "object"]


def _operations() -> dict[str, tuple[str, dict, list]]:
    found = {}
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                params = [p.get("name") or p["$ref"] for p in item.get("parameters", []) + operation.get(
                    "parameters", [])]
                names = [SPEC["components"]["parameters"][p.split("/")[-1]]["name"] if p.startswith("#/") else p
                         for p in params]
                found[operation["operationId"]] = (path, operation, names)
    return found


def test_links_give_the_stateful_phase_real_paths_create_read_move_list():
    operations = _operations()
    links = {}
    for operation_id, (_, operation, _) in operations.items():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                assert link["operationId"] in operations, link
                assert set(link["parameters"]) <= set(operations[link["operationId"]][2]), link
                links.setdefault(operation_id, set()).add(link["operationId"])
    assert {"getSubAccount", "depositToSubAccount", "withdrawFromSubAccount", "listTransactions"} <= links[
        "createSubAccount"]
    assert "getTransaction" in links["depositToSubAccount"] and "getTradingLog" in links["createTradingLog"]
    assert "redriveDeadLetter" in links["listDeadLetters"]
