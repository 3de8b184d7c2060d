"""Lists bound as one array literal (db/bulk.py) reach PostgreSQL exactly as they were, whatever they hold."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from db import bulk, engine
from generated.models import OrderSide

HOSTILE_TEXT = ['plain', '', 'NULL', 'null', ' padded ', 'a,b', '{braces}', '"quoted"', 'back\\slash', '\\"',
                "it's", 'tab\tand\nnewline', 'ünïcødé 🚀', '\\', '"', ',', '{', '}', 'a"b\\c{d},e']


CASES = {
    "text": (sa.Text(), HOSTILE_TEXT),
    "numeric": (sa.Numeric(), [Decimal("0"), Decimal("-0.000000000000000001"), Decimal("1E+20"),
                               Decimal("12345678901234567890.123456789012345678")]),
    "uuid": (UUID(as_uuid=True), [uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]),
    "bigint": (sa.BigInteger(), [0, -1, 2**62]),
    "timestamptz": (sa.DateTime(timezone=True), [dt.datetime(2026, 12, 1, 0, 40, 8, 123456, tzinfo=dt.timezone.utc),
                                                 dt.datetime(1970, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3)))]),
    "boolean": (sa.Boolean(), [True, False]),
}


# Each kind with and without a NULL: a column without one is written by a faster path of its own.
@pytest.mark.parametrize("item, values", [case for item, values in CASES.values()
                                          for case in ((item, values), (item, [*values, None]))],
                         ids=[f"{name}{suffix}" for name in CASES for suffix in ("", " with NULL")])
def test_a_list_bound_as_an_array_arrives_unchanged(settings, item, values):
    statement = sa.text("SELECT v FROM unnest(:values) WITH ORDINALITY AS u(v, n) ORDER BY n").bindparams(
        sa.bindparam("values", type_=bulk.Array(item)))
    with engine.transaction() as conn:
        assert conn.execute(statement, {"values": values}).scalars().all() == values


def test_enum_members_travel_as_their_values_and_ids_in_a_text_column_as_their_usual_form(settings):
    statement = sa.text("SELECT v FROM unnest(:values) WITH ORDINALITY AS u(v, n) ORDER BY n").bindparams(
        sa.bindparam("values", type_=bulk.Array(sa.Text())))
    some = uuid.UUID(int=1)
    with engine.transaction() as conn:
        assert conn.execute(statement, {"values": [OrderSide.buy, some]}).scalars().all() == ["buy", str(some)]


def test_a_string_holding_u0000_is_refused_not_split_into_two_elements():
    with pytest.raises(ValueError, match="U\\+0000"):
        bulk.literal(["a\x00b", "c"], sa.Text())


def test_an_empty_list_binds_as_an_empty_array(settings):
    statement = sa.text("SELECT cardinality(:values)").bindparams(sa.bindparam("values", type_=bulk.Array(sa.Text())))
    with engine.transaction() as conn:
        assert conn.execute(statement, {"values": []}).scalar_one() == 0


def test_an_update_sets_the_named_columns_of_the_rows_its_keys_name_and_nothing_else(settings):
    scratch = sa.Table("bulk_scratch", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                       sa.Column("label", sa.Text), sa.Column("amount", sa.Numeric(38, 18)),
                       sa.Column("tags", sa.dialects.postgresql.ARRAY(sa.Text)))
    with engine.transaction() as conn:
        scratch.create(conn)
        bulk.insert(conn, scratch, [{"id": n, "label": f"row {n}", "amount": Decimal(n), "tags": ["a"]}
                                    for n in range(1, 4)])
        bulk.update(conn, scratch, [{"id": 1, "label": 'a"b\\c', "tags": ["x,y", "{z}"]},
                                    {"id": 3, "label": None, "tags": []}])
        rows = conn.execute(sa.select(scratch).order_by(scratch.c.id)).all()
    assert [tuple(row) for row in rows] == [(1, 'a"b\\c', Decimal(1), ["x,y", "{z}"]),
                                            (2, "row 2", Decimal(2), ["a"]),
                                            (3, None, Decimal(3), [])]


def test_a_list_bound_as_an_array_is_parsed_once_not_for_every_row_a_filter_reads(settings):
    statement = sa.text("EXPLAIN (VERBOSE) SELECT count(*) FROM generate_series(1, 1000) AS g(n) "
                        "WHERE n = ANY(:values)").bindparams(sa.bindparam("values", type_=bulk.Array(sa.Integer())))
    with engine.transaction() as conn:
        plan = "\n".join(conn.execute(statement, {"values": [1, 2, 3]}).scalars())
    assert "'{1,2,3}'::integer[]" in plan, plan  # a constant of the plan
    assert "cstring" not in plan, plan  # not a text-to-array conversion evaluated per row
