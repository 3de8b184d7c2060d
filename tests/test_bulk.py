"""Lists bound as one array literal (db/bulk.py) reach PostgreSQL exactly as they were, whatever they hold."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine

HOSTILE_TEXT = ['plain', '', 'NULL', 'null', ' padded ', 'a,b', '{braces}', '"quoted"', 'back\\slash', '\\"',
                "it's", 'tab\tand\nnewline', 'ünïcødé 🚀', '\\', '"', ',', '{', '}', 'a"b\\c{d},e']


@pytest.mark.parametrize("item, values", [
    (sa.Text(), HOSTILE_TEXT + [None]),
    (sa.Numeric(), [Decimal("0"), Decimal("-0.000000000000000001"), Decimal("1E+20"),
                    Decimal("12345678901234567890.123456789012345678"), None]),
    (UUID(as_uuid=True), [uuid.uuid4(), None, uuid.UUID(int=0)]),
    (sa.BigInteger(), [0, -1, 2**62, None]),
    (sa.DateTime(timezone=True), [dt.datetime(2026, 12, 1, 0, 40, 8, 123456, tzinfo=dt.timezone.utc), None]),
    (sa.Boolean(), [True, False, None]),
], ids=["text", "numeric", "uuid", "bigint", "timestamptz", "boolean"])
def test_a_list_bound_as_an_array_arrives_unchanged(settings, item, values):
    statement = sa.text("SELECT v FROM unnest(:values) WITH ORDINALITY AS u(v, n) ORDER BY n").bindparams(
        sa.bindparam("values", type_=bulk.Array(item)))
    with engine.transaction() as conn:
        assert conn.execute(statement, {"values": values}).scalars().all() == values


def test_an_empty_list_binds_as_an_empty_array(settings):
    statement = sa.text("SELECT cardinality(:values)").bindparams(sa.bindparam("values", type_=bulk.Array(sa.Text())))
    with engine.transaction() as conn:
        assert conn.execute(statement, {"values": []}).scalar_one() == 0
