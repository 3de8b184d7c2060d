"""Configuration from environment variables, validated at start-up with one clear message per problem."""

import base64
import ipaddress
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from db import webhook_targets

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tiris"
# `tiris dev` and `tiris token` share secrets through this file so a minted token works against the dev server.
DEV_SECRETS = Path(".tiris") / "dev-secrets.json"
# The origins of the usual frontend dev servers (Next.js/CRA on 3000, Vite on 5173), allowed by `tiris dev` only.
DEV_CORS_ORIGINS = tuple(f"http://{host}:{port}" for port in (3000, 5173) for host in ("localhost", "127.0.0.1"))


class ConfigError(SystemExit):
    def __init__(self, problems: list[str]):
        super().__init__("configuration is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class GoogleLogin:
    """OpenID Connect with Google; the endpoints are settings so that tests can point them at a loopback provider."""
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    jwks_url: str
    issuer: str


@dataclass(frozen=True)
class WeChatApp:
    app_id: str
    app_secret: str


@dataclass(frozen=True)
class WeChatLogin:
    """WeChat has two apps: a website app (QR login, snsapi_login) and an official account (login inside WeChat,
    snsapi_userinfo). Either may be absent; unionid ties one person's logins through both together."""
    web: WeChatApp | None
    in_app: WeChatApp | None
    open_url: str
    api_url: str


@dataclass(frozen=True)
class Settings:
    database_url: str
    jwt_secret: str
    jwt_issuer: str
    access_token_ttl: int
    refresh_token_ttl: int
    oauth_state_ttl: int
    oauth_redirect_uris: frozenset[str]
    oauth_timeout: float
    google: GoogleLogin | None
    wechat: WeChatLogin | None
    encryption_keys: dict[str, bytes]  # key id -> 32-byte AES key; the first is the active one
    active_key_id: str
    api_key_hash_key: bytes
    db_pool_size: int
    db_max_overflow: int
    db_pool_timeout: float
    db_pool_recycle: int
    db_statement_timeout_ms: int
    host: str
    port: int
    workers: int
    log_level: str
    nats_url: str
    consumer_batch: int
    consumer_partitions: int
    consumer_stall_after: int
    nats_stream_replicas: int
    redis_url: str
    rate_limit_api: tuple[int, int]  # (requests, per seconds)
    rate_limit_trading: tuple[int, int]
    rate_limit_auth: tuple[int, int]
    cors_origins: tuple[str, ...]
    request_timeout: int
    consumer_metrics_port: int
    cache_ttl: int
    max_body_bytes: int
    forwarded_allow_ips: str  # proxies whose X-Forwarded-For/-Proto are believed; empty: none
    # The live feed (GET /v1/stream, its WebSocket, webhooks).
    feed_enabled: bool = False
    feed_retention_hours: int = 72
    stream_max_per_user: int = 5
    stream_max_per_worker: int = 1000
    stream_heartbeat: int = 15  # seconds between comment lines on an idle stream
    stream_max_lag: int = 10000  # events a client may fall behind before it is told to reconnect
    stream_ticket_ttl: int = 60
    # A streaming replica for list, history and analytics reads (db/replica.py); empty: every read on the primary.
    database_replica_url: str = ""
    replica_max_lag_seconds: int = 5
    # Webhooks (`tiris deliver`); db/webhook_targets.py says what WEBHOOK_ALLOWED_HOSTS entries mean.
    webhook_allowed_hosts: tuple[str, ...] = ("*",)
    webhook_max_per_user: int = 20
    webhook_timeout_ms: int = 10000  # one attempt, connection to answer
    webhook_retry_base_ms: int = 30000  # the first retry's delay; each next one doubles
    webhook_retry_cap_seconds: int = 3600  # the longest delay between two attempts
    webhook_retry_for_seconds: int = 86400  # after this long since the event, a failing delivery is given up
    webhook_concurrency: int = 16  # deliveries in flight per `tiris deliver` process
    webhook_poll_ms: int = 1000  # how often an idle deliverer looks for new events and due retries
    webhook_log_retention_hours: int = 168


def _dev_secrets() -> dict[str, str]:
    if DEV_SECRETS.exists():
        return json.loads(DEV_SECRETS.read_text())
    values = {
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ENCRYPTION_KEYS": "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "API_KEY_HASH_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    DEV_SECRETS.parent.mkdir(exist_ok=True)
    DEV_SECRETS.write_text(json.dumps(values))
    DEV_SECRETS.chmod(0o600)
    return values


def database_url_from(env) -> str:
    """DATABASE_URL alone, for commands that need nothing else (`tiris migrate`)."""
    return _postgres_url("DATABASE_URL", env.get("DATABASE_URL", ""))


def _postgres_url(name: str, url: str) -> str:
    if not url:
        raise ConfigError([f"{name} is not set (e.g. postgresql+psycopg://user@host:5432/tiris)"])
    if not url.startswith(("postgresql+psycopg://", "postgresql://")):
        raise ConfigError([f"{name} must be a postgresql:// or postgresql+psycopg:// URL"])
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def apply_dev_defaults() -> None:
    """Local use only: a local database URL and generated secrets for whatever the environment leaves unset."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    for key, value in _dev_secrets().items():
        os.environ.setdefault(key, value)


def load(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    problems: list[str] = []

    def required(name: str, hint: str) -> str:
        value = env.get(name, "")
        if not value:
            problems.append(f"{name} is not set ({hint})")
        return value

    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = env.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not an integer")
            return default
        if not low <= value <= high:
            problems.append(f"{name}={value} is outside {low}..{high}")
        return value

    def rate(name: str, default: str) -> tuple[int, int]:
        """COUNT/PERIOD, PERIOD one of s, min, h: e.g. 100/min."""
        raw = env.get(name, default)
        count, _, period = raw.partition("/")
        seconds = {"s": 1, "min": 60, "h": 3600}.get(period)
        if not count.isdigit() or int(count) < 1 or seconds is None:
            problems.append(f"{name}={raw!r} must look like COUNT/s, COUNT/min or COUNT/h (e.g. 100/min)")
            return 1, 1
        return int(count), seconds

    def b64key(name: str, raw: str) -> bytes:
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            problems.append(f"{name} is not valid base64")
            return b""
        if len(key) != 32:
            problems.append(f"{name} must decode to 32 bytes, got {len(key)}")
        return key

    try:
        database_url = database_url_from(env)
    except ConfigError as error:
        problems.extend(error.problems)
        database_url = ""
    replica_url = env.get("DATABASE_REPLICA_URL", "")
    if replica_url:
        try:
            replica_url = _postgres_url("DATABASE_REPLICA_URL", replica_url)
        except ConfigError as error:
            problems.extend(error.problems)

    jwt_secret = required("JWT_SECRET", "the HMAC key that signs access tokens, at least 32 characters")
    if jwt_secret and len(jwt_secret) < 32:
        problems.append("JWT_SECRET must be at least 32 characters")

    keys: dict[str, bytes] = {}
    for item in filter(None, required("ENCRYPTION_KEYS", "KEY_ID:BASE64_32_BYTES[,...], the first one seals new data")
                       .split(",")):
        key_id, sep, raw = item.strip().partition(":")
        if not sep or not key_id:
            problems.append("ENCRYPTION_KEYS entries must look like KEY_ID:BASE64")
            continue
        keys[key_id] = b64key(f"ENCRYPTION_KEYS[{key_id}]", raw)
    hash_key_raw = required("API_KEY_HASH_KEY", "base64 of 32 random bytes, keys the api-key uniqueness hash")
    hash_key = b64key("API_KEY_HASH_KEY", hash_key_raw) if hash_key_raw else b""

    settings = Settings(
        database_url=database_url,
        jwt_secret=jwt_secret,
        jwt_issuer=env.get("JWT_ISSUER", "tiris-backend"),
        access_token_ttl=integer("ACCESS_TOKEN_TTL", 900, 60, 86400),
        refresh_token_ttl=integer("REFRESH_TOKEN_TTL", 30 * 86400, 300, 365 * 86400),
        oauth_state_ttl=integer("OAUTH_STATE_TTL", 600, 30, 3600),
        oauth_redirect_uris=frozenset(uri.strip() for uri in env.get("OAUTH_REDIRECT_URIS", "").split(",")
                                      if uri.strip()),
        oauth_timeout=integer("OAUTH_TIMEOUT", 10, 1, 60),
        google=_google(env, problems),
        wechat=_wechat(env, problems),
        encryption_keys=keys,
        active_key_id=next(iter(keys), ""),
        api_key_hash_key=hash_key,
        # Seed §7.2: a pool of 10-50 connections, 30 s to get one, idle ones recycled after 5 minutes.
        db_pool_size=integer("DB_POOL_SIZE", 10, 1, 200),
        db_max_overflow=integer("DB_MAX_OVERFLOW", 40, 0, 200),
        db_pool_timeout=integer("DB_POOL_TIMEOUT", 30, 1, 300),
        db_pool_recycle=integer("DB_POOL_RECYCLE", 300, 10, 86400),
        db_statement_timeout_ms=integer("DB_STATEMENT_TIMEOUT_MS", 15000, 100, 600000),
        host=env.get("HOST", "127.0.0.1"),
        port=integer("PORT", 8080, 1, 65535),
        workers=integer("WEB_CONCURRENCY", 2, 1, 64),
        log_level=env.get("LOG_LEVEL", "INFO").upper(),
        nats_url=env.get("NATS_URL", "nats://127.0.0.1:4222"),
        consumer_batch=integer("CONSUMER_BATCH", 500, 1, 10000),
        # Changing it moves users between partitions: stop every consumer first, then start them with the new value.
        consumer_partitions=integer("CONSUMER_PARTITIONS", 4, 1, 64),
        # A consumer with messages waiting whose acknowledgements have not moved for this long is reported stalled.
        consumer_stall_after=integer("CONSUMER_STALL_AFTER", 60, 1, 3600),
        # Copies of each stream in a JetStream cluster (at most 5); 3 survive the loss of any one server.
        nats_stream_replicas=integer("NATS_STREAM_REPLICAS", 1, 1, 5),
        redis_url=env.get("REDIS_URL", ""),
        # Seed §9: 1000 requests an hour per user, 100 trading operations a minute per user, 10 auth operations
        # a minute per client address.
        rate_limit_api=rate("RATE_LIMIT_API", "1000/h"),
        rate_limit_trading=rate("RATE_LIMIT_TRADING", "100/min"),
        rate_limit_auth=rate("RATE_LIMIT_AUTH", "10/min"),
        cors_origins=tuple(o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()),
        request_timeout=integer("REQUEST_TIMEOUT", 30, 1, 600),
        consumer_metrics_port=integer("CONSUMER_METRICS_PORT", 0, 0, 65535),
        cache_ttl=integer("CACHE_TTL", 60, 0, 3600),
        # Bodies carry commands and `info`; ledger rows are never deleted, so what is accepted stays forever.
        max_body_bytes=integer("MAX_BODY_BYTES", 1024 * 1024, 1024, 100 * 1024 * 1024),
        # Never "any loopback client" (the servers' default): a local process could then pick its own address for
        # the per-address auth limit and the audit trail.
        forwarded_allow_ips=env.get("FORWARDED_ALLOW_IPS", "").strip(),
        # Off by default: writing the feed costs every booking batch more than its transactions (measured:
        # 67-78 ms per 500 fills); it is turned on where the portal streams.
        feed_enabled=integer("FEED_ENABLED", 0, 0, 1) == 1,
        feed_retention_hours=integer("FEED_RETENTION_HOURS", 72, 1, 24 * 365),
        stream_max_per_user=integer("STREAM_MAX_PER_USER", 5, 1, 1000),
        stream_max_per_worker=integer("STREAM_MAX_PER_WORKER", 1000, 1, 100000),
        stream_heartbeat=integer("STREAM_HEARTBEAT_SECONDS", 15, 1, 300),
        stream_max_lag=integer("STREAM_MAX_LAG", 10000, 100, 10_000_000),
        stream_ticket_ttl=integer("STREAM_TICKET_TTL", 60, 5, 3600),
        database_replica_url=replica_url,
        # Beyond it a replica's reads go to the primary; 0: only a replica that has replayed all the primary wrote.
        replica_max_lag_seconds=integer("REPLICA_MAX_LAG_SECONDS", 5, 0, 86400),
        webhook_allowed_hosts=tuple(h.strip().lower() for h in env.get("WEBHOOK_ALLOWED_HOSTS", "*").split(",")
                                    if h.strip()),
        webhook_max_per_user=integer("WEBHOOK_MAX_PER_USER", 20, 1, 1000),
        webhook_timeout_ms=integer("WEBHOOK_TIMEOUT_MS", 10000, 50, 60000),
        webhook_retry_base_ms=integer("WEBHOOK_RETRY_BASE_MS", 30000, 10, 3600 * 1000),
        webhook_retry_cap_seconds=integer("WEBHOOK_RETRY_CAP_SECONDS", 3600, 1, 86400),
        webhook_retry_for_seconds=integer("WEBHOOK_RETRY_FOR_SECONDS", 86400, 1, 30 * 86400),
        webhook_concurrency=integer("WEBHOOK_CONCURRENCY", 16, 1, 1000),
        webhook_poll_ms=integer("WEBHOOK_POLL_MS", 1000, 10, 60000),
        webhook_log_retention_hours=integer("WEBHOOK_LOG_RETENTION_HOURS", 168, 1, 24 * 365),
    )
    if settings.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        problems.append(f"LOG_LEVEL={settings.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append("REDIS_URL must be a redis://, rediss:// or unix:// URL")
    for proxy in filter(None, (p.strip() for p in settings.forwarded_allow_ips.split(","))):
        try:
            ipaddress.ip_network(proxy)
        except ValueError:
            problems.append(f"FORWARDED_ALLOW_IPS: {proxy!r} is not an IP address or network (e.g. 10.0.0.0/8)")
    for entry in settings.webhook_allowed_hosts:
        if not webhook_targets.valid_entry(entry):
            problems.append(f"WEBHOOK_ALLOWED_HOSTS: {entry!r} is not a host name, an IP address, '*.domain' or '*'")
    if "*" in settings.cors_origins:
        problems.append("CORS_ORIGINS must list origins; '*' is not allowed with bearer tokens")
    if problems:
        raise ConfigError(problems)
    return settings


def _pair(env, id_name: str, secret_name: str, problems: list[str]) -> tuple[str, str] | None:
    """A client id and secret: both or neither."""
    client_id, secret = env.get(id_name, ""), env.get(secret_name, "")
    if bool(client_id) != bool(secret):
        problems.append(f"{id_name} and {secret_name} must be set together")
        return None
    return (client_id, secret) if client_id else None


def _google(env, problems: list[str]) -> GoogleLogin | None:
    pair = _pair(env, "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", problems)
    if pair is None:
        return None
    return GoogleLogin(
        *pair,
        authorize_url=env.get("GOOGLE_AUTHORIZE_URL", "https://accounts.google.com/o/oauth2/v2/auth"),
        token_url=env.get("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token"),
        jwks_url=env.get("GOOGLE_JWKS_URL", "https://www.googleapis.com/oauth2/v3/certs"),
        issuer=env.get("GOOGLE_ISSUER", "https://accounts.google.com"))


def _wechat(env, problems: list[str]) -> WeChatLogin | None:
    web = _pair(env, "WECHAT_APP_ID", "WECHAT_APP_SECRET", problems)
    in_app = _pair(env, "WECHAT_MP_APP_ID", "WECHAT_MP_APP_SECRET", problems)
    if web is None and in_app is None:
        return None
    return WeChatLogin(web=web and WeChatApp(*web), in_app=in_app and WeChatApp(*in_app),
                       open_url=env.get("WECHAT_OPEN_URL", "https://open.weixin.qq.com"),
                       api_url=env.get("WECHAT_API_URL", "https://api.weixin.qq.com"))


_current: Settings | None = None


def current() -> Settings:
    if _current is None:
        sys.exit("settings were not loaded")
    return _current


def use(settings: Settings) -> Settings:
    global _current
    _current = settings
    return settings
