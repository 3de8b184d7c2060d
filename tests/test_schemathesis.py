"""Property-based contract test: every operation, fed generated input, answers as openapi.yaml says.

Runs in-process against the real app and database, as a user and as an admin, with every Schemathesis check, a
fixed seed and a bounded number of examples; `make fuzz` runs the same with more.
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

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


@pytest.fixture
def tokens(make_api, settings):
    """A user's and an admin's token, each owning an exchange with a funded sub-account."""
    result = []
    for email, admin in (("fuzz-user@example.com", False), ("fuzz-admin@example.com", True)):
        api = make_api(email, admin=admin)
        create_sub_account(api, create_exchange(api, api_key=f"KEY-{email}")["id"], "USDT", "1000")
        result.append(api.token)
    return result


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_contract(case, tokens):
    call_as_each(case, tokens)
