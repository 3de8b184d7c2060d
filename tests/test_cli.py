"""The command line: `tiris token` prints only a token, bad configuration is explained, `tiris dev` comes up."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt

from tests.conftest import TEST_ENV, _admin_connection, database_url_for, free_port
from tests.jetstream import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _run(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, **kwargs)


def test_token_prints_only_a_token_that_the_api_accepts(service_env, client):
    result = _run(["token", "--email", "ops@example.com", "--admin"], service_env)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = jwt.decode(token, TEST_ENV["JWT_SECRET"], algorithms=["HS256"], issuer="tiris-backend")
    response = client.get("/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert [u["id"] for u in response.json()["items"]] == [claims["sub"]]


def test_missing_and_bad_configuration_is_listed_one_line_each():
    env = {k: v for k, v in os.environ.items() if k not in TEST_ENV and k != "DATABASE_URL"}
    env.update({"JWT_SECRET": "short", "DB_POOL_SIZE": "many"})
    result = subprocess.run([sys.executable, "-m", "tools.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    for expected in ("DATABASE_URL is not set", "JWT_SECRET must be at least 32 characters",
                     "ENCRYPTION_KEYS is not set", "API_KEY_HASH_KEY is not set", "DB_POOL_SIZE='many'"):
        assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr



def test_dev_creates_the_database_migrates_and_becomes_ready_for_a_local_portal(tmp_path):
    """...and in the same setting (no secrets configured) the user commands work as `tiris token` does, and a
    portal's dev server on localhost:3000 gets its CORS preflight answered."""
    name = f"tiris_dev_{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for(name), "PORT": str(port),
           "NATS_URL": f"nats://127.0.0.1:{free_port()}"}  # a private JetStream, started by dev
    env.pop("JWT_SECRET", None)
    log = (tmp_path / "dev.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "tools.cli", "dev"], cwd=tmp_path, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.3)
        # dev also started a private JetStream and the consumer beside the API
        expected = {"database": "ok", "migrations": "ok", "nats": "ok", "consumer": "ok"}
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health/ready").json()["checks"] == expected,
                 what="the consumer's first sign of life", log=lambda: (tmp_path / "dev.log").read_text())
        preflight = httpx.options(f"http://127.0.0.1:{port}/v1/users/me", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        shell = {k: v for k, v in env.items() if k not in ("PORT", "NATS_URL")}
        for command in (["token", "--email", "ops@example.com"], ["user", "grant-admin", "ops@example.com"]):
            result = subprocess.run([sys.executable, "-m", "tools.cli", *command], cwd=tmp_path, env=shell,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        assert "ops@example.com is now admin" in result.stderr
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        with _admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
