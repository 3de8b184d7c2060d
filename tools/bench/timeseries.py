"""Time-series latency at 10^5, 10^6 and 10^7 transactions on plain PostgreSQL (`make bench-timeseries`).

Fills one database per size with `tiris seed-data` (same density per sub-account, more users), then times, through
the same db/ functions the handlers call, on warm connections, in rounds that go round the sizes:
- a 100-row page of GET /v1/transactions as a user (their newest rows) and as an admin (everyone's newest rows),
- a 30-day daily balance history of a sub-account.
Each figure is the median and p95 of RUNS calls spread over SAMPLE randomly chosen users / sub-accounts, after one
untimed pass over the sample (warm cache: the steady state of a server, not a cold start). The results
replace the section between the timeseries markers of BENCHMARKS.md; the rest of the file is kept.
"""

import argparse
import datetime as dt
import os
import platform
import statistics
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

from db import balance_history, migrate, transactions
from db.access import Caller
from db.urls import psycopg_kwargs
from tools import seed_data

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- timeseries:begin -->", "<!-- timeseries:end -->"
SERVER = os.environ.get("BENCH_DATABASE_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")


def _stats(times: list[float]) -> dict:
    times = sorted(times)
    return {"median": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def calls(conn: sa.Connection, sample: int) -> dict:
    """The three timed calls against one database, each taking the run number to pick its user or sub-account."""
    picks = conn.execute(sa.text("SELECT id, user_id FROM sub_accounts ORDER BY random() LIMIT :n"),
                         {"n": sample}).all()
    admin = Caller(uuid.uuid4(), "admin")
    now = conn.execute(sa.select(sa.func.now())).scalar()
    start, end = (now - dt.timedelta(days=30)).isoformat(), now.isoformat()

    def user_page(i):
        rows, _ = transactions.list_page(conn, Caller(picks[i % len(picks)].user_id, "user"), limit=100, cursor=None)
        assert len(rows) == 100

    def admin_page(i):
        rows, _ = transactions.list_page(conn, admin, limit=100, cursor=None)
        assert len(rows) == 100

    def history(i):
        body = balance_history.history(conn, admin, picks[i % len(picks)].id, "1d", start, end)
        assert len(body["items"]) in (30, 31)

    for call in (user_page, admin_page, history):  # warm the connection, the plans and the sample's pages
        for i in range(len(picks)):
            call(i)
    return {"user_page": user_page, "admin_page": admin_page, "history": history}


def measure(engines: dict[int, sa.Engine], runs: int, sample: int, rounds: int = 10) -> dict[int, dict]:
    """Rounds that visit every size in turn, so that a busy moment of the machine falls on all sizes alike."""
    times = {size: {"user_page": [], "admin_page": [], "history": []} for size in engines}
    conns = {size: engine.connect() for size, engine in engines.items()}
    try:
        prepared = {size: calls(conn, sample) for size, conn in conns.items()}
        for r in range(rounds):
            for size, kinds in prepared.items():
                for kind, call in kinds.items():
                    for i in range(r * runs // rounds, (r + 1) * runs // rounds):
                        began = time.perf_counter()
                        call(i)
                        times[size][kind].append((time.perf_counter() - began) * 1000)
    finally:
        for conn in conns.values():
            conn.close()
    return {size: {kind: _stats(values) for kind, values in kinds.items()} for size, kinds in times.items()}


def write_section(text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replaces only what lies between the markers (appends the section when they are absent)."""
    section = f"{BEGIN}\n{text.rstrip()}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + section + "\n"
    path.write_text(new)


def report(results: list[tuple[int, float, dict]], runs: int, sample: int, server_version: str) -> str:
    lines = [
        "## Time series: transaction pages and balance history by table size (plain PostgreSQL)",
        "",
        f"`make bench-timeseries` on {platform.node() or 'this machine'} ({os.cpu_count()} cores), PostgreSQL "
        f"{server_version}, {dt.date.today().isoformat()}. Data from `tiris seed-data`: 1,000 transactions per "
        "sub-account over 365 days, 10 sub-accounts per user, so more rows means more users. Milliseconds, median / "
        f"p95 of {runs} calls over {sample} random users or sub-accounts (after one untimed pass over them), through the "
        "db/ functions the handlers call, on a machine shared with other work. Each size is its own database; "
        "`load` is the seconds `tiris seed-data` took to fill it (COPY, with all indexes in place). The timed calls "
        "go round the sizes in 10 rounds, so a busy moment of the machine falls on every size alike.",
        "",
        "| transactions | load (s) | 100-row page, user | 100-row page, admin (all users) | 30-day daily history |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size, seconds, r in results:
        cells = [f"{r[k]['median']:.2f} / {r[k]['p95']:.2f}" for k in ("user_page", "admin_page", "history")]
        load = f"{seconds:.0f}" if seconds is not None else "(reused)"
        lines.append(f"| {size:,} | {load} | " + " | ".join(cells) + " |")
    first, last = results[0][2], results[-1][2]
    lines += ["", "Ratio of the largest to the smallest size (medians; the goal is at most 2): " + ", ".join(
        f"{name} {last[key]['median'] / first[key]['median']:.2f}"
        for key, name in (("user_page", "user page"), ("admin_page", "admin page"), ("history", "history")))]
    return "\n".join(lines)


def _load(admin: dict, name: str, size: int, reuse: bool) -> float | None:
    """A migrated database of `size` seeded transactions; the seconds its load took (None when reused)."""
    url = f"{SERVER}/{name}"
    if reuse:
        try:
            with psycopg.connect(**psycopg_kwargs(url)) as conn:
                if conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == size:
                    return None
        except psycopg.OperationalError:
            pass
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url)
    began = time.monotonic()
    seed_data.load(url, size, seed=size)
    seconds = time.monotonic() - began
    with psycopg.connect(**psycopg_kwargs(url, autocommit=True)) as conn:
        conn.execute("VACUUM ANALYZE transactions, sub_accounts")
        conn.execute("CHECKPOINT")  # the load's dirty pages written now, not while timing
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "100000,1000000,10000000"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sample", type=int, default=50)
    parser.add_argument("--database", default="tiris_bench_timeseries", help="prefix of the databases, one per size")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database that has the size's rows")
    args = parser.parse_args()

    admin = psycopg_kwargs(f"{SERVER}/postgres", autocommit=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = {size: f"{args.database}_{size}" for size in sizes}
    with psycopg.connect(**admin) as conn:
        server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    loads = {size: _load(admin, names[size], size, args.reuse) for size in sizes}
    engines = {size: sa.create_engine(f"{SERVER}/{names[size]}", connect_args={"options": "-c timezone=UTC"})
               for size in sizes}
    try:
        measured = measure(engines, args.runs, args.sample)
    finally:
        for engine in engines.values():
            engine.dispose()
        if not args.keep:
            with psycopg.connect(**admin) as conn:
                for name in names.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    text = report([(size, loads[size], measured[size]) for size in sizes], args.runs, args.sample, server_version)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
