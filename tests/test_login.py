"""Logging in through Google (OpenID Connect) and WeChat, over HTTP, against the loopback provider."""

import urllib.parse

import pytest
import sqlalchemy as sa

from db import engine
from db.schema import audit_events, oauth_states
from tests.conftest import Api, expect_error
from tests.login import log_in, tokens
from tests.oauth_provider import REDIRECT_URI, Account, approve


@pytest.fixture
def anonymous(client) -> Api:
    return Api(client, None)


def audit_types(user_id) -> list[str]:
    with engine.reading() as conn:
        return list(conn.execute(sa.select(audit_events.c.type).where(audit_events.c.user_id == user_id)
                                 .order_by(audit_events.c.timestamp)).scalars())


def test_google_login_ends_with_tokens_that_work(anonymous, client, oauth_provider):
    status, started = anonymous.post("/v1/auth/login", json={"provider": "google", "redirect_uri": REDIRECT_URI})
    assert status == 200, started
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(started["auth_url"]).query))
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"] == started["state"]
    assert len(started["state"]) >= 22  # at least 128 bits, base64url

    returned = approve(started["auth_url"])
    status, body = anonymous.post("/v1/auth/callback", json={"provider": "google", **returned})
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["user"]["email"] == "alice@example.com"
    me = Api(client, body["access_token"])
    assert me.get("/v1/users/me")[1]["id"] == body["user"]["id"]
    assert audit_types(body["user"]["id"]) == ["auth.login"]


def test_the_same_google_account_logs_in_as_the_same_user(anonymous, oauth_provider):
    first, second = tokens(anonymous), tokens(anonymous)
    assert first["user"]["id"] == second["user"]["id"]
    assert first["refresh_token"] != second["refresh_token"]


def test_a_login_state_works_once(anonymous, oauth_provider):
    status, started = anonymous.post("/v1/auth/login", json={"provider": "google", "redirect_uri": REDIRECT_URI})
    returned = approve(started["auth_url"])
    assert anonymous.post("/v1/auth/callback", json={"provider": "google", **returned})[0] == 200
    replay = approve(started["auth_url"])  # a fresh code, the same state
    expect_error(anonymous.post("/v1/auth/callback", json={"provider": "google", **replay}), 401, "INVALID_STATE")


def test_an_expired_or_foreign_state_is_refused(anonymous, oauth_provider):
    status, started = anonymous.post("/v1/auth/login", json={"provider": "google", "redirect_uri": REDIRECT_URI})
    returned = approve(started["auth_url"])
    with engine.transaction() as conn:
        conn.execute(sa.update(oauth_states).values(expires_at=sa.func.now() - sa.text("interval '1 second'")))
    expect_error(anonymous.post("/v1/auth/callback", json={"provider": "google", **returned}), 401, "INVALID_STATE")

    status, started = anonymous.post("/v1/auth/login", json={"provider": "google", "redirect_uri": REDIRECT_URI})
    returned = approve(started["auth_url"])
    expect_error(anonymous.post("/v1/auth/callback", json={"provider": "wechat", **returned}), 401, "INVALID_STATE")
    expect_error(anonymous.post("/v1/auth/callback", json={"provider": "google", "code": "x", "state": "made-up"}),
                 401, "INVALID_STATE")


def test_a_redirect_uri_off_the_allow_list_is_refused(anonymous, oauth_provider):
    expect_error(anonymous.post("/v1/auth/login", json={"provider": "google",
                                                        "redirect_uri": "https://evil.example/callback"}),
                 400, "REDIRECT_URI_NOT_ALLOWED")


@pytest.mark.parametrize("forged", [{"nonce": "another-login"}, {"aud": "another-client"},
                                    {"iss": "https://issuer.example"}, {"exp": 1_000_000_000}])
def test_an_id_token_that_does_not_verify_is_refused(anonymous, oauth_provider, forged):
    oauth_provider.id_token_claims = forged
    error = expect_error(log_in(anonymous), 401, "LOGIN_FAILED")
    assert error["details"]["provider"] == "google"


def test_a_verified_email_links_the_login_to_the_existing_user(anonymous, make_api, oauth_provider):
    existing = make_api("alice@example.com").user
    body = tokens(anonymous)
    assert body["user"]["id"] == str(existing["id"])


def test_an_unverified_email_is_neither_linked_nor_kept(anonymous, make_api, oauth_provider):
    existing = make_api("alice@example.com").user
    oauth_provider.account = Account(subject="g-unverified", email="alice@example.com", email_verified=False,
                                     name="Mallory")
    body = tokens(anonymous)
    assert body["user"]["id"] != str(existing["id"]) and "email" not in body["user"]


def test_a_taken_username_gets_a_number_instead_of_failing_the_login(anonymous, oauth_provider):
    names = []
    for n in range(3):
        oauth_provider.account = Account(subject=f"g-alice-{n}", email=f"alice{n}@example.com", name="Alice")
        names.append(tokens(anonymous)["user"]["username"])
    assert names == ["Alice", "Alice2", "Alice3"]


def test_wechat_logins_through_both_apps_with_one_unionid_are_one_user(anonymous, oauth_provider):
    oauth_provider.account = Account(subject="wx-openid-1", email=None, name="微信用户", unionid="wx-union-1")
    web = tokens(anonymous, "wechat", "web")
    in_app = tokens(anonymous, "wechat", "in_app")
    assert web["user"]["id"] == in_app["user"]["id"]
    assert "email" not in web["user"] and web["user"]["avatar"] == "https://wx.example/avatar.png"


def test_wechat_without_unionid_is_keyed_by_openid(anonymous, oauth_provider):
    oauth_provider.account = Account(subject="wx-openid-2", email=None, name="trader")
    assert tokens(anonymous, "wechat")["user"]["id"] == tokens(anonymous, "wechat")["user"]["id"]


def _wechat_callback(api, code: str):
    status, started = api.post("/v1/auth/login", json={"provider": "wechat", "redirect_uri": REDIRECT_URI})
    assert status == 200, started
    return api.post("/v1/auth/callback", json={"provider": "wechat", "code": code, "state": started["state"]})


@pytest.mark.parametrize("errcode, status, code", [(40029, 401, "LOGIN_FAILED"), (40163, 401, "LOGIN_FAILED"),
                                                   (40013, 502, "PROVIDER_ERROR"),
                                                   (45011, 503, "PROVIDER_UNAVAILABLE")])
def test_wechat_errcodes_become_clear_errors(anonymous, oauth_provider, errcode, status, code):
    error = expect_error(_wechat_callback(anonymous, f"errcode-{errcode}"), status, code)
    assert error["details"]["errcode"] == errcode and str(errcode) in error["message"]


def test_a_disabled_user_cannot_log_in_and_the_refusal_is_audited(anonymous, make_api, oauth_provider):
    user_id = tokens(anonymous)["user"]["id"]
    admin = make_api("root@example.com", admin=True)
    assert admin.post(f"/v1/users/{user_id}/disable")[0] == 200
    expect_error(log_in(anonymous), 401, "ACCOUNT_DISABLED")
    assert audit_types(user_id)[-2:] == ["user.disabled", "auth.login_failed"]
