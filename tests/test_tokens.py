"""The service's tokens: refresh rotation with reuse detection, logout, and disabled users refused at once."""

import sqlalchemy as sa

from db import engine
from db.schema import refresh_tokens
from tests.conftest import Api, expect_error
from tests.login import tokens


def me(client, pair) -> int:
    return Api(client, pair["access_token"]).get("/v1/users/me")[0]


def test_refresh_rotates_the_refresh_token(client, oauth_provider):
    anonymous = Api(client, None)
    first = tokens(anonymous)
    status, second = anonymous.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert second["refresh_token"] != first["refresh_token"] and second["user"]["id"] == first["user"]["id"]
    status, third = anonymous.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert status == 200, third
    assert me(client, third) == 200


def test_reusing_a_spent_refresh_token_revokes_its_whole_session(client, oauth_provider):
    anonymous = Api(client, None)
    stolen = tokens(anonymous)
    status, current = anonymous.post("/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert status == 200
    other_session = tokens(anonymous)

    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]}),
                 401, "REFRESH_TOKEN_REUSED")
    # Every token of that session is dead now, the legitimate holder's too; other sessions are untouched.
    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": current["refresh_token"]}),
                 401, "INVALID_REFRESH_TOKEN")
    assert me(client, current) == 401 and me(client, stolen) == 401
    assert me(client, other_session) == 200


def test_an_unknown_or_expired_refresh_token_is_refused(client, oauth_provider):
    anonymous = Api(client, None)
    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": "never-issued"}),
                 401, "INVALID_REFRESH_TOKEN")
    pair = tokens(anonymous)
    with engine.transaction() as conn:
        conn.execute(sa.update(refresh_tokens).values(expires_at=sa.func.now() - sa.text("interval '1 second'")))
    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
                 401, "INVALID_REFRESH_TOKEN")


def test_logout_ends_the_session_at_once(client, oauth_provider):
    anonymous = Api(client, None)
    pair, other = tokens(anonymous), tokens(anonymous)
    assert Api(client, pair["access_token"]).post("/v1/auth/logout")[0] == 204
    expect_error(Api(client, pair["access_token"]).get("/v1/users/me"), 401, "SESSION_REVOKED")
    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
                 401, "INVALID_REFRESH_TOKEN")
    assert me(client, other) == 200


def test_logout_everywhere_ends_every_session(client, oauth_provider):
    anonymous = Api(client, None)
    pair, other = tokens(anonymous), tokens(anonymous)
    assert Api(client, pair["access_token"]).post("/v1/auth/logout", json={"everywhere": True})[0] == 204
    assert me(client, pair) == 401 and me(client, other) == 401


def test_a_disabled_user_is_refused_at_once_and_enabling_needs_a_new_login(client, make_api, oauth_provider):
    anonymous = Api(client, None)
    pair = tokens(anonymous)
    admin = make_api("root@example.com", admin=True)
    assert admin.post(f"/v1/users/{pair['user']['id']}/disable")[0] == 200
    expect_error(Api(client, pair["access_token"]).get("/v1/users/me"), 401, "ACCOUNT_DISABLED")
    expect_error(anonymous.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401)

    assert admin.post(f"/v1/users/{pair['user']['id']}/enable")[0] == 200
    expect_error(Api(client, pair["access_token"]).get("/v1/users/me"), 401, "SESSION_REVOKED")
    assert me(client, tokens(anonymous)) == 200
