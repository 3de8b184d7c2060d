"""Database URL -> psycopg arguments: options survive, nothing about the URL is lost or invented."""

import pytest

from db.urls import psycopg_kwargs

CASES = [
    ("postgresql+psycopg://postgres@127.0.0.1/tiris",
     {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "tiris"}),
    ("postgresql+psycopg://app:secret@db.internal:6543/tiris?sslmode=require",
     {"host": "db.internal", "port": 6543, "user": "app", "password": "secret", "dbname": "tiris",
      "sslmode": "require"}),
    ("postgresql+psycopg://app@db/tiris?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
     {"host": "db", "port": 5432, "user": "app", "dbname": "tiris", "sslmode": "verify-full",
      "sslrootcert": "/etc/ca.pem", "application_name": "x"}),
    # Percent-encoded special characters in the password arrive decoded.
    ("postgresql+psycopg://app:p%40ss%3Aw%2Fo%25rd@db:5432/tiris",
     {"host": "db", "port": 5432, "user": "app", "password": "p@ss:w/o%rd", "dbname": "tiris"}),
    ("postgresql://app@/tiris?host=/var/run/postgresql",
     {"host": "/var/run/postgresql", "port": 5432, "user": "app", "dbname": "tiris"}),
    ("postgresql+psycopg://app@db/tiris?sslmode=disable&sslmode=require",
     {"host": "db", "port": 5432, "user": "app", "dbname": "tiris", "sslmode": "require"}),
]


@pytest.mark.parametrize(("url", "expected"), CASES, ids=[url for url, _ in CASES])
def test_psycopg_kwargs(url, expected):
    assert psycopg_kwargs(url) == expected


def test_overrides_replace_and_add_arguments():
    kwargs = psycopg_kwargs("postgresql+psycopg://app@db/tiris?sslmode=require", dbname="postgres", autocommit=True)
    assert kwargs == {"host": "db", "port": 5432, "user": "app", "dbname": "postgres", "sslmode": "require",
                      "autocommit": True}
