"""The asynchronous data layer over Zulip's PostgreSQL: a bounded pool, a deadline on every query.

Each query is a named function of a DB-API cursor (:mod:`.webhook_queries`,
:mod:`.push_queries`), run in one of Twisted's pool threads
(``deferToThreadPool``) on a connection of its own, in one transaction.  Why not
``twisted.enterprise.adbapi``: when a connection breaks mid-query, adbapi logs a
"Rollback failed" traceback for every query that hits it and checks connections
with an extra statement; this pool (psycopg2 under Twisted's ThreadPool, the same
model) drops a broken connection quietly and reports a :class:`DatabaseUnavailable`.

Deadlines, so that a stuck query really stops:

* every query's Deferred times out after ``query_timeout`` (the caller is told at once);
* the server cancels any statement after ``statement_timeout`` (80 % of it), and
  ``lock_timeout`` likewise, so the thread is freed too;
* libpq's ``connect_timeout`` bounds connecting, and TCP keepalives plus
  ``tcp_user_timeout`` detect a connection that died silently.

Every connection's ``search_path`` is ``[zulip] schema`` (then ``public``).  The
first successful connection checks the schema (:mod:`.schema`); a mismatch is
fatal: one log line naming what is missing, and the process stops.  While the
database is unreachable a probe (``SELECT 1`` every ``PROBE_INTERVAL`` s) notices
when it is back, which ``/ready`` reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from zqtwisted.errors import DependencyUnavailable, PermanentError, StartupError
from zqtwisted.zulip.schema import REQUIRED, SchemaMismatch, check_schema
from zqtwisted.zulip.settings import ZulipSettings

T = TypeVar("T")
Connect = Callable[[], Any]  # returns an open DB-API connection
PROBE_INTERVAL = 2.0


class DatabaseUnavailable(DependencyUnavailable):
    """Zulip's database could not answer this time (down, unreachable, too slow)."""


class DatabaseQueryError(PermanentError):
    """A query failed in a way that retrying will not fix."""


def psycopg2_connect(settings: ZulipSettings) -> Connect:
    """A connect function for ``settings``: libpq deadlines, keepalives, the schema in search_path."""
    statement_ms = max(100, int(settings.query_timeout * 800))

    def connect() -> Any:
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(
            settings.dsn(),
            connect_timeout=max(1, round(settings.connect_timeout)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=int(settings.query_timeout * 1000),
            application_name="zqtwisted",
            options=f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}",
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.schema)))
            connection.commit()
        except BaseException:
            connection.close()
            raise
        return connection

    return connect


def _is_unavailable(error: BaseException) -> bool:
    """A failure of the connection or the server, not of the query itself."""
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - the zulip extra installs it
        return False
    return isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))


