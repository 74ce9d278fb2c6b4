"""Engine and session creation, shared by every group of store operations.

SQLite is the embedded default and is used by several processes at once (the router, the
scheduler actor, the CLI), so it runs in WAL mode (readers never wait for the writer) with
foreign keys on, and every write transaction starts with `BEGIN IMMEDIATE`: it takes the
write lock up front, so a read-then-write (e.g. "next prediction version") never finds
its snapshot stale halfway through. Read transactions stay deferred.

PostgreSQL (`PREANNOTATE_DATABASE_URL`) has no such database-wide write lock: write
transactions run concurrently at READ COMMITTED. So every read-then-write locks what it
reads first (`get_or_raise(..., for_update=True)`, `SELECT ... FOR UPDATE`; SQLite
ignores both), and creating the schema takes an advisory lock instead.

JSON columns hold standard JSON only, on every backend: Python would write NaN and
Infinity as bare tokens, which SQLite stores, PostgreSQL rejects and no export can carry.
"""

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from preannotate.configs.paths import SEVERAL_MACHINES, database_url
from preannotate.store.errors import InvalidInput, NotFound, StoreNotHere
from preannotate.store.models import Base

_WRITE_OPTION = "preannotate_write"
_WAL_ATTEMPTS = 100
_SQLITE_BUSY_TIMEOUT_S = 30.0
"""A large import holds the write lock for a while; other writers wait rather than fail."""
_SCHEMA_LOCK = 0x70726561  # "prea": any key no other application on the server uses

ROW_LOCK = {"key_share": True}
"""`FOR NO KEY UPDATE`: excludes other writers of the row, but not inserts that reference
it (their foreign-key check takes a key-share lock, which plain `FOR UPDATE` would block:
a transaction that inserted a job's predictions and then locked the job would deadlock
with another doing the same)."""

ModelT = TypeVar("ModelT", bound=Base)


class EncodedJSON(str):
    """JSON text encoded where it was made (a bulk batch's results: the bulk process
    encodes them so they cross Ray as one string per task); stored as it is. Only text
    is accepted: wrapping a Python object would store its repr."""

    def __new__(cls, text: str) -> "EncodedJSON":
        if not isinstance(text, str):
            raise TypeError(f"EncodedJSON takes JSON text, not {type(text).__name__}")
        return super().__new__(cls, text)


def json_dumps(value: Any) -> str:
    """Standard JSON, the same on every backend (see the module docstring)."""
    if isinstance(value, EncodedJSON):
        return value
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise InvalidInput("NaN and Infinity are not JSON; store null or a number") from None


def _use_wal(connection: Any) -> None:
    """Switch the file to WAL (a setting the file keeps). Switching needs the file to
    itself and does not wait on the busy timeout, so processes opening a new file at the
    same moment retry; once one has switched, the others find WAL and do nothing."""
    for _ in range(_WAL_ATTEMPTS):
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            time.sleep(0.05)
    connection.execute("PRAGMA journal_mode=WAL")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory ones."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


def _require_store_here(url: str) -> None:
    """A process that opens the store the control plane made never makes one: with no
    file at the SQLite path it runs on another machine, where a new empty store would
    hold no users, projects or jobs and the one on the control plane's machine would
    never see its writes."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise StoreNotHere(
            f"the store {path} is not on this machine ({socket.gethostname()}): a SQLite "
            "store serves the processes of one machine. On a cluster of several machines, "
            "set PREANNOTATE_DATABASE_URL to a database every node reaches (PostgreSQL) "
            f"before `preannotate up` ({SEVERAL_MACHINES})"
        )


def create_store_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder, WAL, foreign keys and locking."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, json_serializer=json_dumps)
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, json_serializer=json_dumps, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S}
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling would ignore BEGIN IMMEDIATE; take it over.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        _use_wal(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def _add_new_columns(connection: Connection) -> None:
    """Add the columns a newer version of the tables has to a database an older version
    created, so `preannotate up` on an existing data directory keeps its data. New columns
    are nullable; readers treat NULL as the column's empty value."""
    inspector = inspect(connection)
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(connection.dialect)
                connection.execute(
                    text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                )


def _create_schema(writer: Engine) -> None:
    """Missing tables and columns, under a lock, so two processes starting together do not
    race on DDL (on PostgreSQL both would see no tables and the second CREATE TABLE would
    fail)."""
    with writer.begin() as connection:
        if connection.dialect.name == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": _SCHEMA_LOCK})
        Base.metadata.create_all(connection)
        _add_new_columns(connection)


class Database:
    """Owns the engine and hands out read and write sessions to the operation mixins.

    Sessions do not expire objects on commit, so returned rows stay readable after their
    session has closed (callers get plain, detached objects).
    """

    def __init__(self, url: str | None = None, create_schema: bool = True) -> None:
        """`create_schema=False` for a process that only opens a store the control plane
        made (the scheduler, the router, a replica): it takes no write lock at start (a
        bulk job may be writing), and refuses a SQLite file that is not there
        (`StoreNotHere`) rather than start an empty store of its own."""
        self.url = url or database_url()
        if not create_schema:
            _require_store_here(self.url)
        self.engine = create_store_engine(self.url)
        writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        if create_schema:
            _create_schema(writer)
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
        """One transaction: committed when the block ends, rolled back if it raises.

        `InvalidInput` raised while a value is converted for the database (`json_dumps`)
        comes out as itself: SQLAlchemy wraps it in a `StatementError` where it converts
        the value (SQLite), but not where the driver does (psycopg).
        """
        try:
            with self._write_sessions.begin() as session:
                yield session
        except StatementError as error:
            if isinstance(error.orig, InvalidInput):
                raise error.orig from None
            raise


def get_or_raise(
    session: Session, model: type[ModelT], key: Any, *, for_update: bool = False
) -> ModelT:
    """The row with primary key `key`, or `NotFound` naming what was asked for.

    `for_update` locks the row (PostgreSQL; SQLite's write transactions already exclude
    each other) until the transaction ends, for a read-modify-write such as a counter or a
    state change, so a concurrent writer waits instead of acting on a stale read.
    """
    row = session.get(model, key, with_for_update=ROW_LOCK if for_update else None)
    if row is None:
        raise NotFound(f"{model.label} {key!r} not found")
    return row
