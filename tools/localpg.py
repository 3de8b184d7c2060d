"""Makes sure a PostgreSQL server answers at a URL and that its database exists.

Used by `tiris dev` and the test set-up: a stopped local cluster is started (Debian's pg_ctlcluster), a missing
database is created. A remote server is never touched.
"""

import glob
import subprocess
import time

import psycopg

from db.urls import psycopg_kwargs


def _reachable(server: dict) -> bool:
    try:
        psycopg.connect(**{**server, "connect_timeout": 3}).close()
        return True
    except psycopg.OperationalError:
        return False


def _start_local_cluster() -> None:
    for conf in sorted(glob.glob("/etc/postgresql/*/*/postgresql.conf")):
        version, cluster = conf.split("/")[3:5]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"],
                       check=False, capture_output=True)


def ensure_database(database_url: str, *, wait_seconds: float = 30) -> None:
    database = psycopg_kwargs(database_url)["dbname"]
    server = psycopg_kwargs(database_url, dbname="postgres")
    host = server.get("host")
    if not _reachable(server):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            raise SystemExit(f"PostgreSQL at {host} is not reachable")
        _start_local_cluster()
        deadline = time.monotonic() + wait_seconds
        while not _reachable(server):
            if time.monotonic() > deadline:
                raise SystemExit(f"PostgreSQL did not come up at {host}:{server['port']}")
            time.sleep(0.5)
    with psycopg.connect(**server, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
