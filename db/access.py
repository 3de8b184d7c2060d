"""Who is asking, and which rows they may see: their own; admins may read everyone's."""

import uuid
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from db.errors import Forbidden


@dataclass(frozen=True)
class Caller:
    id: uuid.UUID
    role: Literal["user", "admin"]
    session_id: uuid.UUID | None = None  # the login session of the access token; tokens from `tiris token` have none

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def readable_by(table: sa.Table, caller: Caller, user_id: str | uuid.UUID | None = None) -> sa.ColumnElement[bool]:
    """The rows `caller` may read; `user_id` narrows an admin's view and is refused to anyone else."""
    if caller.is_admin:
        return table.c.user_id == uuid.UUID(str(user_id)) if user_id else sa.true()
    if user_id and uuid.UUID(str(user_id)) != caller.id:
        raise Forbidden("Only admins may filter by user_id.")
    return table.c.user_id == caller.id
