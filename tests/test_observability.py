"""Structured JSON logs and Prometheus metrics, from the real processes (`tiris serve` with two workers and
`tiris consume`), read the way an operator's tools read them."""

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from db import engine
from db import users
from tests.conftest import free_port
from tests.helpers import create_exchange, create_sub_account
from tests.jetstream import jetstream, publish, settled, start_consumer, wait_for  # noqa: F401
from tests.server import live_server  # noqa: F401
from tests.test_events import Bot
from tiris import auth


def _token(email: str) -> tuple[str, str]:
    with engine.transaction() as conn:
        user = users.ensure(conn, email)
    return auth.mint(user["id"]), str(user["id"])


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(family, **labels) -> float:
    return sum(s.value for s in family.samples if s.name.endswith("_total") and
               all(s.labels.get(k) == v for k, v in labels.items()))


def test_json_log_lines_carry_the_request_trace_id_user_and_route(live_server, settings):  # noqa: F811
    token, user_id = _token("logged@example.com")
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as client:
        ok = client.get("/v1/users/me", headers={"X-Request-ID": "trace-ok-1"})
        missing = client.get("/v1/sub-accounts/00000000-0000-4000-8000-000000000000")  # trace id generated
        unauthenticated = client.get("/v1/users/me", headers={"Authorization": "Bearer not-a-token"})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "trace-ok-1"
    assert missing.status_code == 404 and unauthenticated.status_code == 401
    live_server.stop()  # every line written
    lines = _json_lines(live_server.log_text())
    assert len(lines) == len(live_server.log_text().splitlines()), "a log line is not JSON"
    requests = {line["trace_id"]: line for line in lines if line["logger"] == "tiris.request"}

    line = requests["trace-ok-1"]
    assert line["user_id"] == user_id and line["route"] == "/v1/users/me" and line["method"] == "GET"
    assert line["status"] == 200 and line["duration_ms"] > 0 and line["level"] == "INFO"

    trace = missing.json()["error"]["trace_id"]
    assert trace == missing.headers["X-Request-ID"]  # the same trace id in the body, the header and the log
    assert requests[trace]["route"] == "/v1/sub-accounts/{sub_account_id}" and requests[trace]["status"] == 404

    trace = unauthenticated.json()["error"]["trace_id"]
    assert requests[trace]["status"] == 401 and requests[trace]["user_id"] is None
    assert token not in live_server.log_text() and "not-a-token" not in live_server.log_text()


def test_metrics_parsed_by_prometheus_text_parser_sum_both_workers(live_server, settings):  # noqa: F811
    token, _ = _token("metered@example.com")
    calls = 12
    for _ in range(calls):  # a new connection each, so both workers answer some
        with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as client:
            assert client.get("/v1/users/me").status_code == 200

    class Api:  # tests.helpers speaks to an Api; this one is the live server
        def __init__(self):
            self.http = httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"})

        def post(self, path, json=None):
            response = self.http.post(path, json=json)
            return response.status_code, response.json()

    api = Api()
    exchange = create_exchange(api)
    account = create_sub_account(api, exchange["id"], "USDT")
    assert api.post(f"/v1/sub-accounts/{account['id']}/deposit", json={"amount": "100"})[0] == 201

    response = httpx.get(f"{live_server.url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = _families(response.text)
    for name, kind in {"tiris_http_requests": "counter", "tiris_http_request_duration_seconds": "histogram",
                       "tiris_http_requests_in_flight": "gauge", "tiris_db_pool_size": "gauge",
                       "tiris_db_pool_in_use": "gauge", "tiris_db_pool_waits": "counter",
                       "tiris_deposits": "counter", "tiris_trades": "counter"}.items():
        assert name in families and families[name].type == kind, name
    assert _value(families["tiris_http_requests"], route="/v1/users/me", method="GET", status="200") == calls
    assert _value(families["tiris_deposits"]) == 1
    pool_sizes = [s.value for s in families["tiris_db_pool_size"].samples]
    assert sum(pool_sizes) == 2 * settings.db_pool_size  # two live workers, each with its pool
    in_flight = sum(s.value for s in families["tiris_http_requests_in_flight"].samples)
    assert in_flight == 1  # this scrape


def test_consumer_exposes_its_metrics_and_logs_one_json_line_per_batch(make_api, jetstream,  # noqa: F811
                                                                       start_consumer):
    api = make_api("consumer-metrics@example.com")
    bot = Bot(api, usdt="100")
    port = free_port()
    consumer = start_consumer(CONSUMER_METRICS_PORT=str(port))
    publish(jetstream, [bot.fill("buy", "1", "10", "0"), bot.balance_updated("150", "80"),
                        ("trading.orders.created." + bot.user_id, b"{not json", "junk-1")])
    wait_for(settled(engine.reading, 3), what="the events", log=consumer.log)

    def scraped():
        try:
            families = _families(httpx.get(f"http://{'127.0.0.1'}:{port}/metrics").text)
        except httpx.TransportError:
            return None
        return families if _value(families.get("tiris_consumer_events_processed", []) or _Empty) >= 2 else None

    families = wait_for(scraped, timeout=10, what="the consumer's metrics", log=consumer.log)
    assert _value(families["tiris_consumer_events_dead_lettered"]) == 1
    assert _value(families["tiris_balance_drift"]) == 1
    assert "tiris_consumer_batches_failed" in families
    assert "tiris_consumer_lag_events" in families
    assert families["tiris_consumer_batch_duration_seconds"].type == "histogram"
    batches = [line for line in _json_lines(consumer.log()) if line.get("message") == "batch applied"]
    assert batches and sum(line["events"] for line in batches) == 3
    assert {line["consumer"] for line in batches} <= {f"tiris-ledger-p{i}" for i in range(4)}


class _Empty:
    samples: list = []


def test_log_lines_redact_secret_fields_and_bearer_tokens():
    import logging

    from tiris import logs

    record = logging.LogRecord("tiris.test", logging.INFO, __file__, 1, "sent Authorization: Bearer %s with %s",
                               ("eyJhbGciOi.secret.sig", '{"api_secret": "s3cr3t-value"}'), None)
    record.headers = {"Authorization": "Bearer eyJhbGciOi.secret.sig", "accept": "application/json"}
    record.body = {"name": "Main", "api_key": "AKIA1234", "nested": [{"refresh_token": "rt-1"}]}
    line = json.loads(logs.JsonFormatter().format(record))
    text = json.dumps(line)
    for secret in ("eyJhbGciOi.secret.sig", "s3cr3t-value", "AKIA1234", "rt-1"):
        assert secret not in text, text
    assert line["headers"]["accept"] == "application/json" and line["body"]["name"] == "Main"
