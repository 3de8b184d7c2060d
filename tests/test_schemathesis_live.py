"""Property-based contract test against the real service (`tiris serve`, two workers), plus a test of the tests.

The live run is tests/test_schemathesis.py over HTTP: every operation of openapi.yaml, fed generated input, as a
user and as an admin, every Schemathesis check, a fixed seed (derandomize) and FUZZ_EXAMPLES examples per
operation (small by default, so it stays well under a minute; `make fuzz` raises it). It adds what the in-process
run cannot see: real HTTP parsing (uvicorn, gunicorn), several processes, each with its own connection pool.

The schema comes from a fixture (`schemathesis.pytest.from_fixture`) because the server's URL is known only once
`live_server` runs; every operation then runs as a subtest of one test, against one server.

The test of the tests makes a handler drift from the contract (in-process) and shows the same checks refuse it.
"""

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from schemathesis.core.failures import FailureGroup

from db import engine, users
from tests.conftest import Api
from tests.helpers import call_as_each, create_exchange, create_sub_account
from tests.server import live_server  # noqa: F401
from tiris import auth, jsonify

ROOT = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))


def _mint(email: str, *, admin: bool = False) -> str:
    """A user (created in the test's database, through the DB layer) and their access token."""
    with engine.transaction() as conn:
        user = users.ensure(conn, email, role="admin" if admin else "user")
    return auth.mint(user["id"])


@pytest.fixture
def live_schema(live_server):
    schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
    schema.config.update(base_url=live_server.url)
    # The contract documents that strings must not hold U+0000 (PostgreSQL cannot store it); such requests are 400.
    schema.config.generation.update(allow_x00=False)
    return schema


@pytest.fixture
def live_tokens(live_server, settings):
    """A user's and an admin's token, each owning an exchange with a funded sub-account (made over HTTP)."""
    # `settings` points this process's DB layer at the server's database, where the users are made.
    result = []
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for email, admin in (("fuzz-user@example.com", False), ("fuzz-admin@example.com", True)):
            api = Api(http, _mint(email, admin=admin))
            create_sub_account(api, create_exchange(api, api_key=f"KEY-{email}")["id"], "USDT", "1000")
            result.append(api.token)
    return result


@pytest.fixture
def _pytest9_node_id(request):
    """Schemathesis 4.32.5's from_fixture reads and writes `request.node._nodeid`, which pytest 9 no longer has
    (AttributeError); the attribute it expects, for the test below only. Drop when Schemathesis stops using it."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# The live feed's stream never ends by itself (tests/test_live_feed_stream.py covers it). Excluded here: an exclusion
# made inside the fixture is not seen by the parametrization.
schema = schemathesis.pytest.from_fixture("live_schema").exclude(operation_id="openStream")


# derandomize fixes the seed, but Hypothesis still replays failures it stored in .hypothesis/ (a local run could
# then differ from CI): no database. Inputs also draw on constants of the loaded modules (Hypothesis and
# Schemathesis both mine them), so a run of this file alone may try other values than the whole suite does.
@pytest.mark.usefixtures("_pytest9_node_id")
@schema.parametrize()
@hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_contract_live(case, live_tokens):
    call_as_each(case, live_tokens, timeout=30)


# ---------------------------------------------------------------- the checks catch a handler that drifts


def _drop_username(body: dict) -> dict:
    del body["username"]  # a required field
    return body


def _settings_as_text(body: dict) -> dict:
    body["settings"] = "theme=dark"  # an object in the contract
    return body


def _role_outside_enum(body: dict) -> dict:
    body["role"] = "root"
    return body


@pytest.mark.parametrize("drift, finding", [
    (_drop_username, '"username" is a required property'),
    (_settings_as_text, '"theme=dark" is not of type "object"'),
    (_role_outside_enum, '"root" is not one of "user" or "admin"'),
])
def test_the_contract_checks_refuse_a_handler_that_drifts(drift, finding, settings, monkeypatch):
    """GET /v1/users/me answers with a body that breaks the User schema: call_and_validate must raise."""
    from handlers import users as user_handlers
    from tiris.app import create_app

    token = _mint(f"drift-{uuid.uuid4().hex[:8]}@example.com")
    headers = {"Authorization": f"Bearer {token}"}

    def case_for(app):
        return schemathesis.openapi.from_asgi("/v1/openapi.json", app)["/v1/users/me"]["GET"].Case()

    # Control: the same case against the real handler passes every check.
    case_for(create_app(settings)).call_and_validate(headers=headers)

    original = user_handlers.get_current_user

    def drifted(token_info):
        return drift(json.loads(jsonify.dumps(original(token_info))))

    # Connexion binds operations to functions when the app is made, so the app is made after the patch.
    monkeypatch.setattr(user_handlers, "get_current_user", drifted)
    with pytest.raises(FailureGroup) as caught:
        case_for(create_app(settings)).call_and_validate(headers=headers)
    failures = caught.value.exceptions
    assert [failure.title for failure in failures] == ["Response violates schema"], failures
    assert finding in str(failures[0]), failures[0]
