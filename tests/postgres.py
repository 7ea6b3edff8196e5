"""A real PostgreSQL server for the tests, started once per session in a temporary folder (no mock database).

Debian's binaries live under /usr/lib/postgresql/<version>/bin. ``initdb`` and ``postgres`` refuse to run as root,
so as root they run as an unprivileged system user (``scgan-pg``, created if absent) through ``runuser``. The server
listens on a Unix socket in its folder only (no TCP port), with ``trust`` authentication.

Where the binaries are absent the tests that need the server skip; with ``CI=1`` they never skip: a server that
cannot be started is a failure (CI installs the ``postgresql`` package).
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "scgan-pg"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _unavailable(reason: str):
    if os.environ.get("CI") == "1":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class PostgresServer:
    """A throw-away PostgreSQL cluster: ``url(db)`` for SQLAlchemy, ``new_database()``, ``stop()`` / ``start()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="scgan-pg-"))  # short: a socket path has at most 107 bytes
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                               check=True, capture_output=True)
            self.as_user = ["runuser", "-u", USER, "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, USER)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr.strip()[-2000:]} {log}")

    def start(self) -> None:
        opts = f"-k {self.root} -c listen_addresses='' -F -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://postgres{secret}@/{database}?host={self.root}"

    def new_database(self) -> str:
        """A new empty database's name."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(host=str(self.root), dbname="postgres", user="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def cleanup(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A running :class:`PostgresServer` for the session (skipped without the binaries, except where CI=1)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("no psycopg (pip install 'scgan[record]')")
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("no /usr/lib/postgresql/*/bin/pg_ctl (Debian's package 'postgresql')")
    try:
        server = PostgresServer(bin_dir)
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        _unavailable(f"the test server did not start: {e}")
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a new empty database on the session's server."""
    return postgres_server.url(postgres_server.new_database())


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.unit),
                        pytest.param("postgresql", marks=pytest.mark.system)])  # a server process
def db_url(request, tmp_path) -> str:
    """An empty store's URL: a SQLite file, and a database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")
