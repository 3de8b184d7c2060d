"""`tiris`: the service's command line (dev, serve, migrate, consume, deliver, token, user, rotate-keys,
simulate-bot, seed-data)."""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from tools import seed_data, simulate_bot

ROOT = Path(__file__).resolve().parent.parent


def cmd_migrate(args) -> None:
    from db import migrate
    from tiris import config

    migrate.upgrade(config.database_url_from(os.environ))


def _metrics_dir() -> str:
    """The workers' shared metrics files: PROMETHEUS_MULTIPROC_DIR or a fresh directory, emptied before start."""
    import tempfile

    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="tiris-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's counters would otherwise be added to ours
        stale.unlink()
    return str(path)


def _gunicorn(settings, workers: int) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir()
    os.execv(sys.executable, [
        sys.executable, "-m", "gunicorn", "tiris.app:create_app()", "--worker-class", "tiris.server.Worker",
        "--workers", str(workers), "--bind", f"{settings.host}:{settings.port}",
        # SIGTERM: stop accepting, give requests in flight up to 30 s to finish, then exit.
        "--graceful-timeout", "30", "--timeout", "60", "--config", "python:tiris.gunicorn_conf",
        "--chdir", str(ROOT),
        "--forwarded-allow-ips", settings.forwarded_allow_ips,
        "--no-control-socket",  # one shared socket path would make two servers on a host collide
    ])


LOCAL_LOGIN = "TIRIS_LOCAL_LOGIN"  # tiris dev: 1 (default) runs the loopback login provider, 0 does not


def cmd_serve(args) -> None:
    from tiris import config

    if os.environ.get(LOCAL_LOGIN, "0") not in ("", "0"):
        sys.exit(f"tiris serve never runs the local login provider ({LOCAL_LOGIN} is for tiris dev only)")
    settings = config.load()
    _gunicorn(settings, args.workers or settings.workers)


def _local_login(settings_port: int, host: str):
    """The loopback OpenID Connect provider, with Google and WeChat login configured against it (in os.environ)
    unless the environment already names a Google client."""
    from tools.oauth_provider import LoopbackProvider

    if os.environ.get(LOCAL_LOGIN, "1") == "0" or os.environ.get("GOOGLE_CLIENT_ID"):
        return None
    port = int(os.environ.get("LOCAL_LOGIN_PORT") or settings_port + 1)
    try:
        provider = LoopbackProvider(port=port, interactive=True, service_url=f"http://{host}:{settings_port}")
    except OSError:  # taken: any free port will do, the service is told which
        provider = LoopbackProvider(port=0, interactive=True, service_url=f"http://{host}:{settings_port}")
    env = provider.env()
    redirect_uris = env.pop("OAUTH_REDIRECT_URIS")
    if os.environ.get("OAUTH_REDIRECT_URIS"):  # the developer's list, plus the provider's own home-page sign-in
        redirect_uris = os.environ["OAUTH_REDIRECT_URIS"] + f",{provider.url}/callback"
    os.environ["OAUTH_REDIRECT_URIS"] = redirect_uris
    for key, value in env.items():
        os.environ.setdefault(key, value)
    return provider


