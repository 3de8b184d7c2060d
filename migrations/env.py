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
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
