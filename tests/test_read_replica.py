"""Reads from a streaming replica (DATABASE_REPLICA_URL, db/replica.py), against a real primary and hot standby.

What the replica served is shown by what only it can answer: with its replay paused it lacks a write the primary
has, so a list that lacks the write came from the replica and one that holds it came from the primary (each
test first checks on the standby itself that the write is missing there).
"""

import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from db import engine, replica, users
from tests.conftest import TEST_ENV, Api
from tests.helpers import create_exchange, create_sub_account
from tests.replication import Replication, replication
from tiris import auth, cache, config


@pytest.fixture(scope="module")
def cluster():
    with replication() as running:
        yield running


@pytest.fixture
def service(cluster, nats_server):
    """`service(max_lag)`: the API in process on the cluster's primary and standby, and a user and an admin."""
    def start(max_lag: int = 3600) -> "Service":
        settings = config.use(config.load({
            **TEST_ENV, "NATS_URL": nats_server, "DATABASE_URL": Replication.url(cluster.primary),
            "DATABASE_REPLICA_URL": Replication.url(cluster.standby), "REPLICA_MAX_LAG_SECONDS": str(max_lag)}))
        from tiris.app import create_app
        return Service(cluster, create_app(settings).test_client())

    yield start
    cluster.start_standby()
    cluster.resume()
    cache.stop()
    replica.close()
    engine.engine().dispose()


class Service:
    def __init__(self, cluster: Replication, client):
        self.cluster, self.client = cluster, client
        self.user, self.admin = self.api(), self.api(admin=True)
        self.exchange = create_exchange(self.user)
        self.wallet = create_sub_account(self.user, self.exchange["id"], "USDT", balance="100")
        cluster.caught_up()

    def api(self, *, admin: bool = False) -> Api:
        with engine.transaction() as conn:
            user = users.ensure(conn, f"{uuid.uuid4().hex[:10]}@example.com", role="admin" if admin else "user")
        return Api(self.client, auth.mint(user["id"]), user)

    def deposit_while_paused(self) -> str:
        """Pauses the standby's replay, deposits as the user, and returns the transaction's id, missing from the
        standby."""
        self.cluster.pause()
        status, body = self.user.post(f"/v1/sub-accounts/{self.wallet['id']}/deposit", json={"amount": "5"})
        assert status == 201, body
        assert self.cluster.standby_sql("SELECT count(*) FROM transactions WHERE id = %s", (body["id"],)) == (0,)
        return body["id"]

    def transaction_ids(self, api: Api, **query) -> set[str]:
        params = "&".join(f"{key}={value}" for key, value in query.items())
        status, body = api.get(f"/v1/transactions?{params}")
        assert status == 200, body
        return {item["id"] for item in body["items"]}

    def reads(self) -> dict[tuple[str, str], float]:
        """tiris_db_reads_total by (server, reason)."""
        text = self.client.get("/metrics").text
        family = next(f for f in text_string_to_metric_families(text) if f.name == "tiris_db_reads")
        return {(s.labels["server"], s.labels["reason"]): s.value for s in family.samples
                if s.name.endswith("_total")}


def _wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def test_a_caller_lists_its_own_write_while_the_replica_has_not_replayed_it(service):
    api = service()
    deposit = api.deposit_while_paused()

    assert deposit in api.transaction_ids(api.user, sub_account_id=api.wallet["id"])
    status, balances = api.user.get("/v1/balances")
    assert status == 200 and [b["balance"] for b in balances["items"]] == ["105.000000000000000000"]
    assert deposit in api.transaction_ids(api.user)  # and again: the replica still has not replayed it

    before = api.reads()
    api.cluster.resume()
    api.cluster.caught_up()
    assert deposit in api.transaction_ids(api.user)  # once replayed, the replica serves the caller again
    assert api.reads().get(("replica", "fresh"), 0) == before.get(("replica", "fresh"), 0) + 1


