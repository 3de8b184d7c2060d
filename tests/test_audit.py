"""The security audit trail, read by admins through the API."""

import os
import subprocess
import sys
import urllib.parse

import pytest

from db import engine, users
from tests.conftest import Api, expect_error
from tests.helpers import create_exchange
from tests.login import tokens
from tests.server import ROOT
from db.errors import Conflict


def events(admin, **query) -> list[dict]:
    status, body = admin.get("/v1/audit-events?" + urllib.parse.urlencode(query))
    assert status == 200, body
    return body["items"]


def test_logins_token_use_and_logout_are_in_the_trail(client, make_api, oauth_provider):
    anonymous = Api(client, None)
    pair = tokens(anonymous)
    refreshed = anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})[1]
    Api(client, refreshed["access_token"]).post("/v1/auth/logout")
    anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})  # a spent one
    admin = make_api("root@example.com", admin=True)
    trail = events(admin, user_id=pair["user"]["id"])
    assert [e["type"] for e in reversed(trail)] == ["auth.login", "auth.refresh", "auth.logout",
                                                    "auth.refresh_reused"]
    assert all(e["trace_id"] and e["ip"] for e in trail)


def test_exchange_key_changes_are_in_the_trail_without_the_keys(make_api):
    alice, admin = make_api(), make_api("root@example.com", admin=True)
    exchange = create_exchange(alice)
    alice.patch(f"/v1/exchanges/{exchange['id']}", json={"api_key": "AKIANEWKEY9876543210", "api_secret": "n3w"})
    alice.patch(f"/v1/exchanges/{exchange['id']}", json={"name": "renamed"})  # no key change: not a security event
    alice.delete(f"/v1/exchanges/{exchange['id']}")
    trail = list(reversed(events(admin, user_id=alice.user["id"])))
    assert [e["type"] for e in trail] == ["exchange.created", "exchange.keys_changed", "exchange.deleted"]
    assert trail[1]["info"] == {"exchange_id": exchange["id"], "fields": ["api_key", "api_secret"]}
    assert "AKIANEWKEY" not in str(trail)


def test_an_admin_disabling_a_user_is_recorded_with_the_admin_as_actor(make_api):
    alice, admin = make_api(), make_api("root@example.com", admin=True)
    admin.post(f"/v1/users/{alice.user['id']}/disable")
    [event] = events(admin, type="user.disabled")
    assert (event["user_id"], event["actor_id"]) == (str(alice.user["id"]), str(admin.user["id"]))


def test_grant_admin_changes_the_role_and_is_audited(make_api, service_env):
    alice = make_api("alice@example.com")
    expect_error(alice.get("/v1/audit-events"), 403, "FORBIDDEN")
    run = subprocess.run([sys.executable, "-m", "tools.cli", "user", "grant-admin", "alice@example.com"], cwd=ROOT,
                         env={**os.environ, **service_env}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    [event] = events(alice, type="user.role_changed")  # alice is an admin now, on her very next request
    assert event["user_id"] == str(alice.user["id"]) and event["info"]["to"] == "admin"
    missing = subprocess.run([sys.executable, "-m", "tools.cli", "user", "grant-admin", "nobody@example.com"],
                             cwd=ROOT, env={**os.environ, **service_env}, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "nobody@example.com" in missing.stderr


def test_an_admin_cannot_disable_themself_nor_the_last_active_admin(make_api):
    admin = make_api("root@example.com", admin=True)
    expect_error(admin.post(f"/v1/users/{admin.user['id']}/disable"), 409, "CANNOT_DISABLE_SELF")
    other = make_api("second@example.com", admin=True)
    status, body = other.post(f"/v1/users/{admin.user['id']}/disable")  # two admins: one may go
    assert status == 200 and body["status"] == "disabled", body
    expect_error(other.post(f"/v1/users/{other.user['id']}/disable"), 409, "CANNOT_DISABLE_SELF")
    assert other.get("/v1/users/me")[1]["status"] == "active"
    with engine.transaction() as conn:  # the same rule holds for whoever asks, e.g. the shell
        with pytest.raises(Conflict) as refused:
            users.disable(conn, other.user["id"])
    assert refused.value.code == "LAST_ADMIN"


def test_user_disable_and_enable_commands_lock_out_and_let_back_in(make_api, service_env):
    alice = make_api("alice@example.com")

    def tiris_user(action: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tools.cli", "user", action, "alice@example.com"], cwd=ROOT,
                              env={**os.environ, **service_env}, capture_output=True, text=True, timeout=60)

    assert tiris_user("disable").returncode == 0
    expect_error(alice.get("/v1/users/me"), 401, "ACCOUNT_DISABLED")
    run = tiris_user("enable")
    assert run.returncode == 0 and "alice@example.com is active" in run.stderr, run.stderr
    fresh = make_api("alice@example.com")  # disabling ended her sessions; a new token works
    assert fresh.get("/v1/users/me")[0] == 200
