"""``user_activity`` and ``user_activity_interval``: Zulip's batched writes of user activity (Zulip mode only).

``user_activity`` is Zulip's ``UserActivityWorker``: batches of up to 100 events (or
what came within 1 s), de-duplicated on ``(user_profile_id, client_id, query)``
(counts summed, the latest time kept) and written with **one** UPSERT into
``zerver_useractivity`` in one transaction (:mod:`zqtwisted.zulip.activity_queries`).

* The queue is sharded like Zulip's (``USER_ACTIVITY_SHARDS``): ``--worker-num N``
  consumes ``user_activity_shardN``; set ``[user_activity] shards`` to Zulip's value.
* An event PostgreSQL would reject (a query longer than the column, an id out of
  range, a time that is not epoch seconds) is dead-lettered on its own before its
  batch is written; an event whose user or client does not exist fails on its own
  (dead-lettered), the rest of its batch is written.
* A database outage fails the whole batch (nothing half-written: one statement, one
  transaction) and the batch is retried without counting a try
  (:class:`~zqtwisted.errors.DependencyUnavailable`) until the database answers; any
  other failure of the statement retries the whole batch as a transient error.
* Several batches may be written at once (``concurrency``, with a prefetch beyond the
  batch size): the next batch is gathered while the last one is written.  The rows are
  written in key order, so that concurrent batches cannot deadlock.

``user_activity_interval`` is Zulip's ``UserActivityIntervalWorker``: each event
extends the user's latest activity interval or starts a new one, as Zulip's
``do_update_user_activity_interval``; events of one user are handled in order, those
of different users at once.

Both need Zulip's database: without ``[zulip] database``, ``--all`` leaves them out
and ``--queue user_activity`` stops start-up saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from zqtwisted.config import Config
from zqtwisted.errors import PermanentError, StartupError, TransientError
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import (
    BatchFailures,
    ConsumerSpec,
    Event,
    LoopQueueProcessingWorker,
    QueueProcessingWorker,
    WorkerContext,
)
from zqtwisted.runtime.runner_settings import RunnerSettings
from zqtwisted.zulip.activity import (
    ActivityEvent,
    IntervalEvent,
    deduplicate,
    parse_activity_event,
    parse_interval_event,
)
from zqtwisted.zulip.activity_queries import NO_USER, update_activity_interval, upsert_user_activity
from zqtwisted.zulip.activity_settings import UserActivitySettings
from zqtwisted.zulip.pool import DatabaseQueryError, ZulipDatabase
from zqtwisted.zulip.settings import ZulipSettings

ACTIVITY = "user_activity"
INTERVAL = "user_activity_interval"


class UnknownReference(PermanentError):
    """The event names a user or a client that is not in Zulip's database."""


class Parsed(dict[str, Any]):
    """An event as delivered, carrying what ``validate`` parsed out of it (each delivery is parsed once)."""

    def __init__(self, event: Event, parsed: Any) -> None:
        super().__init__(event)
        self.parsed = parsed


def zulip_mode_required(config: Config) -> str | None:
    """Why a consumer of Zulip's tables cannot run under ``config`` (no ``[zulip] database``), or None."""
    if config.section("zulip", ZulipSettings).enabled:
        return None
    return "this queue writes Zulip's tables and runs in Zulip mode only: set [zulip] database (see docs/zulip.md)"


