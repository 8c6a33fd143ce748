"""SQLite for the async engine with one thread hop per statement (docs/performance.md#sqlite).

aiosqlite runs each connection's sqlite3 calls on that connection's own thread; every call is a hop there
and back (a queue put, a thread wake-up, a callback to the event loop). SQLAlchemy's aiosqlite adapter
makes four such calls per statement (open a cursor, execute, fetch the rows, close the cursor) and one more
for the rollback with which the pool resets each connection it gets back, even one with no transaction
open. On a loaded two-core machine a hop costs 0.1–0.3 ms, and a read request made about 36 of them.

This dialect is SQLAlchemy's aiosqlite dialect with a cursor that does the whole statement in one hop
(execute, description, every row, row count, last row id, cursor closed) and hands SQLAlchemy the buffered
result, which is what the stock adapter ends up holding too. The connection remembers, from each hop,
whether SQLite is inside a transaction, so that the pool's reset rollback of a connection with nothing open
costs nothing. Streaming (server-side) cursors keep the stock behaviour.

Selected by Database for `sqlite+aiosqlite` URLs (the URL the settings store does not change)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "telecare_aiosqlite"


def _run(conn: Any, operation: str, parameters: Any, many: bool) -> tuple[Any, list[Any], int, Any, bool]:
    """On the connection's thread: the statement and everything SQLAlchemy will ask of its cursor."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, conn.in_transaction
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor: nothing to open or close on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Connection) -> None:  # no hop: the sqlite3 cursor lives in `_run`
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: Any = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # the result is already buffered and the description kept

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run(operation, parameters, many=False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run(operation, seq_of_parameters, many=True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapt = self._adapt_connection
        assert isinstance(adapt, Connection)
        async with adapt._execute_mutex:
            raw = self._connection._conn
            try:
                result = await self._connection._execute(_run, raw, operation, parameters, many)
            except BaseException:
                adapt._in_transaction = None  # unknown: let the next rollback go to SQLite
                raise
        self._description, rows, self._rowcount, self._lastrowid, adapt._in_transaction = result
        self._rows = collections.deque(rows)

    def nextset(self) -> None:
        return None

    def fetchall(self) -> Sequence[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("_in_transaction",)
    _cursor_cls = _Cursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # True/False as the last statement left SQLite; None when not known (start, after an error).
        self._in_transaction: bool | None = None

    def rollback(self) -> None:
        if self._in_transaction is False:
            return  # nothing open: the pool's reset rollback needs no hop
        super().rollback()
        self._in_transaction = False

    def commit(self) -> None:
        super().commit()
        self._in_transaction = False


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> Connection:
        stock = super().connect(*arg, **kw)
        return Connection(self, stock._connection)


class Dialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> _DBAPI:
        return _DBAPI(__import__("aiosqlite"), __import__("sqlite3"))


def engine_url(url: str) -> str:
    """The URL to give create_async_engine for a `sqlite+aiosqlite` URL from the settings (registering
    this dialect with SQLAlchemy on first use)."""
    prefix = "sqlite+aiosqlite:"
    if not url.startswith(prefix):
        return url
    registry.register(f"sqlite.{DRIVER}", __name__, "Dialect")
    return f"sqlite+{DRIVER}:" + url.removeprefix(prefix)
