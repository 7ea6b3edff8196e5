"""The inspection record: every decision kept in a results store, images scored as they arrive, found again.

- :mod:`~scgan.record.url`: which database (SQLite in the output folder by default, any SQLAlchemy URL), passwords
  from the environment and masked wherever a URL is shown;
- :mod:`~scgan.record.schema` and ``migrations/``: the tables (decisions, model versions, the marks made on the
  service's page linked to their decisions) and their Alembic migrations, so that a newer scgan opens an older store
  and an older scgan refuses a newer one;
- :mod:`~scgan.record.store`: writing decisions (one transaction each), the spool that keeps them on disk while the
  database is away, pruning;
- :mod:`~scgan.record.queries`: listing, counting per day and per model version, CSV export;
- :mod:`~scgan.record.watcher`: ``scgan watch``, a folder scored file by file, each file exactly once;
- :mod:`~scgan.record.recorder`: the decisions of ``scgan predict --db`` and ``scgan serve --db``.

Needs the ``record`` extra (SQLAlchemy, Alembic, watchdog, psycopg); :func:`require` says so in one line.
"""
from __future__ import annotations

EXTRA_HINT = "pip install 'scgan[record]'"


def require() -> None:
    """Raise ImportError in one line naming the extra when SQLAlchemy or Alembic is not installed."""
    try:
        import alembic  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the results store needs SQLAlchemy and Alembic ({e.name} is missing); install the "
                          f"record extra: {EXTRA_HINT}") from None
