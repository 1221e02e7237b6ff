"""Tests for zqtwisted.consumers.user_activity under the runner (MemoryBroker + Clock, a scripted database)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial.unittest import TestCase

from tests.helpers import Harness
from tests.resource_fakes import memory_resources
from tests.zulip_activity_events import user_activity_event, user_activity_interval_event
from zqtwisted.config import Config, ConsumeLimit, QueueSettings
from zqtwisted.consumers.user_activity import (
    ACTIVITY,
    INTERVAL,
    SPECS,
    UnknownReference,
    UserActivityIntervalWorker,
    UserActivityWorker,
    zulip_mode_required,
)
from zqtwisted.errors import StartupError, TransientError
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.tap import consumed_queue
from zqtwisted.zulip.activity import ActivityRow
from zqtwisted.zulip.activity_queries import CREATED, EXTENDED, NO_USER
from zqtwisted.zulip.activity_settings import UserActivitySettings
from zqtwisted.zulip.pool import DatabaseQueryError, DatabaseUnavailable
from zqtwisted.zulip.settings import ZulipSettings

NOW = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)
ZULIP = ZulipSettings(database="dbname=zulip", external_host="zulip.example.com", query_timeout=10.0)


class ScriptedDatabase:
    """Runs nothing: records each named query's arguments and answers from a script (default: ``answer(*args)``).

    A scripted step is a value, an exception, or ``"hold"`` (a Deferred the test fires).
    """

    def __init__(self, answer: Callable[..., Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.script: list[Any] = []
        self.held: list[Deferred[Any]] = []
        self.opened = 0

    def open(self) -> Deferred[None]:
        self.opened += 1
        return succeed(None)

    def run(self, name: str, query: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.calls.append((name, args))
        step = self.script.pop(0) if self.script else None
        if step == "hold":
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            return d
        if isinstance(step, BaseException):
            return fail(step)
        return succeed(self.answer(*args) if step is None else step)


def activity(user: int, client: int = 1, path: str = "/json/messages", seconds: int = 0) -> dict[str, Any]:
    event = user_activity_event(user, client, path, NOW + timedelta(seconds=seconds))
    assert event is not None
    return event


class ActivityHarness:
    """The user_activity worker under a runner; its database scripted, its log captured."""

    def __init__(self, test: TestCase, **settings: Any) -> None:
        self.db = ScriptedDatabase(lambda rows: [])
        self.logged: list[dict[str, Any]] = []

        def build(context: WorkerContext) -> UserActivityWorker:
            return UserActivityWorker(context, database=self.db)

        self.h = Harness(UserActivityWorker, queue=ACTIVITY, build=build, **settings)
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        worker = self.h.worker
        assert isinstance(worker, UserActivityWorker)
        self.worker = worker
        worker.log = Logger(observer=cast(ILogObserver, self.logged.append))
        worker.start()

    def rows(self) -> list[list[ActivityRow]]:
        """The rows of each UPSERT, in order."""
        return [list(args[0]) for name, args in self.db.calls if name == ACTIVITY]

    def dead(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(json.loads(body), headers) for body, headers in self.h.dead()]


class DeclarationTests(TestCase):
    def test_specs(self) -> None:
        """user_activity: sharded batches of 100 / 1 s, several in flight; user_activity_interval: single events."""
        activity_spec, interval_spec = SPECS
        self.assertEqual((activity_spec.queue, activity_spec.section), (ACTIVITY, "user_activity"))
        self.assertIs(activity_spec.settings, UserActivitySettings)
        self.assertTrue(activity_spec.sharded and activity_spec.batched)
        self.assertEqual((UserActivityWorker.batch_size, UserActivityWorker.sleep_delay), (100, 1.0))
        self.assertGreater(UserActivityWorker.prefetch, UserActivityWorker.batch_size)
        self.assertEqual(consumed_queue(activity_spec, 2), "user_activity_shard2")
        self.assertEqual((interval_spec.queue, interval_spec.sharded, interval_spec.batched), (INTERVAL, False, False))
        self.assertEqual(consumed_queue(interval_spec, 2), INTERVAL)

    def test_zulip_mode_only(self) -> None:
        """Without [zulip] database both specs say why they cannot run; with it, nothing."""
        standalone = Config()
        zulip = Config(sections={"zulip": ZULIP})
        for spec in SPECS:
            reason = spec.unavailable(standalone)
            assert reason is not None
            self.assertIn("[zulip] database", reason)
            self.assertIsNone(spec.unavailable(zulip))
        self.assertIsNone(zulip_mode_required(zulip))

    def test_specs_build_over_the_shared_database(self) -> None:
        """In Zulip mode both workers get the one shared database; in standalone mode building is a StartupError."""
        resources, reactor, publisher = memory_resources(Config(sections={"zulip": ZULIP}))
        activity_spec, interval_spec = SPECS
        context = WorkerContext(ACTIVITY, reactor, publisher)
        worker = activity_spec.build(context, UserActivitySettings(shards=1), resources)
        assert isinstance(worker, UserActivityWorker)
        self.assertIs(worker.database, resources.zulip_database())
        self.assertEqual((worker.consume_timeout, worker.query_timeout), (30.0, 10.0))
        interval = interval_spec.build(WorkerContext(INTERVAL, reactor, publisher), None, resources)
        assert isinstance(interval, UserActivityIntervalWorker)
        self.assertIs(interval.database, resources.zulip_database())
        standalone, _, _ = memory_resources()
        with self.assertRaisesRegex(StartupError, r"\[zulip\] database"):
            activity_spec.build(context, UserActivitySettings(), standalone)

    def test_configuration_problems(self) -> None:
        """Shard settings that cannot work and a time limit under the query deadline are warned about at start."""

        def problems(shards: int, worker_num: int | None, limit: float | None = 30.0) -> list[str]:
            _, reactor, publisher = memory_resources()
            context = WorkerContext(ACTIVITY, reactor, publisher, worker_num=worker_num)
            worker = UserActivityWorker(
                context,
                database=ScriptedDatabase(lambda rows: []),
                settings=UserActivitySettings(shards=shards),
                consume_timeout=limit,
                query_timeout=10.0,
            )
            return worker.configuration_problems()

        self.assertEqual(problems(1, None), [])
        self.assertEqual(problems(4, 2), [])
        self.assertIn("run it without --worker-num", problems(1, 2)[0])
        self.assertIn("outside 1..4", problems(4, 5)[0])
        self.assertIn("start one per --worker-num", problems(4, None)[0])
        self.assertIn("query_timeout = 10", problems(1, None, 5.0)[0])
        self.assertEqual(problems(1, None, None), [])

    def test_problems_are_logged_at_start(self) -> None:
        """start() logs each configuration problem and opens the database."""
        _, reactor, publisher = memory_resources()
        db = ScriptedDatabase(lambda rows: [])
        worker = UserActivityWorker(
            WorkerContext(ACTIVITY, reactor, publisher, worker_num=3), database=db, settings=UserActivitySettings()
        )
        seen: list[dict[str, Any]] = []
        worker.log = Logger(observer=cast(ILogObserver, seen.append))
        self.successResultOf(cast(Deferred[None], worker.start()))
        self.assertEqual(db.opened, 1)
        self.assertIn("run it without --worker-num", formatEvent(seen[0]))


class BatchTests(TestCase):
    def test_one_statement_per_batch_deduplicated(self) -> None:
        """100 events with duplicates: one UPSERT of one row per key, counts summing to 100, the latest time each."""
        a = ActivityHarness(self)
        events = [activity(user=1 + i % 5, client=1 + i % 2, seconds=i) for i in range(1, 101)]
        a.h.publish(*events)
        (rows,) = a.rows()
        self.assertEqual(len(rows), 10)
        self.assertEqual(sum(r.count for r in rows), 100)
        latest = {(r.user_profile_id, r.client_id): r.last_visit for r in rows}
        self.assertEqual(latest[(1, 1)], activity(1, seconds=100)["time"])
        self.assertEqual((a.h.waiting(), a.dead()), ([], []))

    def test_partial_batch_flushed_after_a_second(self) -> None:
        """Fewer than 100 events are written 1 s after the first (Zulip's sleep_delay)."""
        a = ActivityHarness(self)
        a.h.publish(activity(7), activity(7), activity(8))
        self.assertEqual(a.rows(), [])
        a.h.advance(1.0)
        (rows,) = a.rows()
        self.assertEqual([(r.user_profile_id, r.count) for r in rows], [(7, 2), (8, 1)])

    def test_malformed_event_dead_lettered_alone(self) -> None:
        """A query too long for the column is dead-lettered on its own; the rest of the batch is written."""
        a = ActivityHarness(self)
        bad = activity(9, path="/" + "x" * 60)
        a.h.publish(activity(7), bad, b"not json", activity(8))
        a.h.advance(1.0)
        (rows,) = a.rows()
        self.assertEqual([r.user_profile_id for r in rows], [7, 8])
        dead = a.h.dead()
        self.assertEqual([h["x-zq-reason"] for _, h in dead], ["malformed", "malformed"])
        self.assertEqual(json.loads(dead[0][0]), bad)

    def test_unknown_user_fails_its_events_only(self) -> None:
        """Keys the statement skipped (no such user or client) dead-letter their events; the others are acked."""
        a = ActivityHarness(self)
        a.db.answer = lambda rows: [(404, 1, "/json/messages")]
        a.h.publish(activity(7), activity(404), activity(404), activity(8))
        a.h.advance(1.0)
        dead = a.dead()
        self.assertEqual([event["user_profile_id"] for event, _ in dead], [404, 404])
        self.assertEqual({h["x-zq-reason"] for _, h in dead}, {"permanent"})
        self.assertEqual({h["x-zq-exception"] for _, h in dead}, {UnknownReference.__name__})
        self.assertEqual(a.h.waiting(), [])
        (line,) = [formatEvent(e) for e in a.logged]
        self.assertIn("2 events name a user or client that does not exist (users [404])", line)
        self.assertIn("the other 2 events of the batch are written", line)
        self.assertEqual(len(self.flushLoggedErrors(UnknownReference)), 2)

    def test_database_outage_retries_the_whole_batch_without_counting(self) -> None:
        """DatabaseUnavailable: no event is acked or dead-lettered; the batch comes back with failed_tries unchanged."""
        a = ActivityHarness(self, max_retries=1)
        a.db.script = [DatabaseUnavailable("down")] * 5
        a.h.publish(activity(7), activity(8))
        for _ in range(40):
            a.h.advance(10.0)
        self.assertEqual(len(a.db.calls), 6)
        self.assertEqual(sum(r.count for r in a.rows()[-1]), 2)
        self.assertEqual((a.h.waiting(), a.dead()), ([], []))

    def test_query_error_retries_the_batch_as_transient(self) -> None:
        """Any other failure of the statement: the whole batch is retried (counted), then written."""
        a = ActivityHarness(self)
        a.db.script = [DatabaseQueryError("query user_activity failed: InternalError")]
        a.h.publish(activity(7), activity(8))
        a.h.advance(1.0)
        self.assertEqual(a.dead(), [])
        for _ in range(10):
            a.h.advance(10.0)
        self.assertEqual(len(a.rows()), 2)
        self.assertEqual(sum(r.count for r in a.rows()[-1]), 2)
        self.assertEqual(a.h.waiting(), [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_query_error_exhausted_dead_letters_the_batch(self) -> None:
        """A statement that keeps failing ends as dead letters for every event of the batch (retries exhausted)."""
        a = ActivityHarness(self, max_retries=1)
        a.db.script = [DatabaseQueryError("q")] * 2
        a.h.publish(activity(7), activity(8))
        for _ in range(10):
            a.h.advance(10.0)
        self.assertEqual([h["x-zq-reason"] for _, h in a.dead()], ["retries-exhausted"] * 2)
        self.assertEqual({h["x-zq-exception"] for _, h in a.dead()}, {"TransientError"})
        self.assertEqual(len(self.flushLoggedErrors(TransientError)), 2)

    def test_next_batch_gathered_while_one_is_written(self) -> None:
        """With a batch held by the database, the next ones are written at once (up to concurrency)."""
        a = ActivityHarness(self)
        a.db.script = ["hold", "hold"]
        a.h.publish(*[activity(i % 7 + 1, seconds=i) for i in range(300)])
        self.assertEqual(len(a.db.calls), 3)
        self.assertEqual(a.h.runner.in_flight, 200)
        for d in a.db.held:
            d.callback([])
        self.assertEqual((a.h.runner.in_flight, a.h.waiting(), a.dead()), (0, [], []))

    def test_each_event_is_parsed_once(self) -> None:
        """consume_batch uses what validate parsed; a plain event (a direct call) is parsed there."""
        a = ActivityHarness(self)
        raw = activity(7)
        self.successResultOf(a.worker.consume_batch([raw, a.worker.validate(raw)]))
        (rows,) = a.rows()
        self.assertEqual(rows[0].count, 2)


class IntervalHarness:
    def __init__(self, test: TestCase) -> None:
        self.db = ScriptedDatabase(lambda user, log_time: CREATED)

        def build(context: WorkerContext) -> UserActivityIntervalWorker:
            return UserActivityIntervalWorker(context, database=self.db)

        self.h = Harness(UserActivityIntervalWorker, queue=INTERVAL, build=build)
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        worker = self.h.worker
        assert isinstance(worker, UserActivityIntervalWorker)
        self.worker = worker
        self.worker.start()


class IntervalWorkerTests(TestCase):
    def test_event_updates_the_interval(self) -> None:
        """update_user_activity_interval's event: the user's id and Zulip's log time reach the query; acked."""
        i = IntervalHarness(self)
        i.h.publish(user_activity_interval_event(10, NOW))
        self.assertEqual(i.db.calls, [(INTERVAL, (10, NOW))])
        self.assertEqual((i.h.waiting(), i.h.dead()), ([], []))
        self.assertEqual(i.db.opened, 1)

    def test_unknown_user_dead_lettered(self) -> None:
        """A user who is not in Zulip's database: dead-lettered at once (Zulip's get_user_profile_by_id fails)."""
        i = IntervalHarness(self)
        i.db.script = [NO_USER, EXTENDED]
        i.h.publish(user_activity_interval_event(404, NOW), {"user_profile_id": 10})
        reasons = sorted(h["x-zq-reason"] for _, h in i.h.dead())
        self.assertEqual(reasons, ["malformed", "permanent"])
        self.assertEqual(len(i.db.calls), 1)
        self.assertEqual(len(self.flushLoggedErrors(UnknownReference)), 1)

    def test_one_user_in_order_many_users_at_once(self) -> None:
        """A user's second event waits for the first; another user's event goes meanwhile; no lock is left behind."""
        i = IntervalHarness(self)
        i.db.script = ["hold", "hold", "hold"]
        later = NOW + timedelta(minutes=1)
        i.h.publish(
            user_activity_interval_event(10, NOW),
            user_activity_interval_event(10, later),
            user_activity_interval_event(11, NOW),
        )
        self.assertEqual([args for _, args in i.db.calls], [(10, NOW), (11, NOW)])
        i.db.held[0].callback(EXTENDED)
        self.assertEqual([args for _, args in i.db.calls], [(10, NOW), (11, NOW), (10, later)])
        for d in i.db.held[1:]:
            d.callback(CREATED)
        self.assertEqual((i.h.waiting(), i.h.dead(), i.worker._locks), ([], [], {}))

    def test_outage_is_retried(self) -> None:
        """The database down: the event waits and is retried, not dead-lettered."""
        i = IntervalHarness(self)
        i.db.script = [DatabaseUnavailable("down")]
        i.h.publish(user_activity_interval_event(10, NOW))
        i.h.advance(120.0)
        self.assertEqual((len(i.db.calls), i.h.dead(), i.worker._locks), (2, [], {}))


class QueueSettingsTests(TestCase):
    def test_queue_settings_override_the_defaults(self) -> None:
        """[queues.user_activity] sets the batch and time limit like any queue's."""
        from zqtwisted.runtime.runner_settings import RunnerSettings

        settings = RunnerSettings.resolve(
            UserActivityWorker, QueueSettings(batch_size=500, max_consume_seconds=ConsumeLimit(5.0))
        )
        self.assertEqual((settings.batch_size, settings.prefetch, settings.timeout), (500, 500, 5.0))
