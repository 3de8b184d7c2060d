"""The event door's statements are planned for the tables as they are when they run, not as they were when the
connection first ran them (db/engine.py: custom_plans)."""

import uuid

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine, exchanges, orders, users
from db.access import Caller

_ADD_ORDERS = sa.text(
    "INSERT INTO orders (user_id, exchange_id, order_id, base_sub_account_id, quote_sub_account_id, symbol, side, "
    "order_type, status, source) SELECT :user, :exchange, unnest(CAST(:ids AS text[])), gen_random_uuid(), "
    "gen_random_uuid(), 'ETH/USDT', 'buy', 'market', 'filled', 'bot'")


def _owner() -> tuple[uuid.UUID, uuid.UUID]:
    with engine.transaction() as conn:
        user = users.ensure(conn, "plans@example.com")
        exchange = exchanges.create(conn, Caller(id=user["id"], role="user"), name="plans", type_="simulator",
                                    api_key="plans-key", api_secret="plans-secret")
    return user["id"], exchange["id"]


def _prepared_plan(conn: sa.Connection, statement_start: str, values: list[str]) -> str:
    """How the connection would now run the statement psycopg prepared for it, with these values."""
    driver = conn.connection.driver_connection
    name = driver.execute("SELECT name FROM pg_prepared_statements WHERE starts_with(statement, %s)",
                          (statement_start,)).fetchone()[0]
    arguments = sql.SQL(", ").join(map(sql.Literal, values))
    explain = sql.SQL("EXPLAIN EXECUTE {}({})").format(sql.Identifier(name), arguments)
    return "\n".join(row[0] for row in driver.execute(explain))


def test_the_consumers_order_lock_reads_by_index_once_the_table_has_grown_after_its_first_batches(settings):
    user_id, exchange_id = _owner()
    pool = engine.create(settings.database_url, settings, custom_plans=True)  # as `tiris consume` makes it
    try:
        with pool.connect() as conn:
            # Twenty batches of twenty new orders, as on a new database: psycopg prepares the lock on its fifth run,
            # and PostgreSQL would settle on a generic plan after five more.
            for batch in range(20):
                order_ids = [f"batch-{batch}-{n}" for n in range(20)]
                keys = {(user_id, exchange_id, order_id) for order_id in order_ids}
                engine.read_at_once(conn, [orders.locking(keys)])
                conn.execute(_ADD_ORDERS, {"user": user_id, "exchange": exchange_id, "ids": order_ids})
            conn.execute(_ADD_ORDERS, {"user": user_id, "exchange": exchange_id,  # then the table grows
                                       "ids": [f"later-{n}" for n in range(20_000)]})
            keys = orders.order_keys({(user_id, exchange_id, f"wanted-{n}") for n in range(20)})
            plan = _prepared_plan(conn, "SELECT orders.id, orders.user_id", [
                bulk.literal(keys["k_users"], UUID()), bulk.literal(keys["k_exchanges"], UUID()),
                bulk.literal(keys["k_orders"], sa.Text())])
            conn.rollback()
    finally:
        pool.dispose()
    assert "Index Scan using uq_orders_user_id_exchange_id_order_id on orders" in plan, plan
    assert "Seq Scan on orders" not in plan, plan