def _wait_ready(url: str, serve, seconds: float = 120) -> bool:
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and serve.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health/live", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _announce(settings, provider, database: str) -> None:
    tiris = Path(sys.executable).parent / "tiris"
    try:
        tiris = tiris.relative_to(Path.cwd())
    except ValueError:
        pass
    base = f"http://{settings.host}:{settings.port}"
    lines = [
        "Tiris is running (Ctrl-C stops it)",
        f"  API        {base}/v1",
        f"  API docs   {base}/v1/ui",
        f"  a token    {tiris} token --email you@example.com [--admin]"
        f"   (lasts {settings.access_token_ttl // 60} min; ACCESS_TOKEN_TTL)",
    ]
    if provider:
        lines.append(f"  log in     {provider.url}/   (local Google and WeChat login: any e-mail, no credentials)")
    lines.append(f"  data       {database}; events in {Path('.tiris', 'nats').resolve()}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def cmd_dev(args) -> None:
    """Local development: local defaults; PostgreSQL and NATS started if needed (embedded ones from wheels where
    the machine has none); migrations; the local login; API and consumer."""
    import signal
    import subprocess
    import time

    from db import migrate
    from db.urls import psycopg_kwargs
    from tiris import config
    from tools import embeddedpg, localnats, localpg

    def stop_on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)  # the finally below stops what dev started, on TERM as on Ctrl-C
    config.apply_dev_defaults()  # in os.environ, so the workers and the consumer see the same secrets
    # A portal served by its own dev server calls from another origin; outside `tiris dev` CORS_ORIGINS decides.
    os.environ.setdefault("CORS_ORIGINS", ",".join(config.DEV_CORS_ORIGINS))
    settings = config.load()
    provider = _local_login(settings.port, settings.host)
    settings = config.load()  # with the local login's settings
    data_dir = Path(".tiris") / "pg"
    server = psycopg_kwargs(settings.database_url)
    started = []
    try:
        embedded = localpg.ensure_database(settings.database_url, embedded_dir=data_dir)
        if embedded:
            started.append(embedded)
            print(f"tiris dev: nothing answered at {server['host']}:{server['port']}: started an embedded "
                  f"PostgreSQL {embedded.version} there, data in {data_dir.resolve()}", file=sys.stderr)
        database = (f"PostgreSQL {server['host']}:{server['port']}/{server['dbname']}"
                    + (f" (embedded, in {data_dir.resolve()})" if embedded else ""))
        migrate.upgrade(settings.database_url)
        started.append(localnats.ensure(settings.nats_url, Path(".tiris") / "nats"))
        started.append(subprocess.Popen([sys.executable, "-m", "tools.cli", "consume"], cwd=ROOT))
        started.append(subprocess.Popen([sys.executable, "-m", "tools.cli", "deliver"], cwd=ROOT))
        serve_env = {k: v for k, v in os.environ.items() if k != LOCAL_LOGIN}
        serve = subprocess.Popen([sys.executable, "-m", "tools.cli", "serve", "--workers", str(args.workers or 1)],
                                 cwd=ROOT, env=serve_env)
        started.append(serve)
        if _wait_ready(f"http://{settings.host}:{settings.port}", serve):
            time.sleep(0.3)  # the probe's own log line first: the block is the last thing on screen
            _announce(settings, provider, database)
        serve.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed([c for c in started if c is not None]):
            if isinstance(child, embeddedpg.EmbeddedServer):
                child.stop()
                continue
            if child.poll() is None:
                child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if provider:
            provider.stop()


def cmd_consume(args) -> None:
    # The consumer exposes its own registry on CONSUMER_METRICS_PORT, never the API workers' files.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from consumers import runner
    from db import engine, feed
    from tiris import config, logs, metrics

    settings = config.use(config.load())
    logs.setup(settings.log_level)
    metrics.watch_pool(engine.configure(settings, custom_plans=True), settings.db_pool_size)
    feed.configure(settings.feed_enabled)
    if settings.consumer_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.consumer_metrics_port, addr=settings.host)
    runner.run(settings.nats_url, settings.database_url, args.batch or settings.consumer_batch,
               settings.consumer_partitions, settings.nats_stream_replicas,
               dt.timedelta(hours=settings.feed_retention_hours))


def cmd_deliver(args) -> None:
    from consumers import deliver
    from db import crypto, engine
    from tiris import config, logs

    settings = config.use(config.load())
    logs.setup(settings.log_level)
    engine.configure(settings)
    crypto.configure(settings)  # the webhooks' signing secrets are sealed
    deliver.run(deliver.Options.from_settings(settings))


def cmd_token(args) -> None:
    """Prints only a token on stdout, so `$(tiris token --email ...)` works."""
    from db import engine, users
    from tiris import auth, config

    config.apply_dev_defaults()
    engine.configure(config.use(config.load()))
    with engine.transaction() as conn:
        user = users.ensure(conn, args.email, role="admin" if args.admin else "user")
    print(auth.mint(user["id"], ttl=args.ttl))


