"""Which database holds the record: a SQLite file by default, any SQLAlchemy URL when given; passwords masked.

A URL may leave its password out and take it from ``SCGAN_DB_PASSWORD``, or the whole URL may come from
``SCGAN_DB_URL``, so that neither stands in a command line, a shell history or a service file. Wherever a URL is
shown (logs, errors, manifests, the lock file's record) its password is ``***``.
"""
from __future__ import annotations

import os
from pathlib import Path

from scgan.record import require

URL_ENV = "SCGAN_DB_URL"
PASSWORD_ENV = "SCGAN_DB_PASSWORD"
DEFAULT_NAME = "results.db"  # the SQLite store in an output folder


def resolve_url(db: str | None, folder: str | os.PathLike[str] | None = None):
    """The store's :class:`sqlalchemy.engine.URL`: ``db`` (a URL, a SQLite file, or a folder holding
    ``results.db``), else ``$SCGAN_DB_URL``, else ``folder/results.db``; a missing password from ``$SCGAN_DB_PASSWORD``.

    ``postgresql://`` means psycopg 3 (``postgresql+psycopg://``).
    """
    require()
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    db = db or os.environ.get(URL_ENV) or None
    if db is None:
        if folder is None:
            raise ValueError(f"name the results store: --db URL (or a SQLite file), or set {URL_ENV}")
        return make_url(f"sqlite:///{Path(folder).resolve() / DEFAULT_NAME}")
    if "://" not in db:
        path = Path(db).expanduser()
        if path.is_dir():
            path = path / DEFAULT_NAME
        return make_url(f"sqlite:///{path.resolve()}")
    try:
        url = make_url(db)
    except ArgumentError:
        raise ValueError(f"not a database URL: {shown(db)} (expected e.g. postgresql://user@host/db or "
                         "sqlite:///path/results.db)") from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.username and url.password is None and os.environ.get(PASSWORD_ENV):
        url = url.set(password=os.environ[PASSWORD_ENV])
    return url


def shown(url) -> str:
    """``url`` (a URL object or text) as it may be written anywhere: its password masked."""
    from scgan.utils.runinfo import mask_passwords

    if hasattr(url, "render_as_string"):
        return url.render_as_string(hide_password=True)
    return mask_passwords(str(url))


def sqlite_file(url) -> Path | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)