class ZulipDatabase:
    """Runs named queries on Zulip's database; shared by every Zulip-mode consumer."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        settings: ZulipSettings,
        *,
        connect: Connect | None = None,
        required: dict[str, tuple[str, ...]] | None = None,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.settings = settings
        self._connect = connect if connect is not None else psycopg2_connect(settings)
        self._required = REQUIRED if required is None else required
        self._on_fatal = on_fatal
        self._threads: ThreadPool | None = None
        self._idle: list[Any] = []
        self._all: set[int] = set()
        self._lock = threading.Lock()
        self._schema_checked = False
        self._fatal = False
        self.available = False
        self._probe: LoopingCall | None = None
        self._open_waiters: list[Deferred[None]] = []
        self._open_result: Failure | bool | None = None

    # -- life cycle --------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Start the pool and check the schema; an unreachable database is waited for, not fatal.

        Fails with :class:`~zqtwisted.errors.StartupError` when the schema is not Zulip's.
        Shared: every consumer that needs the database awaits the same opening.
        """
        if self._open_result is not None:
            return fail(self._open_result) if isinstance(self._open_result, Failure) else succeed(None)
        waiter: Deferred[None] = Deferred()
        self._open_waiters.append(waiter)
        if len(self._open_waiters) == 1:
            Deferred.fromCoroutine(self._open()).addBoth(self._opened)
        return waiter

    def _opened(self, result: object) -> None:
        self._open_result = result if isinstance(result, Failure) else True
        waiters, self._open_waiters = self._open_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    async def _open(self) -> None:
        if self._threads is None:
            IReactorThreads(self._reactor)  # the reactor must run threads
            threads = ThreadPool(self.settings.pool_min, self.settings.pool_max, name="zqtwisted-zulip-db")
            threads.start()
            self._threads = threads
        try:
            await self.run("check_schema", _select_one)
        except DatabaseUnavailable as e:
            self.log.warn(
                "Zulip's database ({database}) is not reachable ({error}); events wait and are retried "
                "until it is, and its schema is checked then",
                database=self.settings.described_database(),
                error=str(e),
            )

    def close(self) -> Deferred[None]:
        """Stop the probe and the threads; close every idle connection."""
        if self._probe is not None and self._probe.running:
            self._probe.stop()
        self._probe = None
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.stop()
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            _close_quietly(connection)
        return succeed(None)

    def is_available(self) -> bool:
        """Whether the last query (or probe) reached the database (for ``/ready``)."""
        return self.available

    # -- queries -----------------------------------------------------------------------

    def run(self, name: str, query: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``query(cursor, *args)`` in one transaction; fires with its result.

        Fails with :class:`DatabaseUnavailable` (retried, never dead-lettered) when the
        database cannot answer within the deadline, :class:`DatabaseQueryError` when the
        query itself fails.  ``name`` is for log lines; parameters are never logged.
        """
        if self._fatal:
            return fail(DatabaseUnavailable("Zulip's database has a schema zqtwisted does not know"))
        threads = self._threads
        if threads is None:
            return fail(DatabaseUnavailable("the database pool is not open"))
        d: Deferred[T] = deferToThreadPool(self._reactor, threads, self._in_thread, query, args)
        d.addTimeout(self.settings.query_timeout, self._clock)
        return d.addCallbacks(self._answered, self._failed, errbackArgs=(name,))

    def _answered(self, result: T) -> T:
        self._set_available(True)
        return result

    def _failed(self, failure: Failure, name: str) -> Failure:
        if failure.check(SchemaMismatch):
            return self._schema_mismatch(str(failure.value))
        if failure.check(TimeoutError, CancelledError):
            self._set_available(False)
            return Failure(DatabaseUnavailable(f"query {name} got no answer within {self.settings.query_timeout:g}s"))
        error = failure.value
        assert error is not None
        if _is_unavailable(error) or failure.check(DatabaseUnavailable):
            self._set_available(False)
            return Failure(DatabaseUnavailable(f"query {name}: {_first_line(error)}"))
        return Failure(DatabaseQueryError(f"query {name} failed: {type(failure.value).__name__}"))

    def _in_thread(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        connection = self._take()
        try:
            if not self._schema_checked:
                with connection.cursor() as cursor:
                    check_schema(cursor, self.settings.schema, self._required)
                self._schema_checked = True
            with connection.cursor() as cursor:
                result = query(cursor, *args)
            connection.commit()
        except BaseException as e:
            broken = _is_unavailable(e)
            if not broken:
                try:
                    connection.rollback()
                except Exception:  # noqa: BLE001 - the connection is dropped below
                    broken = True
            if broken or _closed(connection):
                self._drop(connection)
            else:
                self._give_back(connection)
            raise
        self._give_back(connection)
        return result

    def _take(self) -> Any:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if not _closed(connection):
                    return connection
                self._all.discard(id(connection))
        connection = self._connect()
        with self._lock:
            self._all.add(id(connection))
        return connection

    def _give_back(self, connection: Any) -> None:
        with self._lock:
            if self._threads is not None:
                self._idle.append(connection)
                return
        _close_quietly(connection)

    def _drop(self, connection: Any) -> None:
        with self._lock:
            self._all.discard(id(connection))
        _close_quietly(connection)

    # -- availability ------------------------------------------------------------------

    def _set_available(self, available: bool) -> None:
        changed = available != self.available
        self.available = available
        if available:
            if changed:
                self.log.info("Zulip's database answers")
            if self._probe is not None and self._probe.running:
                self._probe.stop()
            self._probe = None
            return
        if changed:
            self.log.warn("Zulip's database does not answer; its events are retried until it does")
        if self._threads is not None and not self._fatal and self._probe is None:
            self._probe = LoopingCall(self._probe_once)
            self._probe.clock = self._clock
            self._probe.start(PROBE_INTERVAL, now=False).addErrback(lambda _: None)

    def _probe_once(self) -> None:
        self.run("probe", _select_one).addErrback(lambda _: None)

    def _schema_mismatch(self, message: str) -> Failure:
        """At start-up: a StartupError (the service logs it and stops); later: log, stop, retry the event."""
        first = not self._fatal
        self._fatal = True
        if self._open_result is None:
            return Failure(StartupError(message))
        if first:
            self.log.error("{error}; stopping", error=message)
            if self._on_fatal is not None:
                self._on_fatal()
        return Failure(DatabaseUnavailable(message))


def _closed(connection: Any) -> bool:
    """Whether a psycopg2 connection is closed (``closed`` is 0 while open)."""
    return bool(getattr(connection, "closed", False))


def _select_one(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchone()


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - already broken
        pass


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
