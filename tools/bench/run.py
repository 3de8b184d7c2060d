"""`make bench`: one run, ours beside the ceilings, on a fresh database; writes the bench section of BENCHMARKS.md.

  python -m tools.bench.run [--rest-seconds 5] [--rounds 2] [--fills 15000] [--latency-seconds 10]

The machine is shared and noisy, so nothing is compared across runs: each figure has its ceiling measured minutes
apart in the same run, and the REST targets are loaded in alternating rounds.
"""

import argparse
import base64
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from db import migrate
from db.urls import psycopg_kwargs
from tools import localnats
from tools.bench import events as event_bench
from tools.bench import report, rest
from tools.bench import stream as stream_bench

ROOT = Path(__file__).resolve().parents[2]
GOALS = {"rest_ratio": 0.6, "events_ratio": 0.6, "fills_per_s": 10000, "p99_ms": 250, "rss_mb": 150}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU time the process (or one of its threads) has used so far."""
    path = Path(f"/proc/{pid}/task/{thread}/stat") if thread else Path(f"/proc/{pid}/stat")
    fields = path.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Database:
    """A fresh, migrated database of its own, dropped afterwards."""

    def __init__(self, server_url: str):
        self.name = f"tiris_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.admin = psycopg_kwargs(server_url, dbname="postgres", autocommit=True)
        self.url = make_url(server_url).set(database=self.name).render_as_string(hide_password=False)
        self.conninfo = psycopg.conninfo.make_conninfo(**psycopg_kwargs(self.url))

    def __enter__(self):
        with psycopg.connect(**self.admin) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        migrate.upgrade(self.url)
        return self

    def __exit__(self, *exc):
        with psycopg.connect(**self.admin) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # its own session: stopping it stops its workers and nothing else
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_http(url: str, headers: dict, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited while starting:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def seed_rest_users(count: int, transactions_each: int, *, with_user_ids: bool = False) -> list[tuple]:
    """Users with one funded sub-account and a page of history each; returns (token, sub-account id), or (token,
    user id, sub-account id)."""
    from db import booking, engine, exchanges, legs, sub_accounts, users
    from db.access import Caller
    from db.commands import Entry, Transfer
    from tiris import auth

    tag, found = secrets.token_hex(3), []
    for n in range(count):
        with engine.transaction() as conn:
            user = users.ensure(conn, f"bench-{tag}-{n}@example.com")
            caller = Caller(id=user["id"], role="user")
            exchange = exchanges.create(conn, caller, name="bench", type_="simulator", api_key=uuid.uuid4().hex,
                                        api_secret=secrets.token_hex(16))
            account = sub_accounts.create(conn, caller, exchange_id=exchange["id"], name="USDT", symbol="USDT",
                                          opening_balance=Decimal(1000), info={})
            booking.book(conn, [Entry(user["id"], Transfer(account["id"], "credit", legs.QUANTUM * 1000, "deposit"))
                                for _ in range(transactions_each)])
        token = auth.mint(user["id"], ttl=3600)
        found.append((token, str(user["id"]), str(account["id"])) if with_user_ids else (token, str(account["id"])))
    return found


def bench_rest(args, env: dict, workdir: Path) -> dict:
    users = seed_rest_users(args.rest_users, args.history)
    ours_port, ceiling_port = _free_port(), _free_port()
    ours = _start([sys.executable, "-m", "tools.cli", "serve", "--workers", "2"],
                  {**env, "HOST": "127.0.0.1", "PORT": str(ours_port)}, workdir / "serve.log")
    ceiling = _start([sys.executable, "-m", "gunicorn", "tools.bench.ceiling_app:create_app()", "--workers", "2",
                      "--worker-class", "sync", "--bind", f"127.0.0.1:{ceiling_port}", "--chdir", str(ROOT),
                      "--no-control-socket"], env, workdir / "ceiling.log")
    auth = {"Authorization": f"Bearer {users[0][0]}"}
    try:
        _wait_http(f"http://127.0.0.1:{ours_port}/health/ready", {}, ours, workdir / "serve.log")
        _wait_http(f"http://127.0.0.1:{ceiling_port}/v1/sub-accounts/{users[0][1]}", auth, ceiling,
                   workdir / "ceiling.log")
        targets = {"ours": f"http://127.0.0.1:{ours_port}", "ceiling": f"http://127.0.0.1:{ceiling_port}"}
        results = {}
        for operation in rest.OPERATIONS:
            script = rest.write_script(workdir, operation, users)
            runs = {"ours": [], "ceiling": []}
            for _ in range(args.rounds):  # alternate, so a noisy neighbour hurts both sides alike
                for name, url in targets.items():
                    runs[name].append(rest.run_load(url, script, args.rest_seconds, args.connections, users,
                                                    operation))
            results[operation] = {name: rest.merge(r) for name, r in runs.items()}
        workers = _children(ours.pid)
        results["rss_mb"] = max((_peak_rss_mb(pid) for pid in workers), default=float("nan"))
        return results
    finally:
        _stop(ours)
        _stop(ceiling)


def bench_stream(args, env: dict, workdir: Path) -> dict:
    """One API worker with the feed on: streams held, its RSS, commit -> client latency at --stream-rate."""
    users = [(token, user_id, account_id) for token, user_id, account_id in
             seed_rest_users(args.streams // stream_bench.PER_USER, 0, with_user_ids=True)]
    port = _free_port()
    env = {**env, "FEED_ENABLED": "1", "HOST": "127.0.0.1", "PORT": str(port),
           "STREAM_MAX_PER_WORKER": str(max(args.streams, 1000))}
    server = _start([sys.executable, "-m", "tools.cli", "serve", "--workers", "1"], env, workdir / "stream.log")
    try:
        _wait_http(f"http://127.0.0.1:{port}/health/ready", {}, server, workdir / "stream.log")
        [worker] = _children(server.pid)
        return stream_bench.measure(port, worker, users, args.streams, args.stream_rate, args.stream_seconds, env,
                                    _cpu_seconds)
    finally:
        _stop(server)


def bench_events(args, env: dict, database: Database, workdir: Path) -> dict:
    """Fills/s and latency through one `tiris consume`, then through two; then the two ceilings on the same rows."""
    from tools import simulate_bot

    plan = simulate_bot.setup(args.event_users)
    result = {"runs": {count: _consumed(args, env, database, workdir, plan, consumers=count, seed=10 * count)
                       for count in args.consumers}}
    # The ceiling is a few seconds of one process, so it moves the most with the machine's neighbours (6,000 to
    # 8,000 fills/s in consecutive runs): the median of three runs is the figure, each run kept beside it.
    ceilings = sorted((event_bench.ceiling(database.conninfo, event_bench.fills(plan, args.fills, seed=3 + n),
                                           args.batch) for n in range(3)), key=lambda run: run["fills_per_s"])
    result["ceiling"] = {**ceilings[1], "runs": [run["fills_per_s"] for run in ceilings]}
    result["database"] = event_bench.database_limit(database.conninfo, plan, args.fills)
    return result


def _consumed(args, env: dict, database: Database, workdir: Path, plan: list[dict], consumers: int,
              seed: int) -> dict:
    nats_port = _free_port()
    nats = localnats.start(nats_port, workdir / f"nats-{consumers}")
    env = {**env, "NATS_URL": f"nats://127.0.0.1:{nats_port}"}
    logs = [workdir / f"consume-{consumers}-{n}.log" for n in range(consumers)]
    processes = [_start([sys.executable, "-m", "tools.cli", "consume"], env, log) for log in logs]
    watcher = None
    try:
        with psycopg.connect(database.conninfo, autocommit=True) as conn:  # each owns its share of the partitions
            deadline = time.monotonic() + 60
            while sorted(_leases(conn).values()) != _shares(args.partitions, consumers):
                if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                    raise SystemExit("tiris consume did not take its partitions:\n"
                                     + "\n".join(log.read_text()[-2000:] for log in logs))
                time.sleep(0.2)
        watcher = event_bench.CommitWatcher(database.conninfo)
        watcher.start()
        nats_url = env["NATS_URL"]

        def cpu() -> tuple[float, float]:  # (whole processes, their main threads: the asyncio loop with NATS)
            return (sum(_cpu_seconds(process.pid) for process in processes),
                    sum(_cpu_seconds(process.pid, process.pid) for process in processes))

        before = cpu()
        result = {"throughput": event_bench.throughput(
            nats_url, watcher, event_bench.fills(plan, args.fills, seed=seed), timeout=args.timeout)}
        used = [after - earlier for after, earlier in zip(cpu(), before)]
        result["cpu_us_per_fill"], result["loop_cpu_us_per_fill"] = (seconds / args.fills * 1e6 for seconds in used)
        half = result["throughput"]["fills_per_s"] / 2
        count = max(50, int(half * args.latency_seconds))
        result["latency"] = event_bench.latency(nats_url, watcher, event_bench.fills(plan, count, seed=seed + 1),
                                                half, timeout=args.timeout)
        result["rss_mb"] = max(_peak_rss_mb(process.pid) for process in processes)
    finally:
        if watcher:
            watcher.stop()
        for process in processes:
            _stop(process)
        nats.terminate()
        nats.wait(timeout=20)
    return result


def _leases(conn: psycopg.Connection) -> dict[int, int]:
    """pid -> partitions it holds (consumers/runner.py: an advisory lock per partition)."""
    from consumers.runner import LEASE_HOLDERS

    return dict(conn.execute(LEASE_HOLDERS).fetchall())


def _shares(partitions: int, processes: int) -> list[int]:
    """The partitions each process works once they are split (consumers/runner.py), in ascending order."""
    share = -(-partitions // processes)
    counts = [min(share, partitions - n * share) for n in range(processes)]
    return sorted(count for count in counts if count > 0)


def ledger_consistent(conninfo: str) -> bool:
    """Every balance equals its credits minus debits, and every leg's closing balance is on the books."""
    with psycopg.connect(conninfo) as conn:
        drifted = conn.execute(
            "SELECT count(*) FROM sub_accounts s WHERE s.balance <> (SELECT coalesce(sum(CASE t.direction "
            "WHEN 'credit' THEN t.amount ELSE -t.amount END), 0) FROM transactions t WHERE t.sub_account_id = s.id)"
        ).fetchone()[0]
    return drifted == 0


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(args, command: str, started: dt.datetime, figures: dict) -> str:
    rest_figures, ev = figures["rest"], figures["events"]
    lines = [
        "## Speed: ours beside the ceilings", "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC", f"- Machine: {report.machine()}", f"- Command: `{command}`",
        f"- REST: {'wrk -t2' if rest.loader() == 'wrk' else 'a Python load generator (no wrk)'} "
        f"-c{args.connections}, {args.rounds} alternating rounds of {args.rest_seconds:g} s per "
        f"target (the median round shown), {args.rest_users} users round-robin; `tiris serve` 2 workers vs the "
        "ceiling (tools/bench/ceiling_app.py: bare Flask, gunicorn 2 sync workers, same db/ calls and JWT check).",
        f"- Events: {args.fills} fills for {args.event_users} users published unpaced, to one `tiris consume` and then "
        f"to two ({args.partitions} partitions shared; {args.batch} per batch); latency at half the measured rate. "
        "The Python ceiling (the median of three runs) writes the same rows (claim, trading log, two legs, two "
        "balance updates) by batched inserts from one Python process; the database's own limit books them with one "
        "SQL statement per "
        f"{ev['database']['per_transaction']} fills, the arithmetic in SQL, from {ev['database']['clients']} "
        "connections (tools/bench/events.py).",
        f"- Live feed: `tiris serve --workers 1` with FEED_ENABLED=1, {args.streams} SSE streams "
        f"({stream_bench.PER_USER} per user) from plain asyncio sockets; deposits booked one per transaction by "
        f"{stream_bench.BOOKERS} threads of another process for {args.stream_seconds:g} s; latency from each commit's "
        "return to each of its user's streams receiving it.", "",
        "| Figure | Ours | Ceiling | Ratio | Goal | Met |", "|---|---|---|---|---|---|",
    ]
    for operation in rest.OPERATIONS:
        ours, top = rest_figures[operation]["ours"], rest_figures[operation]["ceiling"]
        ratio = ours["rps"] / top["rps"]
        errors = ours["non_2xx"] + ours["socket_errors"] + top["non_2xx"] + top["socket_errors"]
        lines.append(f"| {operation} req/s (p50 / p99 ms) | {ours['rps']:.0f} ({ours['p50_ms']:.1f} / "
                     f"{ours['p99_ms']:.1f}) | {top['rps']:.0f} ({top['p50_ms']:.1f} / {top['p99_ms']:.1f}) | "
                     f"{ratio:.2f} | ≥ {GOALS['rest_ratio']} | {_met(ratio >= GOALS['rest_ratio'])}"
                     + (f" ({errors} failed)" if errors else "") + " |")
    top, limit = ev["ceiling"]["fills_per_s"], ev["database"]["fills_per_s"]
    rates = {count: run["throughput"]["fills_per_s"] for count, run in ev["runs"].items()}
    lines += [
        f"| Fills/s, publish → commit, one `tiris consume` | {rates[1]:.0f} | {top:.0f} (Python) | "
        f"{rates[1] / top:.2f} | ≥ {GOALS['events_ratio']} | {_met(rates[1] / top >= GOALS['events_ratio'])} |",
        f"| Fills/s, publish → commit, two `tiris consume` | {rates[2]:.0f} | {top:.0f} (Python) | "
        f"{rates[2] / top:.2f} | more than one | {_met(rates[2] > rates[1])} |",
        f"| Fills/s beside the database's own limit (one / two processes) | {rates[1]:.0f} / {rates[2]:.0f} | "
        f"{limit:.0f} (SQL) | {rates[1] / limit:.2f} / {rates[2] / limit:.2f} | {GOALS['fills_per_s']:,} fills/s | "
        f"{_met(max(rates.values()) >= GOALS['fills_per_s'])} |",
    ]
    for count, run in ev["runs"].items():
        lat = run["latency"]
        lines.append(f"| Publish → commit latency at {lat['rate']:.0f}/s ({'one process' if count == 1 else 'two'}),"
                     f" p50 / p99 ms | {lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} | | | p99 < {GOALS['p99_ms']} | "
                     f"{_met(lat['p99_ms'] < GOALS['p99_ms'])} |")
    consumer_rss = max(run["rss_mb"] for run in ev["runs"].values())
    lines += [
        f"| Peak RSS, API worker (MB) | {rest_figures['rss_mb']:.0f} | | | < {GOALS['rss_mb']} | "
        f"{_met(rest_figures['rss_mb'] < GOALS['rss_mb'])} |",
        f"| Peak RSS, consumer (MB) | {consumer_rss:.0f} | | | < {GOALS['rss_mb']} | "
        f"{_met(consumer_rss < GOALS['rss_mb'])} |",
    ]
    st = figures["stream"]
    lines += [
        f"| Live feed: SSE streams held by one API worker (RSS idle → held, MB) | {st['streams']} "
        f"({st['idle_rss_mb']:.0f} → {st['held_rss_mb']:.0f}) | | | {args.streams} | {_met(st['refused'] == 0)} |",
        f"| Live feed: commit → client at {st['bookings'] / st['seconds']:.0f} bookings/s (paced at "
        f"{st['rate']:.0f}), p50 / p99 ms | {st['p50_ms']:.0f} / "
        f"{st['p99_ms']:.0f} ({st['deliveries']} of {st['expected_deliveries']} delivered) | | | every one | "
        f"{_met(st['deliveries'] == st['expected_deliveries'])} |",
        f"| Live feed: the API worker's CPU per booking, ms (its streams' reads, sends and heartbeats) | "
        f"{st['worker_cpu_ms_per_booking']:.2f} | | | | |",
        "", f"Publisher rate while unpaced: {ev['runs'][1]['throughput']['publish_per_s']:.0f} events/s. "
        f"Ledger consistent afterwards (balance = credits − debits on every sub-account): "
        f"{'yes' if figures['ledger_consistent'] else 'NO'}.",
    ]
    if args.note and Path(args.note).exists():
        lines += ["", Path(args.note).read_text().strip()]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                               "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--rest-seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rest-users", type=int, default=16)
    parser.add_argument("--history", type=int, default=110, help="transactions per REST user (a full page)")
    parser.add_argument("--fills", type=int, default=15000)
    parser.add_argument("--event-users", type=int, default=200)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--consumers", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2],
                        help="`tiris consume` process counts to measure, comma-separated (the report needs 1,2)")
    parser.add_argument("--batch", type=int, default=500, help="the ceiling's batch (the consumer's default)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the events to commit")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--note", default=str(ROOT / "tools" / "bench" / "NOTE.md"),
                        help="a hand-written analysis appended to the section (where the time goes)")
    parser.add_argument("--skip-rest", action="store_true")
    parser.add_argument("--streams", type=int, default=1000, help="SSE streams on one API worker")
    parser.add_argument("--stream-rate", type=float, default=500, help="bookings/s while the streams are open")
    parser.add_argument("--stream-seconds", type=float, default=10)
    args = parser.parse_args(argv)
    if not args.skip_rest and not {1, 2} <= set(args.consumers):
        parser.error("the report compares one consumer process with two: --consumers must name 1 and 2")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    env = {**os.environ, "JWT_SECRET": secrets.token_urlsafe(48),
           "ENCRYPTION_KEYS": "bench:" + base64.b64encode(secrets.token_bytes(32)).decode(),
           "API_KEY_HASH_KEY": base64.b64encode(secrets.token_bytes(32)).decode(), "LOG_LEVEL": "WARNING",
           # The limiter still runs on every request (its cost is part of the figure), with allowances no load
           # here reaches: a 429 would measure the limit, not the service.
           **{f"RATE_LIMIT_{kind}": "1000000/s" for kind in ("API", "TRADING", "AUTH")}}
    with Database(args.server_url) as database, tempfile.TemporaryDirectory(prefix="tiris-bench-") as tmp:
        env["DATABASE_URL"] = database.url
        os.environ.update({k: env[k] for k in ("JWT_SECRET", "ENCRYPTION_KEYS", "API_KEY_HASH_KEY", "DATABASE_URL")})
        from db import crypto, engine
        from tiris import config

        settings = config.use(config.load())
        args.partitions = settings.consumer_partitions
        engine.configure(settings)
        crypto.configure(settings)  # the seeded users' exchanges have sealed credentials
        figures = {}
        if not args.skip_rest:
            figures["rest"] = bench_rest(args, env, Path(tmp))
        figures["events"] = bench_events(args, env, database, Path(tmp))
        figures["stream"] = bench_stream(args, env, Path(tmp))
        figures["ledger_consistent"] = ledger_consistent(database.conninfo)
        engine.engine().dispose()
    if not args.skip_rest:
        report.write(args.output, render(args, "make bench", started, figures))
    print(figures)
    return figures


if __name__ == "__main__":
    main()
