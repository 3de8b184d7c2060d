"""The one date-time parser of query parameters and cursors: what names an instant, and the refusals' wording
(a 400 whose details name the field)."""

import datetime as dt
import uuid

import pytest

from db import pagination

UTC = dt.timezone.utc
CASES = [
    ("2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=UTC)),
    ("2026-01-01T08:00:00+08:00", dt.datetime(2026, 1, 1, tzinfo=UTC)),
    ("2026-01-01T00:00:00.123456-05:30", dt.datetime(2026, 1, 1, 5, 30, 0, 123456, tzinfo=UTC)),
    ("2026-01-01T00:00:00", "a UTC offset is required"),  # a local time names no instant
    ("2016-12-31T23:59:60Z", "unsupported date-time"),  # a leap second: valid RFC 3339 that Python cannot hold
    ("0000-01-01T00:00:00Z", "unsupported date-time"),
    ("yesterday", "unsupported date-time"),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[text for text, _ in CASES])
def test_query_time(text, expected):
    if isinstance(expected, dt.datetime):
        assert pagination.query_time("start_time", text) == expected
        return
    with pytest.raises(Exception) as refused:
        pagination.query_time("start_time", text)
    assert [(d["field"], d["issue"]) for d in refused.value.details] == [("query/start_time", expected)]


def test_absent_query_time_is_none():
    assert pagination.query_time("end_time", None) is None


def test_cursor_round_trips_and_a_local_time_in_one_is_unreadable():
    time, row_id = dt.datetime(2026, 1, 1, 12, tzinfo=UTC), uuid.uuid4()
    assert pagination.decode_cursor(pagination.encode_cursor(time, row_id)) == (time, row_id)
    with pytest.raises(Exception) as refused:
        pagination.decode_cursor(pagination.encode_cursor(time.replace(tzinfo=None), row_id))
    assert refused.value.details[0]["field"] == "query/cursor"
