"""Migrations: every revision upgrades, downgrades and upgrades again, and head matches db/schema.py."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from db import migrate
from db.schema import metadata

REVISIONS = list(reversed(list(ScriptDirectory(str(migrate.SCRIPTS)).walk_revisions())))


@pytest.fixture
def empty_database_url(database_url):
    """The per-test database emptied back to no schema at all."""
    migrate.downgrade(database_url, "base")
    return database_url


@pytest.mark.parametrize("revision", REVISIONS, ids=[r.revision for r in REVISIONS])
def test_migration_stairway_upgrade_downgrade_upgrade(empty_database_url, revision):
    migrate.upgrade(empty_database_url, revision.revision)
    migrate.downgrade(empty_database_url, revision.down_revision or "base")
    migrate.upgrade(empty_database_url, revision.revision)


def test_downgrade_to_base_leaves_no_tables(empty_database_url):
    engine = sa.create_engine(empty_database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}


def test_migrated_schema_matches_table_definitions(database_url):
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
