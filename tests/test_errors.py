"""Every error, including those raised by Connexion's middleware, has the documented shape and a trace id."""

import uuid

import jwt

from tests.conftest import TEST_ENV, expect_error


def test_missing_token_is_401_in_the_error_format(client):
    response = client.get("/v1/users/me")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    expect_error((401, response.json()), 401, "UNAUTHORIZED")


def test_bad_signature_alg_none_and_expired_tokens_are_401(client, api):
    user_id = api.user["id"]
    forged = jwt.encode({"sub": str(user_id), "iss": "tiris-backend", "iat": 1, "exp": 4102444800}, "wrong" * 10,
                        algorithm="HS256")
    unsigned = jwt.encode({"sub": str(user_id), "iss": "tiris-backend", "iat": 1, "exp": 4102444800}, None,
                          algorithm="none")
    expired = jwt.encode({"sub": str(user_id), "iss": "tiris-backend", "iat": 1, "exp": 2},
                         TEST_ENV["JWT_SECRET"], algorithm="HS256")
    for token in (forged, unsigned, expired, "not-a-jwt"):
        response = client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        expect_error((response.status_code, response.json()), 401)


def test_unknown_route_is_404_and_wrong_method_is_405_with_allow(client, api):
    expect_error(api.get("/v1/nothing-here"), 404, "NOT_FOUND")
    response = client.put("/v1/transactions", headers={"Authorization": f"Bearer {api.token}"})
    expect_error((response.status_code, response.json()), 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]


def test_wrong_content_type_is_415(client, api):
    response = client.post("/v1/exchanges", content=b"name=x", headers={
        "Authorization": f"Bearer {api.token}", "Content-Type": "application/x-www-form-urlencoded"})
    expect_error((response.status_code, response.json()), 415, "UNSUPPORTED_MEDIA_TYPE")


def test_malformed_json_and_non_utf8_bodies_are_400_not_500(client, api):
    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
    for raw in (b"{not json", b"\xff\xfe\x00"):
        response = client.post("/v1/exchanges", content=raw, headers=headers)
        expect_error((response.status_code, response.json()), 400, "MALFORMED_BODY")


def test_invalid_body_lists_every_field_error(api):
    error = expect_error(api.post("/v1/exchanges", json={"name": "", "type": "nasdaq", "surprise": 1}), 400,
                         "VALIDATION_ERROR")
    fields = {d["field"] for d in error["details"]}
    assert fields == {"name", "type", "surprise", "api_key", "api_secret"}


def test_invalid_query_and_path_parameters_are_all_reported(api):
    error = expect_error(api.get("/v1/transactions?limit=0&direction=sideways&start_time=yesterday"), 400)
    assert {d["field"] for d in error["details"]} == {"query/limit", "query/direction", "query/start_time"}
    error = expect_error(api.get("/v1/sub-accounts/not-a-uuid"), 400)
    assert error["details"][0]["field"] == "path/sub_account_id"
    error = expect_error(api.get("/v1/transactions?colour=red"), 400)
    assert error["details"][0]["field"] == "query/colour"


def test_trace_id_echoes_x_request_id_in_body_and_header(client, api):
    response = client.get(f"/v1/sub-accounts/{uuid.uuid4()}",
                          headers={"Authorization": f"Bearer {api.token}", "X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert expect_error((response.status_code, response.json()), 404)["trace_id"] == "req-42"


def test_generated_trace_id_is_returned_on_success_and_error(client):
    ok = client.get("/health/live")
    assert ok.status_code == 200 and uuid.UUID(ok.headers["x-request-id"])
    failed = client.get("/v1/users/me")
    assert failed.json()["error"]["trace_id"] == failed.headers["x-request-id"]


def test_unhandled_error_is_a_500_that_leaks_nothing(app, client, api, monkeypatch):
    from db import users

    def explode(*args, **kwargs):
        raise RuntimeError("password=hunter2 at db.internal:5432")

    monkeypatch.setattr(users, "stats", explode)
    error = expect_error(api.get("/v1/users/me/stats"), 500, "INTERNAL_ERROR")
    assert "hunter2" not in str(error) and "db.internal" not in str(error)


def test_database_outage_is_503(settings, api):
    from db import engine

    engine.engine().dispose()
    broken = settings.__class__(**{**settings.__dict__, "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x",
                                   "db_pool_timeout": 1})
    engine.configure(broken)
    expect_error(api.get("/v1/exchanges"), 503, "SERVICE_UNAVAILABLE")  # even authentication needs the database
    engine.configure(settings)
    assert api.get("/v1/exchanges")[0] == 200


def test_path_with_an_encoded_control_character_is_404_not_500(client, api):
    response = client.post("/v1/sub-accounts/%0A%F0%AA%AB%93/deposit", json={"amount": "1"},
                           headers={"Authorization": f"Bearer {api.token}"})
    expect_error((response.status_code, response.json()), 404, "NOT_FOUND")


def test_a_database_outage_logs_one_traceback_and_answers_503_with_retry_after(settings, api, client, caplog):
    from db import engine
    from tiris import error_handlers

    error_handlers._last_unavailable = -error_handlers.OUTAGE_GAP  # a new outage for this test
    engine.engine().dispose()
    engine.configure(settings.__class__(**{**settings.__dict__, "db_pool_timeout": 1,
                                           "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x"}))
    try:
        with caplog.at_level("INFO"):
            responses = [client.get("/v1/exchanges", headers={"Authorization": f"Bearer {api.token}"})
                         for _ in range(5)]
    finally:
        engine.configure(settings)
    assert [r.status_code for r in responses] == [503] * 5
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses)
    tracebacks = [r for r in caplog.records if r.exc_info]
    request_lines = [r for r in caplog.records if r.name == "tiris.request" and getattr(r, "status", None) == 503]
    assert len(tracebacks) == 1 and len(request_lines) == 5, [r.getMessage() for r in caplog.records]
