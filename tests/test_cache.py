"""The authentication cache: lookups are served from it, and a write that disables a user or changes a role
invalidates it in every worker, through PostgreSQL notifications sent with the write's commit."""

import time

import httpx
import sqlalchemy as sa

from db import engine, users
from tests.server import live_server  # noqa: F401
from tiris import auth, cache


def _lookups(result: str) -> float:
    from tiris import metrics

    return metrics.CACHE_LOOKUPS.labels("users", result)._value.get()


def _wait_listening():
    assert cache._listener.listening.wait(timeout=10), "the invalidation listener did not start"


def test_cached_user_lookup_is_invalidated_when_the_user_is_disabled(make_api, client):
    _wait_listening()
    admin, alice = make_api("root@example.com", admin=True), make_api("cached@example.com")
    hits = _lookups("hit")
    assert alice.get("/v1/users/me")[0] == 200 and alice.get("/v1/users/me")[0] == 200
    assert _lookups("hit") >= hits + 1  # the second lookup came from the cache

    assert admin.post(f"/v1/users/{alice.user['id']}/disable")[0] == 200
    status, body = alice.get("/v1/users/me")
    assert status == 401 and body["error"]["code"] == "ACCOUNT_DISABLED"

    assert admin.post(f"/v1/users/{alice.user['id']}/enable")[0] == 200
    assert alice.get("/v1/users/me")[0] == 200


def test_a_notification_from_another_process_drops_the_cached_entry(make_api, settings):
    """The row changes without touching this process's cache, as another worker's write would."""
    _wait_listening()
    alice = make_api("elsewhere@example.com")
    assert alice.get("/v1/users/me")[0] == 200
    with engine.transaction() as conn:
        conn.execute(sa.text("UPDATE users SET status = 'disabled' WHERE id = :id"), {"id": alice.user["id"]})
        conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                     {"channel": cache.CHANNEL, "payload": f"users:{alice.user['id']}"})
    deadline = time.monotonic() + 5
    while alice.get("/v1/users/me")[0] != 401:
        assert time.monotonic() < deadline, "the notification never invalidated the entry"
        time.sleep(0.01)


def test_disabled_user_refused_at_once_by_every_worker(live_server, settings):  # noqa: F811
    with engine.transaction() as conn:
        user = users.ensure(conn, "everywhere@example.com")
        admin = users.ensure(conn, "admin-everywhere@example.com", role="admin")
    token, admin_token = auth.mint(user["id"]), auth.mint(admin["id"])

    def get_me() -> int:
        with httpx.Client(base_url=live_server.url) as client:  # a new connection: any worker answers
            return client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status_code

    assert [get_me() for _ in range(10)] == [200] * 10  # both workers have the user cached now
    response = httpx.post(f"{live_server.url}/v1/users/{user['id']}/disable",
                          headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 200
    assert [get_me() for _ in range(10)] == [401] * 10


def test_invalidating_a_user_drops_their_entries_for_every_session(make_api):
    _wait_listening()
    users_cache, loads = cache.caches["users"], []

    def lookups():
        for key in ("u1:s1", "u1:s2", "u10:s1"):
            users_cache.get(key, lambda key=key: loads.append(key) or key)

    lookups()
    lookups()  # all three served from the cache
    users_cache.invalidate("u1")
    lookups()
    assert loads == ["u1:s1", "u1:s2", "u10:s1", "u1:s1", "u1:s2"]
