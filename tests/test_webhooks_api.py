"""Webhooks over the REST API: created with a secret shown once, read, changed, deleted; targets checked against
WEBHOOK_ALLOWED_HOSTS at creation; a user never sees or changes another user's webhooks (404)."""

import dataclasses

import pytest

from db import webhook_targets
from tests.conftest import expect_error
from tests.helpers import create_exchange, create_sub_account
from tiris import config


@pytest.fixture
def allow(settings):
    """Sets WEBHOOK_ALLOWED_HOSTS for the requests that follow."""
    def set_hosts(*entries: str) -> None:
        config.use(dataclasses.replace(config.current(), webhook_allowed_hosts=entries))
    return set_hosts


def _account(api, balance="100"):
    return create_sub_account(api, create_exchange(api, api_key=f"KEY-{api.user['id']}")["id"], "USDT", balance)


def test_a_webhook_is_created_with_its_secret_shown_once_and_read_back_without_it(api, allow):
    allow("*")
    usdt = _account(api)
    status, created = api.post("/v1/webhooks", json={
        "url": "https://hooks.example.com/tiris", "events": ["transaction.booked"], "description": "desk",
        "monitors": [{"sub_account_id": usdt["id"], "threshold": "50", "direction": "below"}]})
    assert status == 201, created
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    [monitor] = created["monitors"]
    assert (monitor["threshold"], monitor["direction"], monitor["beyond"], monitor["last_crossed_at"]) == (
        "50.000000000000000000", "below", False, None)
    status, read = api.get(f"/v1/webhooks/{created['id']}")
    assert status == 200 and "secret" not in read
    assert read == {key: value for key, value in created.items() if key != "secret"}
    assert api.get("/v1/webhooks")[1]["items"] == [read]


def test_an_update_replaces_what_it_names_and_a_delete_ends_the_webhook(api, allow):
    allow("*")
    usdt = _account(api)
    _, created = api.post("/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": ["order.updated"],
                                                "description": "first"})
    status, changed = api.patch(f"/v1/webhooks/{created['id']}", json={
        "monitors": [{"sub_account_id": usdt["id"], "threshold": "150", "direction": "above"}]})
    assert status == 200, changed
    assert (changed["url"], changed["events"], changed["description"]) == (
        "https://hooks.example.com/a", ["order.updated"], "first")
    assert [(m["threshold"], m["direction"], m["beyond"]) for m in changed["monitors"]] == [
        ("150.000000000000000000", "above", False)]
    status, changed = api.patch(f"/v1/webhooks/{created['id']}", json={"events": [], "monitors": []})
    assert status == 200 and (changed["events"], changed["monitors"]) == ([], [])

    assert api.delete(f"/v1/webhooks/{created['id']}")[0] == 204
    expect_error(api.get(f"/v1/webhooks/{created['id']}"), 404, "NOT_FOUND")
    expect_error(api.get(f"/v1/webhooks/{created['id']}/deliveries"), 404, "NOT_FOUND")
    assert api.get("/v1/webhooks")[1]["items"] == []


