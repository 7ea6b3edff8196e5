"""The results store's Alembic migrations: ``env.py`` and one file per schema revision under ``versions/``."""
