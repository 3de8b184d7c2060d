"""Makes sure a PostgreSQL server answers at a URL and that its database exists.

Used by `tiris dev` and the test set-up: a stopped local cluster is started (Debian's pg_ctlcluster), a missing
database is created. A remote server is never touched.
"""

import glob
import subprocess
import time

import psycopg
from sqlalchemy.engine import make_url


def _reachable(url) -> bool:
    try:
        psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                        dbname="postgres", connect_timeout=3).close()
        return True
    except psycopg.OperationalError:
        return False


def _start_local_cluster() -> None:
    for conf in sorted(glob.glob("/etc/postgresql/*/*/postgresql.conf")):
        version, cluster = conf.split("/")[3:5]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"],
                       check=False, capture_output=True)


def ensure_database(database_url: str, *, wait_seconds: float = 30) -> None:
    url = make_url(database_url)
    if not _reachable(url):
        if url.host not in (None, "localhost", "127.0.0.1", "::1"):
            raise SystemExit(f"PostgreSQL at {url.host} is not reachable")
        _start_local_cluster()
        deadline = time.monotonic() + wait_seconds
        while not _reachable(url):
            if time.monotonic() > deadline:
                raise SystemExit(f"PostgreSQL did not come up at {url.host}:{url.port or 5432}")
            time.sleep(0.5)
    with psycopg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                         dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{url.database}"')
