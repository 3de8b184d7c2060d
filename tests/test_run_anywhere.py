"""`tiris dev` on a machine with only Python: no Node, no PostgreSQL of the system (an embedded one from a wheel),
the local login; `tiris serve` never runs that login; the test set-up's own embedded fallback."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import free_port
from tests.oauth_provider import REDIRECT_URI
from tools import embeddedpg

ROOT = Path(__file__).resolve().parent.parent
NOT_ON_PATH = {"node", "npm", "npx", "pg_ctlcluster", "pg_ctl", "initdb", "postgres", "psql"}


def _bare_path(folder: Path) -> str:
    """A PATH with the machine's tools except Node and PostgreSQL's: one folder of links."""
    folder.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory) or Path(directory) == Path(sys.executable).parent:
            continue
        for tool in os.scandir(directory):
            if tool.name in NOT_ON_PATH or tool.name.startswith("pg_") or (folder / tool.name).exists():
                continue
            if os.access(tool.path, os.X_OK) and not tool.is_dir():
                (folder / tool.name).symlink_to(tool.path)
    return str(folder)


class Dev:
    """`tiris dev` in its own folder (its .tiris/ there), as `make run` runs it."""

    def __init__(self, home: Path, env: dict):
        self.home, self.env, self.process = home, env, None
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "dev.log"

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen([sys.executable, "-m", "tools.cli", "dev"], cwd=self.home, env=self.env,
                                        stdout=self.log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while "Tiris is running" not in self.log.read_text()[offset:]:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.3)

    def stop(self) -> None:
        """Ctrl-C, as a developer stops it."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
                embeddedpg.EmbeddedServer(self.home / ".tiris" / "pg", "127.0.0.1", 0).stop()  # never left running

    def tiris(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def token(self, email: str) -> str:
        result = self.tiris("token", "--email", email)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _no_traceback(log: str) -> None:
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 500):at + 3000]


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    # In /tmp, not pytest's private folder: as root, the embedded server runs as an unprivileged user.
    home = Path(tempfile.mkdtemp(prefix="tiris-dev-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "WECHAT_", "OAUTH_"))
           and k not in ("JWT_SECRET", "ENCRYPTION_KEYS", "API_KEY_HASH_KEY", "REDIS_URL")}
    env.update(PATH=_bare_path(tmp_path_factory.mktemp("path") / "bin"), PORT=str(free_port()),
               LOCAL_LOGIN_PORT=str(free_port()), NATS_URL=f"nats://127.0.0.1:{free_port()}",
               DATABASE_URL=f"postgresql+psycopg://tiris:dev-password@127.0.0.1:{free_port()}/tiris")
    server = Dev(home, env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_dev_needs_no_node_nor_system_postgres_and_keeps_its_data_across_restarts(dev):
    for tool in NOT_ON_PATH:
        assert shutil.which(tool, path=dev.env["PATH"]) is None, tool
    log = dev.log.read_text()
    assert re.search(r"started an embedded PostgreSQL 1\d", log), log
    _no_traceback(log)
    assert httpx.get(f"{dev.url}/health/ready", timeout=10).status_code == 200
    auth = {"Authorization": f"Bearer {dev.token('keeper@example.com')}"}
    exchange = httpx.post(f"{dev.url}/v1/exchanges", headers=auth, json={
        "name": "Main", "type": "binance", "api_key": "AKIAEXAMPLEKEY123456", "api_secret": "s3cr3t-value-0001"})
    assert exchange.status_code == 201, exchange.text
    wallet = httpx.post(f"{dev.url}/v1/sub-accounts", headers=auth, json={
        "exchange_id": exchange.json()["id"], "name": "USDT wallet", "symbol": "USDT"})
    assert wallet.status_code == 201, wallet.text
    deposit = httpx.post(f"{dev.url}/v1/sub-accounts/{wallet.json()['id']}/deposit", headers=auth,
                         json={"amount": "1250.5"})
    assert deposit.status_code == 201, deposit.text

    dev.stop()
    with pytest.raises(psycopg.OperationalError):  # dev stopped the server it started
        psycopg.connect(dev.env["DATABASE_URL"].replace("+psycopg", ""), connect_timeout=2)
    dev.start()

    _no_traceback(dev.log.read_text())
    again = httpx.get(f"{dev.url}/v1/sub-accounts/{wallet.json()['id']}", headers=auth, timeout=10)
    assert again.status_code == 200, again.text
    assert float(again.json()["balance"]) == 1250.5


def _sign_in(auth_url: str, email: str) -> dict:
    """The browser: the local provider's sign-in page, the form filled in, the redirect back read."""
    page = httpx.get(auth_url, timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text
    fields = dict(re.findall(r"<input type='hidden' name='([^']*)' value='([^']*)'>", page.text))
    action = re.search(r"<form method='post' action='([^']*)'>", page.text).group(1)
    provider = urllib.parse.urlsplit(auth_url)
    answer = httpx.post(f"{provider.scheme}://{provider.netloc}{action}",
                        data={**fields, "email": email, "name": "Portal Dev"}, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def test_local_login_runs_googles_whole_flow_over_http_under_dev(dev):
    started = httpx.post(f"{dev.url}/v1/auth/login", json={"provider": "google", "redirect_uri": REDIRECT_URI})
    assert started.status_code == 200, started.text
    assert started.json()["auth_url"].startswith(f"http://127.0.0.1:{dev.env['LOCAL_LOGIN_PORT']}/google/authorize")
    back = urllib.parse.urlsplit(_sign_in(started.json()["auth_url"], "portal.dev@example.com"))
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT_URI
    query = dict(urllib.parse.parse_qsl(back.query))
    assert query["state"] == started.json()["state"]

    tokens = httpx.post(f"{dev.url}/v1/auth/callback", json={"provider": "google", "code": query["code"],
                                                              "state": query["state"]})
    assert tokens.status_code == 200, tokens.text
    me = httpx.get(f"{dev.url}/v1/users/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == "portal.dev@example.com", me.text

    refreshed = httpx.post(f"{dev.url}/v1/auth/refresh", json={"refresh_token": tokens.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    access = refreshed.json()["access_token"]
    logout = httpx.post(f"{dev.url}/v1/auth/logout", headers={"Authorization": f"Bearer {access}"}, json={})
    assert logout.status_code == 204, logout.text
    after = httpx.post(f"{dev.url}/v1/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]})
    assert after.status_code == 401, after.text


def test_local_login_home_page_signs_in_against_the_service_and_shows_the_tokens(dev):
    home = f"http://127.0.0.1:{dev.env['LOCAL_LOGIN_PORT']}"
    assert "Tiris local login" in httpx.get(f"{home}/", timeout=10).text
    start = httpx.get(f"{home}/start?provider=google", timeout=10)
    assert start.status_code == 302, start.text
    callback = _sign_in(start.headers["location"], "home.page@example.com")
    assert callback.startswith(f"{home}/callback?")
    shown = httpx.get(callback, timeout=10)
    assert shown.status_code == 200, shown.text
    assert "Signed in" in shown.text and "refresh_token" in shown.text and "home.page@example.com" in shown.text


def test_user_commands_use_the_dev_secrets_like_token(dev):
    dev.token("promoted@example.com")
    result = dev.tiris("user", "grant-admin", "promoted@example.com")
    assert result.returncode == 0, result.stderr
    assert "promoted@example.com is now admin" in result.stderr


def test_serve_refuses_to_start_the_local_login_provider():
    port = free_port()
    env = {**os.environ, "TIRIS_LOCAL_LOGIN": "1", "LOCAL_LOGIN_PORT": str(port), "PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "tools.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "tiris serve never runs the local login provider" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_dev_says_in_one_line_when_no_database_can_be_had(tmp_path):
    env = {**os.environ, "DATABASE_URL": "postgresql+psycopg://tiris@db.invalid:5432/tiris",
           "PORT": str(free_port()), "LOCAL_LOGIN_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "tools.cli", "dev"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == "PostgreSQL at db.invalid:5432 is not reachable", result.stderr


def test_the_suite_falls_back_to_an_embedded_server_when_nothing_answers(tmp_path):
    port = free_port()
    env = {**os.environ, "TEST_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
           "EXPECT_EMBEDDED_PORT": str(port)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"{Path(__file__)}::test_each_test_gets_a_migrated_database_of_its_own"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout, result.stdout
    with pytest.raises(psycopg.OperationalError):  # the run stopped the server it started
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2)


def test_each_test_gets_a_migrated_database_of_its_own(database_url):
    """Also the probe of the fallback test above, which runs it with nothing at TEST_DATABASE_URL."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        if os.environ.get("EXPECT_EMBEDDED_PORT"):
            assert conn.execute("SHOW port").fetchone()[0] == os.environ["EXPECT_EMBEDDED_PORT"]
            assert "tiris-test-pg-" in conn.execute("SHOW data_directory").fetchone()[0]
