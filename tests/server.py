"""The real service as a subprocess (`tiris serve`: gunicorn with uvicorn workers) on a free 127.0.0.1 port.

The in-process Flask test client runs one request at a time in one process, so it cannot show what happens when
several worker processes, each with its own connection pool, book on the same rows at once. Tests that need that
(or the service's real log output) use `live_server` instead.

Import the fixture into a test module with `from tests.server import live_server  # noqa: F401`.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # gunicorn boots two workers, each importing Connexion and parsing openapi.yaml
STOP_TIMEOUT = 15.0  # SIGTERM is graceful: idle workers exit at once; 15 s is far above that, far below 30



@dataclass
class LiveServer:
    url: str
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stops the server and waits for it, so every line it will ever write is in the log file. Idempotent."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # The server runs in its own session, so its group holds exactly the master and its workers.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


def _wait_until_ready(server: LiveServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer yet"
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                pytest.fail(f"the server exited with {server.process.returncode} while starting; its log:\n"
                            f"{server.log_text()}")
            try:
                response = client.get("/health/ready")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as error:  # not listening yet
                last = repr(error)
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"the server was not ready within {START_TIMEOUT:.0f} s (last: {last}); its log:\n"
                f"{server.log_text()}")


@contextlib.contextmanager
def running_server(service_env: dict, log_dir: Path, port: int | None = None):
    """`tiris serve` with `service_env` on `port` (a free one by default), ready; stopped (SIGTERM, then SIGKILL)
    afterwards. A server started again on the same port writes a log of its own."""
    port = port or free_port()
    log_path = log_dir / "server.log"
    if log_path.exists():
        log_path = log_dir / f"server-{len(list(log_dir.glob('server*.log')))}.log"
    env = {**os.environ, **service_env, "HOST": "127.0.0.1", "PORT": str(port)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tools.cli", "serve", "--workers", "2"], cwd=ROOT,
                                   env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = LiveServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_server(service_env, tmp_path_factory):
    """A started, ready server on this test's fresh database."""
    # Under pytest's tmp dir rather than deleted on teardown, so the log of a failed run can still be read.
    with running_server(service_env, tmp_path_factory.mktemp("live_server")) as server:
        yield server
