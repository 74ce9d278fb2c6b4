"""Engine and session creation, shared by every group of store operations.

SQLite is the embedded default and is used by several processes at once (the router, the
scheduler actor, the CLI), so it runs in WAL mode (readers never wait for the writer) with
foreign keys on, and every write transaction starts with `BEGIN IMMEDIATE`: it takes the
write lock up front, so a read-then-write (e.g. "next prediction version") never finds
its snapshot stale halfway through. Read transactions stay deferred.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from configs.paths import database_url
from store.errors import NotFound
from store.models import Base

_WRITE_OPTION = "preannotate_write"
_SQLITE_BUSY_TIMEOUT_S = 30.0
"""A large import holds the write lock for a while; other writers wait rather than fail."""

ModelT = TypeVar("ModelT", bound=Base)


def create_store_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder, WAL, foreign keys and locking."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling would ignore BEGIN IMMEDIATE; take it over.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


class Database:
    """Owns the engine and hands out read and write sessions to the operation mixins.

    Sessions do not expire objects on commit, so returned rows stay readable after their
    session has closed (callers get plain, detached objects).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        self.engine = create_store_engine(self.url)
        writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        # Under the write lock, so two processes starting together do not race on DDL.
        with writer.begin() as connection:
            Base.metadata.create_all(connection)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)

    def close(self) -> None:
        """Release pooled connections (and, for SQLite, the file handles)."""
        self.engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._write_sessions.begin() as session:
            yield session


def get_or_raise(
    session: Session, model: type[ModelT], key: Any, *, for_update: bool = False
) -> ModelT:
    """The row with primary key `key`, or `NotFound` naming what was asked for.

    `for_update` locks the row (PostgreSQL) for a read-modify-write such as a counter.
    """
    row = session.get(model, key, with_for_update=True if for_update else None)
    if row is None:
        raise NotFound(f"{model.label} {key!r} not found")
    return row
