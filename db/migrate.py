"""The one alembic configuration: migrations/ applied to a database URL (`tiris migrate`, tests, benches)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "migrations"


def config(database_url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    # Absolute, so that it works from any working directory.
    cfg.set_main_option("script_location", str(SCRIPTS))
    # The ini parser reads % as interpolation: a percent-encoded password must survive it.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(config(database_url), revision)
