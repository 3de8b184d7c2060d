"""Dredd: every documented example of openapi.yaml, sent to the real service (`tiris serve`), answers as documented.

Dredd (npm, node_modules/.bin/dredd) makes one transaction per documented response: the operation's request
example, and the response's example as the expectation. tests/dredd_hooks.py (run by `dredd-hooks-python` from
the venv) makes the fixtures the examples refer to, points each transaction at them, skips the few responses that
cannot be produced on purpose (each with its reason) and checks every body against the response schema as well.
The run must be complete: every documented response is a transaction, and each one passes or is a listed skip.
"""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.oauth_provider import Account
from tests.server import live_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
DREDD = ROOT / "node_modules" / ".bin" / "dredd"
HOOKS = "tests/dredd_hooks.py"
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
METHODS = {"get", "put", "post", "patch", "delete"}
DREDD_TIMEOUT = 180  # the run takes about 5 s; this bounds a hung hook server or server
SUMMARY = re.compile(r"complete: (\d+) passing, (\d+) failing, (\d+) errors, (\d+) skipped, (\d+) total")


def _hooks_module():
    # dredd-hooks 0.2.0 still imports `imp` (deprecated; gone in Python 3.12): a warning that is not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from tests import dredd_hooks
    return dredd_hooks


def _documented_responses() -> list[tuple[str, str, str]]:
    return [(method.upper(), path, status) for path, item in SPEC["paths"].items() for method, operation in
            item.items() if method in METHODS for status in operation["responses"]]


def _interesting(output: str) -> str:
    """Dredd's output without its parser warnings about keywords it ignores and without the passing lines."""
    return "\n".join(line for line in output.splitlines()
                     if "parser warning" not in line and not line.startswith(("pass:", "skip:")))


def test_every_documented_example_answers_as_documented(live_server, service_env, oauth_provider, tmp_path):
    assert DREDD.exists(), "node_modules/.bin/dredd is missing: run `npm ci` (make install does)"
    report_path, hooks_log = tmp_path / "dredd-report.json", tmp_path / "dredd-hooks.log"
    # The callback's 200 logs in as the hooks' user (linked by email), whose profile has every key of the example.
    oauth_provider.account = Account(subject="g-dredd", email="dredd-user@example.com", name="Dredd")
    hook_port = free_port()  # not Dredd's fixed 61321, so two runs on one machine cannot talk to each other's hooks
    env = {**os.environ, **service_env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # dredd-hooks-python
           "TIRIS_URL": live_server.url, "DREDD_REPORT": str(report_path), "DREDD_HOOKS_LOG": str(hooks_log)}
    # `--language python` starts `dredd-hooks-python` without a port; a command line as the language is Dredd's
    # documented way to pass one, and --hooks-worker-handler-port makes Dredd connect to it.
    command = [str(DREDD), "openapi.yaml", live_server.url, "--hookfiles", HOOKS,
               "--language", f"dredd-hooks-python --port {hook_port}", "--hooks-worker-handler-port", str(hook_port),
               "--no-color"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DREDD_TIMEOUT)
    output = result.stdout + result.stderr
    log = hooks_log.read_text() if hooks_log.exists() else ""
    context = f"Dredd:\n{_interesting(output)[-20000:]}\nhooks log:\n{log[-5000:]}"

    summary = SUMMARY.search(output)
    assert summary, context
    passing, failing, errors, skipped, total = map(int, summary.groups())
    assert (failing, errors) == (0, 0), context
    assert result.returncode == 0, context
    report = json.loads(report_path.read_text())
    assert report["setup_error"] is None, context

    # Complete: one transaction per documented response, each either passed or skipped for a listed reason.
    documented = _documented_responses()
    assert total == len(documented), context
    entries = report["transactions"]
    assert sorted(tuple(e["key"]) for e in entries) == sorted(documented), "a transaction was left out"
    skips = [e for e in entries if "skipped" in e]
    assert all(e["skipped"] for e in skips)
    hooks = _hooks_module()
    expected_skips = (sum(1 for key in documented if ("*", "*", key[2]) in hooks.SKIPPED)
                      + sum(1 for key in hooks.SKIPPED if key[0] != "*"))
    assert (skipped, passing) == (expected_skips, total - expected_skips), context
    assert all(e.get("result") == "pass" and "schema_errors" not in e for e in entries if "skipped" not in e)


def test_the_hooks_schema_check_fails_a_body_that_breaks_the_contract():
    """The after_each check adds what Dredd's example comparison misses (here a wrong enum value)."""
    hooks = _hooks_module()
    user = {"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "username": "a", "email": "a@example.com",
            "role": "superuser", "status": "active", "settings": {}, "info": {},
            "created_at": "2026-01-15T10:30:00Z", "updated_at": "2026-01-15T10:30:00Z"}
    transaction = {"name": "GET /v1/users/me 200", "fullPath": "/v1/users/me",
                   "request": {"method": "GET"}, "origin": {"resourceName": "/v1/users/me"},
                   "expected": {"statusCode": "200", "body": json.dumps(user)},
                   "real": {"statusCode": 200, "body": json.dumps(user)}, "test": {"status": "pass"}}
    hooks.check_schema(transaction)
    assert "role: 'superuser' is not one of ['user', 'admin']" in transaction["fail"]
    hooks.check_schema(ok := {**transaction, "fail": None,
                              "real": {"statusCode": 200, "body": json.dumps({**user, "role": "user"})}})
    assert ok["fail"] is None


@pytest.fixture(autouse=True)
def _no_leftover_report_state():
    """The hooks module keeps its report in a module global; the schema-check test must not leak into it."""
    yield
    if "tests.dredd_hooks" in sys.modules:
        sys.modules["tests.dredd_hooks"].report.clear()