@pytest.mark.parametrize("url, reason", [
    ("https://127.0.0.1/hook", "127.0.0.1 is not a public address"),
    ("https://10.1.2.3/hook", "10.1.2.3 is not a public address"),
    ("https://192.168.0.10:8443/hook", "192.168.0.10 is not a public address"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is not a public address"),
    ("https://[::1]/hook", "::1 is not a public address"),
    ("https://[::ffff:127.0.0.1]/hook", "127.0.0.1 is not a public address"),
    ("https://[fd00::1]/hook", "fd00::1 is not a public address"),
    ("https://100.64.0.1/hook", "100.64.0.1 is not a public address"),
    ("https://0.0.0.0/hook", "0.0.0.0 is not a public address"),
    ("https://localhost/hook", "localhost resolves to 127.0.0.1, which is not a public address"),
    ("http://hooks.example.com/hook", "the URL must be https://"),
    ("https://hooks.example.com:0/hook", "the port must be 1..65535"),
    ("https://hooks.example.com:70000/hook", "the port must be 1..65535"),
])
def test_a_loopback_private_or_link_local_target_or_plain_http_is_refused_at_creation(api, allow, url, reason):
    allow("*")
    error = expect_error(api.post("/v1/webhooks", json={"url": url, "events": ["transaction.booked"]}), 422,
                         "WEBHOOK_TARGET_REFUSED")
    assert reason in error["details"]["reason"], error
    assert api.get("/v1/webhooks")[1]["items"] == []


@pytest.mark.parametrize("url", ["https://user:pass@hooks.example.com/hook", "https://hooks.example.com/#x",
                                 "https://hooks.example.com /x", "ftp://hooks.example.com/", "https://-a.example.com/"])
def test_a_url_the_contract_does_not_allow_is_a_400(api, url):
    error = expect_error(api.post("/v1/webhooks", json={"url": url, "events": []}), 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "url", error


def test_a_host_listed_by_itself_may_be_private_or_plain_http_and_an_unlisted_one_is_refused(api, allow):
    allow("127.0.0.1", "*.example.com")
    assert api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": []})[0] == 201
    assert api.post("/v1/webhooks", json={"url": "https://a.hooks.example.com/x", "events": []})[0] == 201
    for url, reason in (("https://hooks.example.org/x", "not in WEBHOOK_ALLOWED_HOSTS"),
                        ("http://a.hooks.example.com/x", "must be https"),
                        ("https://10.0.0.1/x", "not in WEBHOOK_ALLOWED_HOSTS")):
        error = expect_error(api.post("/v1/webhooks", json={"url": url, "events": []}), 422, "WEBHOOK_TARGET_REFUSED")
        assert reason in error["details"]["reason"], (url, error)
    [hook, _] = api.get("/v1/webhooks")[1]["items"]
    error = expect_error(api.patch(f"/v1/webhooks/{hook['id']}", json={"url": "https://[::1]/x"}), 422,
                         "WEBHOOK_TARGET_REFUSED")
    assert "not in WEBHOOK_ALLOWED_HOSTS" in error["details"]["reason"]


def test_one_user_cannot_see_or_change_another_users_webhooks(make_api, allow):
    allow("*")
    alice, bob = make_api(), make_api()
    usdt = _account(alice)
    _, hook = alice.post("/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": ["bot.heartbeat"]})
    for call in (lambda: bob.get(f"/v1/webhooks/{hook['id']}"),
                 lambda: bob.patch(f"/v1/webhooks/{hook['id']}", json={"url": "https://evil.example.com/"}),
                 lambda: bob.delete(f"/v1/webhooks/{hook['id']}"),
                 lambda: bob.get(f"/v1/webhooks/{hook['id']}/deliveries")):
        expect_error(call(), 404, "NOT_FOUND")
    assert bob.get("/v1/webhooks")[1]["items"] == []
    expect_error(bob.get(f"/v1/webhooks?user_id={alice.user['id']}"), 403, "FORBIDDEN")
    # A monitor names the caller's own sub-account, or none.
    monitor = {"sub_account_id": usdt["id"], "threshold": "1", "direction": "above"}
    error = expect_error(bob.post("/v1/webhooks", json={"url": "https://hooks.example.com/b", "events": [],
                                                        "monitors": [monitor]}), 422, "UNKNOWN_SUB_ACCOUNT")
    assert error["details"] == {"sub_account_ids": [usdt["id"]]}
    assert alice.get(f"/v1/webhooks/{hook['id']}")[1]["url"] == "https://hooks.example.com/a"


def test_an_admin_reads_any_users_webhooks_but_changes_none(make_api, allow):
    allow("*")
    alice, admin = make_api(), make_api(admin=True)
    _, hook = alice.post("/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": []})
    assert admin.get(f"/v1/webhooks/{hook['id']}")[0] == 200
    assert [h["id"] for h in admin.get(f"/v1/webhooks?user_id={alice.user['id']}")[1]["items"]] == [hook["id"]]
    assert admin.get(f"/v1/webhooks/{hook['id']}/deliveries")[0] == 200
    expect_error(admin.delete(f"/v1/webhooks/{hook['id']}"), 404, "NOT_FOUND")


def test_a_user_has_at_most_webhook_max_per_user_webhooks(api, allow):
    allow("*")
    config.use(dataclasses.replace(config.current(), webhook_max_per_user=2))
    for _ in range(2):
        assert api.post("/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": []})[0] == 201
    expect_error(api.post("/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": []}), 422,
                 "TOO_MANY_WEBHOOKS")


def test_allowed_hosts_entries_are_checked_at_start_up(service_env):
    with pytest.raises(config.ConfigError) as refused:
        config.load({**service_env, "WEBHOOK_ALLOWED_HOSTS": "*,hooks.example.com,bad host,*.ok.example"})
    assert [p for p in refused.value.problems if "WEBHOOK_ALLOWED_HOSTS" in p] == [
        "WEBHOOK_ALLOWED_HOSTS: 'bad host' is not a host name, an IP address, '*.domain' or '*'"]
    assert webhook_targets.Allowed.parse(["*", "Hooks.Example.com", "*.example.org", "[::1]"]) == \
        webhook_targets.Allowed(exact=frozenset({"hooks.example.com", "::1"}), suffixes=(".example.org",),
                                any_public=True)
