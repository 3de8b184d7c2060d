"""A per-process cache of what is read on every request and changes rarely, invalidated across processes.

Today it holds the authentication lookup (a user's role and status). A write that changes a cached row announces
it inside its transaction (db/notices.py): this process hears it at once and drops the entry, and the PostgreSQL
NOTIFY, which PostgreSQL delivers at commit (and only if the transaction commits), reaches a listener thread in
every process using the cache (all gunicorn workers of all replicas), which drops the entry.

Guarantees, and their limits:
- An entry is served only while this process's listener is connected and listening; when its connection drops
  the cache is emptied and bypassed (every lookup reads the database) until it listens again, because
  notifications sent meanwhile are lost.
- A lookup that raced with an invalidation (read the old row, finished after the notification) is not stored:
  every invalidation bumps a generation number that a store checks.
- The remaining window is the notification's own delay: another worker stops serving the old entry when its
  listener thread has read the notification, normally well under a millisecond after the commit on one host.
- CACHE_TTL bounds an entry's life regardless.
"""

import logging
import threading
import time
from typing import Callable

import psycopg

from db import notices
from db.urls import psycopg_kwargs
from tiris import metrics

log = logging.getLogger("tiris.cache")
CHANNEL = notices.CHANNEL
_MISSING = object()


class Cache:
    def __init__(self, name: str, ttl: float):
        self.name, self.ttl = name, ttl
        self.entries: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()
        self.generation = 0

    def get(self, key: str, load: Callable[[], object]):
        if not _listener.listening.is_set():
            return load()
        now = time.monotonic()
        with self.lock:
            expires, value = self.entries.get(key, (0.0, _MISSING))
            generation = self.generation
        if value is not _MISSING and expires > now:
            metrics.CACHE_LOOKUPS.labels(self.name, "hit").inc()
            return value
        metrics.CACHE_LOOKUPS.labels(self.name, "miss").inc()
        value = load()
        with self.lock:
            if self.generation == generation and _listener.listening.is_set():
                self.entries[key] = (now + self.ttl, value)
        return value

    def invalidate(self, key: str | None = None) -> None:
        """Drops `key` and the keys under it (`key:...`, e.g. a user's entries per token session); None: all."""
        with self.lock:
            self.generation += 1
            if key is None:
                self.entries.clear()
            else:
                for stale in [k for k in self.entries if k == key or k.startswith(key + ":")]:
                    del self.entries[stale]


caches: dict[str, Cache] = {}


def get(name: str, key: str, load: Callable[[], object]):
    """The cached value, or load()'s; a process that did not configure caching (a command) just loads."""
    return caches[name].get(key, load) if name in caches else load()


def _invalidate(name: str, key: str) -> None:
    """A notice from db/ (its topic names the cache of the same name): from this process's write, or a listener's."""
    if name in caches:
        caches[name].invalidate(key)


notices.subscribe(_invalidate)  # this process's own writes: dropped at once, not when the notification comes back


class _Listener:
    def __init__(self):
        self.listening = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, database_url: str) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(database_url, self.stop), name="cache-listener",
                                       daemon=True)
        self.thread.start()

    def _run(self, database_url: str, stop: threading.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                with psycopg.connect(**psycopg_kwargs(database_url, autocommit=True, connect_timeout=5,
                                                      application_name="tiris-cache-listener")) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    while not stop.is_set():
                        for notification in conn.notifies(timeout=1.0):
                            _invalidate(*notices.parse(notification.payload))
            except psycopg.Error as error:
                if not stop.is_set():
                    log.warning("cache invalidation listener lost (%s); caching is off until it is back",
                                type(error).__name__)
            finally:
                self.listening.clear()
                for each in caches.values():
                    each.invalidate()
            stop.wait(delay)
            delay = min(delay * 2, 10)


_listener = _Listener()


def stop() -> None:
    """Ends the listener (within a second) and turns caching off; `configure` starts it again."""
    _listener.stop.set()
    _listener.listening.clear()


def configure(database_url: str, ttl: float) -> None:
    """Starts this process's listener (in each worker, after the fork) on the service's database."""
    for name in (notices.USERS,):
        caches[name] = Cache(name, ttl)
    _listener.listening.clear()
    _listener.start(database_url)