class UserActivityWorker(LoopQueueProcessingWorker):
    """Writes batches of ``user_activity`` events into ``zerver_useractivity``, one statement each."""

    batch_size: ClassVar[int] = 100
    sleep_delay: ClassVar[float] = 1.0
    prefetch: ClassVar[int] = 400
    concurrency: ClassVar[int] = 4
    sharded: ClassVar[bool] = True
    log = Logger()

    def __init__(
        self,
        context: WorkerContext,
        *,
        database: Any,
        settings: UserActivitySettings | None = None,
        consume_timeout: float | None = None,
        query_timeout: float | None = None,
    ) -> None:
        """``database`` runs named queries (:class:`~zqtwisted.zulip.pool.ZulipDatabase`).

        ``consume_timeout`` (the queue's, per event) and ``query_timeout`` are for the start-up checks.
        """
        super().__init__(context)
        self.database = database
        self.settings = settings or UserActivitySettings()
        self.consume_timeout = consume_timeout
        self.query_timeout = query_timeout

    def start(self) -> Deferred[None] | None:
        for problem in self.configuration_problems():
            self.log.warn("{queue}: {problem}", queue=self.queue, problem=problem)
        return _open(self.database)

    def validate(self, event: Event) -> Event:
        return Parsed(event, parse_activity_event(event))

    def consume_batch(self, events: Sequence[Event]) -> Deferred[BatchFailures | None]:
        return Deferred.fromCoroutine(self._write(events))

    async def _write(self, events: Sequence[Event]) -> BatchFailures | None:
        parsed: list[ActivityEvent] = [_parsed(event, parse_activity_event) for event in events]
        rows = deduplicate(parsed)
        try:
            skipped = await self.database.run(ACTIVITY, upsert_user_activity, rows)
        except DatabaseQueryError as e:
            # Nothing was written (one statement, one transaction): the whole batch again, later.
            raise TransientError(f"batch of {len(events)} events not written: {e}") from None
        if not skipped:
            return None
        missing = set(skipped)
        failures: dict[int, BaseException] = {}
        for index, event in enumerate(parsed):
            if event.key in missing:
                failures[index] = UnknownReference(
                    f"user {event.user_profile_id} or client {event.client_id} does not exist in Zulip's database"
                )
        self.log.warn(
            "{queue}: {events} events name a user or client that does not exist (users {users}); "
            "the other {written} events of the batch are written",
            queue=self.queue,
            events=len(failures),
            users=sorted({key[0] for key in missing}),
            written=len(events) - len(failures),
        )
        return BatchFailures(failures)

    def configuration_problems(self) -> list[str]:
        """Settings that work but not as intended (logged as warnings at start)."""
        problems = []
        shards, worker_num = self.settings.shards, self.context.worker_num
        if worker_num is not None and shards == 1:
            problems.append(
                f"--worker-num {worker_num} consumes {self.queue}, but with [user_activity] shards = 1 "
                f"Zulip publishes to {ACTIVITY}: run it without --worker-num, or set shards (USER_ACTIVITY_SHARDS)"
            )
        elif worker_num is not None and not 1 <= worker_num <= shards:
            problems.append(
                f"--worker-num {worker_num} is outside 1..{shards} ([user_activity] shards): no event will come"
            )
        elif worker_num is None and shards > 1:
            problems.append(
                f"[user_activity] shards = {shards}, but this worker consumes {ACTIVITY}: start one per --worker-num"
            )
        limit, deadline = self.consume_timeout, self.query_timeout
        if limit is not None and deadline is not None and limit <= deadline:
            problems.append(
                f"max_consume_seconds = {limit:g} does not exceed [zulip] query_timeout = {deadline:g}: "
                "a slow database will dead-letter events instead of retrying them"
            )
        return problems


class UserActivityIntervalWorker(QueueProcessingWorker):
    """Extends or starts users' activity intervals; one user's events in order, many users at once."""

    concurrency: ClassVar[int] = 10
    log = Logger()

    def __init__(self, context: WorkerContext, *, database: Any) -> None:
        super().__init__(context)
        self.database = database
        self._locks: dict[int, DeferredLock] = {}

    def start(self) -> Deferred[None] | None:
        return _open(self.database)

    def validate(self, event: Event) -> Event:
        return Parsed(event, parse_interval_event(event))

    def consume(self, event: Event) -> Deferred[None]:
        return Deferred.fromCoroutine(self._consume(_parsed(event, parse_interval_event)))

    async def _consume(self, event: IntervalEvent) -> None:
        user_id = event.user_profile_id
        lock = self._locks.setdefault(user_id, DeferredLock())
        await lock.acquire()
        try:
            outcome = await self.database.run(INTERVAL, update_activity_interval, user_id, event.log_time)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(user_id, None)
        if outcome == NO_USER:
            raise UnknownReference(f"user {user_id} does not exist in Zulip's database")


def _parsed(event: Event, parse: Callable[[Event], Any]) -> Any:
    return event.parsed if isinstance(event, Parsed) else parse(event)


def _open(database: Any) -> Deferred[None] | None:
    opener = getattr(database, "open", None)
    return opener() if opener is not None else None


def _database(resources: Resources) -> tuple[ZulipDatabase, ZulipSettings]:
    reason = zulip_mode_required(resources.config)
    if reason is not None:
        raise StartupError(reason)
    return resources.zulip_database(), resources.config.section("zulip", ZulipSettings)


def build_activity_worker(
    context: WorkerContext, settings: UserActivitySettings, resources: Resources
) -> UserActivityWorker:
    """The worker over Zulip's shared database, with the queue's effective time limit for the start-up checks."""
    database, zulip = _database(resources)
    runner = RunnerSettings.resolve(UserActivityWorker, resources.config.queue(context.queue))
    return UserActivityWorker(
        context,
        database=database,
        settings=settings,
        consume_timeout=runner.timeout,
        query_timeout=zulip.query_timeout,
    )


def build_interval_worker(context: WorkerContext, settings: None, resources: Resources) -> UserActivityIntervalWorker:
    """The worker over Zulip's shared database."""
    database, _ = _database(resources)
    return UserActivityIntervalWorker(context, database=database)


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(
        ACTIVITY,
        UserActivityWorker,
        build_activity_worker,
        section="user_activity",
        settings=UserActivitySettings,
        sharded=True,
        requires=zulip_mode_required,
    ),
    ConsumerSpec(INTERVAL, UserActivityIntervalWorker, build_interval_worker, requires=zulip_mode_required),
)
