"""Alembic environment: SQLAlchemy Core metadata, the URL from the caller or DATABASE_URL."""

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from db.schema import metadata

# Several replicas may start together; the lock lets one migrate while the others wait, then find nothing to do.
MIGRATION_LOCK = 727274


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ["DATABASE_URL"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # A session lock, not a transaction one: it must outlive the commit that a migration's autocommit block
        # makes (TimescaleDB refreshes aggregates outside a transaction), or a second replica could start midway.
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=metadata, compare_type=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.rollback()  # no-op after success; after a failure, what the unlock needs
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()


run_migrations_online()
