"""SIGTERM to `tiris serve`: it stops accepting connections, yet the request in flight finishes and is answered."""

import concurrent.futures
import signal
import time
from decimal import Decimal

import httpx
import psycopg

from db import engine, users
from db.urls import psycopg_kwargs
from tests.helpers import create_exchange, create_sub_account
from tests.server import live_server  # noqa: F401
from tiris import auth


class LiveApi:
    def __init__(self, url: str, token: str):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def post(self, path, json=None):
        response = self.http.post(path, json=json)
        return response.status_code, response.json()


def _connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(**psycopg_kwargs(database_url))


def _waiting_on_a_lock(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tiris-backend' "
                        "AND wait_event_type = 'Lock'").fetchone()[0] > 0


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/health/live", timeout=1)
    except httpx.ConnectError:
        return True
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # Connected a moment before the listening socket closed: still queued unaccepted, the connection is reset
        # with it. Not taken either; the next attempt finds the port closed.
        return False
    return False


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_connections(live_server, settings):  # noqa: F811
    with engine.transaction() as conn:
        user = users.ensure(conn, "shutdown@example.com")
    api = LiveApi(live_server.url, auth.mint(user["id"]))
    account = create_sub_account(api, create_exchange(api)["id"], "USDT")

    with _connect(settings.database_url) as locker, _connect(settings.database_url) as watcher, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        watcher.autocommit = True
        locker.execute("SELECT 1 FROM sub_accounts WHERE id = %s FOR UPDATE", (account["id"],))
        deposit = pool.submit(api.post, f"/v1/sub-accounts/{account['id']}/deposit", {"amount": "25"})
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(watcher):
            assert time.monotonic() < deadline and not deposit.done(), "the deposit never reached the database"
            time.sleep(0.05)

        live_server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refuses_connections(live_server.url):
            assert time.monotonic() < deadline, "still accepting connections 10 s after SIGTERM"
            time.sleep(0.1)
        assert not deposit.done() and live_server.process.poll() is None  # the request is still in flight

        locker.commit()  # the deposit can go on now
        status, body = deposit.result(timeout=20)

    assert status == 201, body
    assert live_server.process.wait(timeout=20) == 0
    with _connect(settings.database_url) as conn:
        balance = conn.execute("SELECT balance FROM sub_accounts WHERE id = %s", (account["id"],)).fetchone()[0]
    assert balance == Decimal(25)
