"""Readiness: the database answers and its schema is at the newest migration."""

from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from db import engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


def database_checks() -> dict[str, str]:
    try:
        with engine.engine().connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.ProgrammingError:
        return {"database": "ok", "migrations": "not applied"}
    except sa.exc.SQLAlchemyError:
        return {"database": "unreachable", "migrations": "unknown"}
    return {"database": "ok", "migrations": "ok" if version == _HEAD else f"at {version}, expected {_HEAD}"}