def test_other_callers_read_the_replica_within_the_lag_bound(service):
    api = service(max_lag=3600)
    deposit = api.deposit_while_paused()

    # The admin did not write: their list comes from the replica, which lacks the deposit.
    assert deposit not in api.transaction_ids(api.admin, user_id=api.user.user["id"])
    status, history = api.admin.get(f"/v1/balances?user_id={api.user.user['id']}")
    assert status == 200 and [b["balance"] for b in history["items"]] == ["100.000000000000000000"]

    api.cluster.resume()
    _wait_until(lambda: deposit in api.transaction_ids(api.admin, user_id=api.user.user["id"]),
                "the admin's list showing the replayed deposit")


def test_a_replica_lagging_beyond_the_bound_leaves_every_read_to_the_primary(service):
    api = service(max_lag=1)
    deposit = api.deposit_while_paused()

    # Replay stays paused, so the replica's lag grows past 1 s; from then on the admin's reads go to the primary.
    _wait_until(lambda: deposit in api.transaction_ids(api.admin, user_id=api.user.user["id"]),
                "the admin's list showing the deposit from the primary")
    assert api.cluster.standby_sql("SELECT count(*) FROM transactions WHERE id = %s", (deposit,)) == (0,)
    assert api.reads().get(("primary", "lag"), 0) >= 1

    ready = api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
    assert ready.json()["checks"]["replica"].startswith("lagging: "), ready.text


def test_reads_answer_from_the_primary_when_the_replica_is_down(service):
    api = service()
    status, body = api.user.post(f"/v1/sub-accounts/{api.wallet['id']}/deposit", json={"amount": "5"})
    assert status == 201, body
    api.cluster.caught_up()
    api.cluster.stop_standby()
    before = api.reads()

    assert body["id"] in api.transaction_ids(api.admin, user_id=api.user.user["id"])
    assert body["id"] in api.transaction_ids(api.user)
    status, summary = api.user.get("/v1/portfolio/summary?quote=USDT")
    assert status == 200, summary
    reads = api.reads()
    # The first read met the stopped replica; the next ones did not try it again at once.
    assert reads.get(("primary", "replica_failed"), 0) - before.get(("primary", "replica_failed"), 0) == 1
    assert reads.get(("primary", "replica_down"), 0) - before.get(("primary", "replica_down"), 0) == 2

    ready = api.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok" and ready.json()["checks"]["replica"] == "unreachable"


def test_every_replica_read_runs_on_the_hot_standby(service):
    """Each operation routed to the replica answers there (a statement a standby refuses would fall back)."""
    api = service()
    user_id, wallet = api.user.user["id"], api.wallet["id"]
    api.cluster.caught_up()
    mine = f"user_id={user_id}"
    paths = [f"/v1/transactions?{mine}", f"/v1/trading-logs?{mine}", f"/v1/orders?{mine}", f"/v1/balances?{mine}",
             f"/v1/balances?at=2030-01-01T00:00:00Z&{mine}", f"/v1/sub-accounts/{wallet}/balance",
             f"/v1/sub-accounts/{wallet}/balance-history?bucket=1d", f"/v1/portfolio/summary?quote=USDT&{mine}",
             f"/v1/portfolio/pnl?quote=USDT&{mine}", f"/v1/portfolio/performance?quote=USDT&{mine}"]
    before = api.reads()
    for path in paths:
        status, body = api.admin.get(path)
        assert status == 200, (path, body)
    status, body = api.user.get("/v1/users/me/stats")
    assert status == 200, body
    after = api.reads()
    assert after.get(("replica", "fresh"), 0) - before.get(("replica", "fresh"), 0) == len(paths) + 1
    assert {key for key in after if key[0] == "primary"} == {key for key in before if key[0] == "primary"}

    ready = api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["replica"] == "ok", ready.text


def test_the_replica_settings_are_checked_at_start_up():
    with pytest.raises(config.ConfigError) as refused:
        config.load({**TEST_ENV, "DATABASE_URL": "postgresql://h/db", "DATABASE_REPLICA_URL": "mysql://h/db",
                     "REPLICA_MAX_LAG_SECONDS": "-1"})
    assert refused.value.problems == [
        "DATABASE_REPLICA_URL must be a postgresql:// or postgresql+psycopg:// URL",
        "REPLICA_MAX_LAG_SECONDS=-1 is outside 0..86400"]
    settings = config.load({**TEST_ENV, "DATABASE_URL": "postgresql://h/db"})
    assert settings.database_replica_url == "" and settings.replica_max_lag_seconds == 5
