"""Property-based contract test: every operation, fed generated input, answers as openapi.yaml says, and every
operation answered a 2xx at least once in the run (else the checks would have seen only refusals).

Runs in-process against the real app and database, as a user and as an admin, with every Schemathesis check, a
fixed seed and a bounded number of examples; `make fuzz` runs the same with more. The user is the contract's
example user and owns the rows its examples name, with their ids (tests/example_rows.py), so the examples phase
reaches real rows rather than 404s.
"""

import os
from collections import defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests import example_rows
from tests.conftest import TEST_ENV
from tests.helpers import call_as_each, create_exchange, create_sub_account
from tiris import config
from tiris.app import create_app

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))


# Schemathesis needs the schema at collection time. The app holds no connection of its own: each test's
# `settings` fixture points the process's engine at that test's fresh database.
APP = create_app(config.load({**TEST_ENV, "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"}))
# The live feed's stream lasts while its client wants, so a generated request that is accepted would never end;
# tests/test_live_feed_stream.py covers it (refusals included).
schema = schemathesis.openapi.from_asgi("/v1/openapi.json", APP).exclude(operation_id="openStream")
# The contract documents that strings must not hold U+0000 (PostgreSQL cannot store it); such requests are 400.
schema.config.generation.update(allow_x00=False)

# Every status each operation (its label, "GET /v1/users/me") answered in this run.
ANSWERED: dict[str, set[int]] = defaultdict(set)


@pytest.fixture
def tokens(request, client, make_api):
    """The example user's token (owning the examples' rows, made for this operation) and an admin's, who owns an
    exchange with a funded sub-account."""
    user = example_rows.create(client, request.node.operation_label)
    admin = make_api("fuzz-admin@example.com", admin=True)
    create_sub_account(admin, create_exchange(admin, api_key="KEY-fuzz-admin@example.com")["id"], "USDT", "1000")
    return [user, admin.token]


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_contract(case, tokens, client, oauth_provider):
    if case.operation.label == "POST /v1/auth/callback":  # a login state works once: one per case
        example_rows.approve_login(client, oauth_provider)
    ANSWERED[case.operation.label].update(response.status_code for response in call_as_each(case, tokens))


def test_every_operation_was_answered_with_a_2xx_at_least_once(request):
    """Runs after the parametrized cases above (pytest keeps a module's order): each operation of theirs that ran
    must have met a 2xx, or the contract's checks saw only its refusals."""
    ran = {item.operation_label for item in request.session.items
           if item.module is request.module and getattr(item, "operation_label", None)}
    if not ran:
        pytest.skip("no operation of the property test ran")
    never = {label: sorted(ANSWERED.get(label, ())) for label in sorted(ran)
             if not any(200 <= status < 300 for status in ANSWERED.get(label, ()))}
    assert not never, "never answered with a 2xx (the statuses seen):\n" + "\n".join(
        f"{label}: {statuses}" for label, statuses in never.items())
