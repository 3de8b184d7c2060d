"""Database URLs (SQLAlchemy's form, `postgresql+psycopg://...`) as psycopg connection arguments."""

from sqlalchemy.engine import URL, make_url


def psycopg_kwargs(database_url: str | URL, **overrides) -> dict:
    """Keyword arguments for psycopg.connect() to the URL's database; `overrides` replace or add any of them.

    The URL's query options (sslmode, sslrootcert, a socket directory as `host`...) are libpq parameters and are
    kept: dropping sslmode would connect in clear, or fail, against a server that requires TLS.
    """
    url = make_url(database_url)
    kwargs = {"host": url.host, "port": url.port or 5432, "user": url.username, "password": url.password,
              "dbname": url.database}
    # A repeated option arrives as a tuple; libpq takes one value, and the last one wins as in a conninfo string.
    kwargs.update({key: value[-1] if isinstance(value, tuple) else value for key, value in url.query.items()})
    kwargs.update(overrides)
    return {key: value for key, value in kwargs.items() if value is not None}