def _dev_secrets_if_here(config) -> None:
    """Where `tiris dev` keeps its secrets (.tiris/dev-secrets.json), a command uses them for whatever the
    environment leaves unset, as `tiris token` does; elsewhere the environment alone counts."""
    if config.DEV_SECRETS.exists():
        config.apply_dev_defaults()


def cmd_user(args) -> None:
    """grant-admin / revoke-admin (the only way to change a role) and enable / disable, in the audit trail.

    Like `tiris token`, it works with the local defaults where nothing is configured (only the database is used)."""
    from db import audit, engine, sessions, users
    from tiris import config
    from db.errors import DomainError

    config.apply_dev_defaults()
    engine.configure(config.use(config.load()))
    via = {"via": "tiris user " + args.action}
    try:
        with engine.transaction() as conn:
            if args.action in ("grant-admin", "revoke-admin"):
                role = "admin" if args.action == "grant-admin" else "user"
                user, before = users.set_role(conn, args.email, role)
                if before != role:
                    audit.record(conn, "user.role_changed", user_id=user["id"], info={"from": before, "to": role, **via})
                outcome = f"{'now' if before != role else 'already'} {role}"
            elif args.action == "disable":
                user = users.disable(conn, users.id_by_email(conn, args.email))
                sessions.revoke_all(conn, user["id"], "user disabled")
                audit.record(conn, "user.disabled", user_id=user["id"], info=via)
                outcome = "disabled"
            else:
                user = users.set_status(conn, users.id_by_email(conn, args.email), "active")
                audit.record(conn, "user.enabled", user_id=user["id"], info=via)
                outcome = "active"
    except DomainError as error:
        sys.exit(error.message)
    print(f"{user['email']} is {outcome}", file=sys.stderr)


def cmd_rotate_keys(args) -> None:
    from db import crypto, engine, exchanges, webhooks
    from tiris import config

    _dev_secrets_if_here(config)
    settings = config.use(config.load())
    engine.configure(settings)
    crypto.configure(settings)
    with engine.transaction() as conn:
        count = exchanges.rotate_keys(conn, settings.active_key_id)
        secrets = webhooks.rotate_keys(conn, settings.active_key_id)
    print(f"re-sealed {count} exchange(s) and {secrets} webhook secret(s) under key {settings.active_key_id}",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tiris", description="Tiris Backend")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="migrate, then serve with local defaults: PostgreSQL (embedded if the machine has "
                         "none), JetStream, the consumer and a local login")
    dev.add_argument("--workers", type=int)
    dev.set_defaults(func=cmd_dev)
    serve = sub.add_parser("serve", help="serve the API with gunicorn and uvicorn workers")
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)
    consume = sub.add_parser("consume", help="apply the bot's JetStream events to the ledger")
    consume.add_argument("--batch", type=int, help="events per database transaction (default CONSUMER_BATCH)")
    consume.set_defaults(func=cmd_consume)
    sub.add_parser("deliver", help="send the users' webhook deliveries (signed, retried with backoff)"
                   ).set_defaults(func=cmd_deliver)
    token = sub.add_parser("token", help="mint an access token for a user (created if missing); local use")
    token.add_argument("--email", required=True)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default ACCESS_TOKEN_TTL)")
    token.set_defaults(func=cmd_token)
    user = sub.add_parser("user", help="change a user's role or status (recorded in the audit trail)")
    user.add_argument("action", choices=["grant-admin", "revoke-admin", "enable", "disable"])
    user.add_argument("email")
    user.set_defaults(func=cmd_user)
    simulate_bot.add_parser(sub)
    seed_data.add_parser(sub)
    sub.add_parser("rotate-keys", help="re-seal exchange credentials and webhook secrets under the active key"
                   ).set_defaults(func=cmd_rotate_keys)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
