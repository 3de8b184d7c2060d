"""The security audit trail, read by admins through the API."""

import os
import subprocess
import sys
import urllib.parse

from tests.conftest import Api, expect_error
from tests.helpers import create_exchange
from tests.login import tokens
from tests.server import ROOT


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
