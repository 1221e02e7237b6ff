"""Tests for zqtwisted.consumers.push_notifications under the runner (MemoryBroker + Clock)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import types
from collections import deque
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.trial.unittest import TestCase

from tests.helpers import Harness
from tests.resource_fakes import memory_resources
from tests.unit.test_push_payload import dm_event, remove_event
from zqtwisted.config import Config, ConsumeLimit, QueueSettings
from zqtwisted.consumers import push_notifications
from zqtwisted.consumers.push_notifications import SPECS, PushNotificationsWorker, build_worker
from zqtwisted.push.bouncer import BouncerBackend, BouncerRefused, BouncerResult, BouncerRetryLater, LogBackend
from zqtwisted.push.payload import Notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.sharding import QUEUE
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.tap import consumed_queue

HOLD = "hold"
BOUNCER = PushSettings(bouncer_url="https://push.example.com", server_uuid="u", api_key="k")


class ScriptedBackend:
    """A push backend whose answers the test scripts; succeeds by default."""

    name = "bouncer"

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.cancelled: list[Notification] = []
        self.pending: list[Deferred[BouncerResult | None]] = []
        self.closed = False
        self._script: deque[BaseException | str] = deque()

    def fail_next(self, error: BaseException, times: int = 1) -> None:
        self._script.extend(copy.copy(error) for _ in range(times))

    def hold_next(self, times: int = 1) -> None:
        self._script.extend([HOLD] * times)

    def send(self, notification: Notification) -> Deferred[BouncerResult | None]:
        self.sent.append(notification)
        step = self._script.popleft() if self._script else None
        if step == HOLD:
            d: Deferred[BouncerResult | None] = Deferred(lambda _: self.cancelled.append(notification))
            self.pending.append(d)
            return d
        if isinstance(step, BaseException):
            return fail(step)
        return succeed(BouncerResult(total_android_devices=1, total_apple_devices=2))

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


class PushHarness:
    """The push worker under a runner, its backend scripted, its log lines captured.

    With ``backend=False`` the worker is built by its spec over shared resources (the real backend choice).
    """

    def __init__(self, test: TestCase, backend: Any = None, settings: PushSettings = BOUNCER) -> None:
        self.backend = ScriptedBackend() if backend is None else backend
        self.logged: list[dict[str, Any]] = []
        if self.backend is False:
            resources, _, _ = memory_resources()

            def build(context: WorkerContext) -> PushNotificationsWorker:
                return build_worker(context, settings, resources)

        else:

            def build(context: WorkerContext) -> PushNotificationsWorker:
                return PushNotificationsWorker(
                    context, settings=settings, backend=self.backend, concurrency=50, consume_timeout=30.0
                )

        self.h = Harness(PushNotificationsWorker, queue=QUEUE, build=build)
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        worker = self.h.worker
        assert isinstance(worker, PushNotificationsWorker)
        self.worker = worker
        worker.log = Logger(observer=cast(ILogObserver, self.logged.append))
        worker.start()

    def lines(self, level: LogLevel | None = None) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.logged if level is None or e["log_level"] == level]

    def dead(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(json.loads(body), headers) for body, headers in self.h.dead()]


class DeclarationTests(TestCase):
    def test_declared_sharded_with_zulips_limits(self) -> None:
        """The queue is sharded, 50 in flight, 3 retries, and a consume timeout beyond the 15 s deadline."""
        (spec,) = SPECS
        self.assertEqual((spec.queue, spec.section, spec.settings), (QUEUE, "push", PushSettings))
        cls = spec.worker
        self.assertIs(cls, PushNotificationsWorker)
        self.assertTrue(spec.sharded)
        self.assertEqual((cls.concurrency, cls.max_retries), (50, 3))
        assert cls.max_consume_seconds is not None
        self.assertGreater(cls.max_consume_seconds, PushSettings().timeout)

    def test_worker_num_consumes_its_shard(self) -> None:
        """--worker-num 2 consumes missedmessage_mobile_notifications_shard2; none, the plain queue."""
        (spec,) = SPECS
        self.assertEqual(consumed_queue(spec, 2), f"{QUEUE}_shard2")
        self.assertEqual(consumed_queue(spec, None), QUEUE)

    def test_spec_builds_a_worker_from_resources(self) -> None:
        """With default settings the spec builds a worker with the log backend and the queue's limits."""
        (spec,) = SPECS
        resources, reactor, publisher = memory_resources()
        worker = spec.build(WorkerContext(QUEUE, reactor, publisher), PushSettings(), resources)
        assert isinstance(worker, PushNotificationsWorker)
        self.assertIsInstance(worker.backend, LogBackend)
        self.assertEqual((worker.effective_concurrency, worker.consume_timeout), (50, 30.0))

    def test_bouncer_backend_uses_the_shared_push_pool(self) -> None:
        """With a bouncer, the spec's worker posts through the one "push" pool of the resources."""
        (spec,) = SPECS
        resources, reactor, publisher = memory_resources()
        worker = spec.build(WorkerContext(QUEUE, reactor, publisher), BOUNCER, resources)
        assert isinstance(worker, PushNotificationsWorker)
        self.assertIsInstance(worker.backend, BouncerBackend)
        self.assertEqual(resources.http_pool("push").maxPersistentPerHost, BOUNCER.max_connections)


class DeliveryTests(TestCase):
    def test_add_is_sent_and_acked(self) -> None:
        """An add event is sent once through the backend and acked; Zulip's log lines are written."""
        p = PushHarness(self)
        p.h.publish(dm_event())
        (n,) = p.backend.sent
        self.assertEqual((n.kind, n.user_id, n.message_ids), ("add", 10, (501,)))
        self.assertEqual((p.h.waiting(), p.h.dead()), ([], []))
        self.assertIn(
            "Sent mobile push notifications for user 10 through bouncer: 1 via FCM devices, 2 via APNs devices",
            p.lines(),
        )
        self.assertIn("Sending push notifications to mobile clients for user 10", p.lines())

    def test_remove_is_sent(self) -> None:
        """A remove event is sent as a remove."""
        p = PushHarness(self)
        p.h.publish(remove_event())
        (n,) = p.backend.sent
        self.assertEqual((n.kind, n.message_ids), ("remove", (501, 502)))

    def test_many_in_flight(self) -> None:
        """Up to 50 deliveries are in flight at once; the rest wait for a free slot."""
        p = PushHarness(self)
        p.backend.hold_next(60)
        p.h.publish(*[dm_event(user_profile_id=i) for i in range(60)])
        self.assertEqual(len(p.backend.sent), 50)
        for d in list(p.backend.pending):
            d.callback(None)
        self.assertEqual(len(p.backend.sent), 60)
        for d in p.backend.pending[50:]:
            d.callback(None)
        self.assertEqual((p.h.waiting(), p.h.dead()), ([], []))


class FailureTests(TestCase):
    def test_retry_later_then_success(self) -> None:
        """Two 'retry later' answers, then success: delivered on the third attempt, nothing dead-lettered."""
        p = PushHarness(self)
        p.backend.fail_next(BouncerRetryLater("Received 503 from push notification bouncer"), times=2)
        p.h.publish(dm_event())
        for _ in range(2):
            p.h.advance(60)
        self.assertEqual(len(p.backend.sent), 3)
        self.assertEqual((p.h.waiting(), p.h.dead()), ([], []))

    def test_retries_exhausted(self) -> None:
        """Always 'retry later': 4 attempts, then Zulip's warning and the dead-letter queue."""
        p = PushHarness(self)
        p.backend.fail_next(BouncerRetryLater("Received 502 from push notification bouncer"), times=10)
        p.h.publish(dm_event())
        for _ in range(4):
            p.h.advance(60)
        self.assertEqual(len(p.backend.sent), 4)
        ((event, headers),) = p.dead()
        self.assertEqual((event["user_profile_id"], event["failed_tries"]), (10, 3))
        self.assertEqual(headers["x-zq-reason"], "retries-exhausted")
        self.assertIn("Maximum retries exceeded for trigger:10 event:push_notification", p.lines(LogLevel.warn))
        self.assertEqual(len(self.flushLoggedErrors(BouncerRetryLater)), 1)

    def test_4xx_dead_lettered_with_code(self) -> None:
        """A refusal is not retried: dead-lettered at once with the bouncer's code in the message."""
        p = PushHarness(self)
        p.backend.fail_next(BouncerRefused(400, "INVALID_ZULIP_SERVER", "Zulip server auth failure"))
        p.h.publish(dm_event())
        self.assertEqual(len(p.backend.sent), 1)
        ((_, headers),) = p.dead()
        self.assertEqual((headers["x-zq-reason"], headers["x-zq-exception"]), ("permanent", "BouncerRefused"))
        self.assertIn("code INVALID_ZULIP_SERVER", headers["x-zq-message"])
        self.assertEqual(p.lines(LogLevel.warn), [])
        self.assertEqual(len(self.flushLoggedErrors(BouncerRefused)), 1)

    def test_push_disallowed_warning(self) -> None:
        """PUSH_NOTIFICATIONS_DISALLOWED is logged with Zulip's warning."""
        p = PushHarness(self)
        p.backend.fail_next(BouncerRefused(403, "PUSH_NOTIFICATIONS_DISALLOWED", "Your plan doesn't allow it"))
        p.h.publish(dm_event())
        self.assertIn("Bouncer refused to send push notification: Your plan doesn't allow it", p.lines(LogLevel.warn))
        self.flushLoggedErrors(BouncerRefused)

    def test_malformed_event(self) -> None:
        """A malformed event is dead-lettered with the reason and never sent."""
        p = PushHarness(self)
        p.h.publish(dm_event(user_profile_id="ten"))
        self.assertEqual(p.backend.sent, [])
        ((_, headers),) = p.dead()
        self.assertEqual(headers["x-zq-reason"], "malformed")
        self.assertIn("user_profile_id: expected an integer", headers["x-zq-message"])

    def test_consume_timeout_cancels_the_request(self) -> None:
        """A send still running at max_consume_seconds is cancelled (its I/O stopped) and dead-lettered."""
        p = PushHarness(self)
        p.backend.hold_next()
        p.h.publish(dm_event())
        p.h.advance(29.9)
        self.assertEqual(p.backend.cancelled, [])
        p.h.advance(0.1)
        self.assertEqual(len(p.backend.cancelled), 1)
        ((_, headers),) = p.dead()
        self.assertEqual(headers["x-zq-reason"], "timeout")


class BackendChoiceTests(TestCase):
    def test_log_backend_without_bouncer(self) -> None:
        """Without a bouncer the worker warns at start and logs each notification instead of sending it."""
        p = PushHarness(self, backend=False, settings=PushSettings())
        self.assertIsInstance(p.worker.backend, LogBackend)
        self.assertTrue(any("not configured" in line for line in p.lines(LogLevel.warn)))
        p.h.publish(dm_event())
        self.assertEqual((p.h.waiting(), p.h.dead()), ([], []))

    def test_each_event_is_parsed_once(self) -> None:
        """validate() parses the event and consume() uses that parse instead of parsing again."""
        calls: list[int] = []

        def counting(event: Any, defaults: Any = None) -> Any:
            calls.append(1)
            return parse_event(event, defaults)

        self.patch(push_notifications, "parse_event", counting)
        p = PushHarness(self)
        p.h.publish(dm_event())
        self.assertEqual((len(p.backend.sent), len(calls)), (1, 1))


class ConfigurationProblemTests(TestCase):
    def problems(
        self, worker_num: int | None = None, queue_settings: QueueSettings | None = None, **push: Any
    ) -> list[str]:
        settings = dataclasses.replace(BOUNCER, **push)
        queue = consumed_queue(SPECS[0], worker_num)
        config = Config(queues=types.MappingProxyType({QUEUE: queue_settings or QueueSettings()}))
        resources, reactor, publisher = memory_resources(config)
        worker = build_worker(WorkerContext(queue, reactor, publisher, worker_num), settings, resources)
        return worker.configuration_problems()

    def test_consistent_settings(self) -> None:
        """Shards 3 with worker 2, or no sharding without a worker number: no problem."""
        self.assertEqual(self.problems(worker_num=2, shards=3), [])
        self.assertEqual(self.problems(), [])

    def test_sharding_mismatches(self) -> None:
        """A worker number without shards, beyond the shards, or missing with shards is reported."""
        self.assertIn("run it without --worker-num", self.problems(worker_num=1)[0])
        self.assertIn("outside 1..3", self.problems(worker_num=4, shards=3)[0])
        self.assertIn("start one per --worker-num", self.problems(shards=3)[0])

    def test_deadline_must_fit_in_the_consume_timeout(self) -> None:
        """max_consume_seconds at or below the bouncer's deadline is reported; "none" is fine."""
        (problem,) = self.problems(queue_settings=QueueSettings(max_consume_seconds=ConsumeLimit(15.0)))
        self.assertIn("does not exceed the bouncer's deadline", problem)
        self.assertEqual(self.problems(queue_settings=QueueSettings(max_consume_seconds=ConsumeLimit(None))), [])

    def test_concurrency_beyond_connections(self) -> None:
        """A concurrency above max_connections is reported."""
        (problem,) = self.problems(queue_settings=QueueSettings(concurrency=200))
        self.assertIn("exceeds [push] max_connections = 100", problem)


class ZulipModeTests(TestCase):
    def build(self, push: PushSettings) -> tuple[PushNotificationsWorker, Any]:
        from zqtwisted.zulip.settings import ZulipSettings

        zulip = ZulipSettings(database="dbname=zulip", external_host="zulip.example.com", version="11.4")
        resources, reactor, publisher = memory_resources(Config(sections={"zulip": zulip}))
        (spec,) = SPECS
        worker = spec.build(WorkerContext(QUEUE, reactor, publisher), push, resources)
        assert isinstance(worker, PushNotificationsWorker)
        return worker, resources

    def test_spec_builds_zulip_mode(self) -> None:
        """With [zulip] database set the worker takes Zulip's events, with the shared database and the bouncer."""
        worker, resources = self.build(BOUNCER)
        assert worker.zulip is not None
        self.assertIs(worker.database, resources.zulip_database())
        self.assertIsNotNone(worker.zulip.bouncer)
        self.assertEqual(worker.backend.client.user_agent, "ZulipServer/11.4")  # type: ignore[attr-defined]
        unconfigured, _ = self.build(PushSettings())
        assert unconfigured.zulip is not None
        self.assertIsNone(unconfigured.zulip.bouncer)

    def test_zulip_events_are_validated_and_handled(self) -> None:
        """Zulip's add event passes validation and is handed to the Zulip-mode service; a standalone one does not."""
        from tests.zulip_events import push_add_event
        from tests.zulip_fakes import FakeDatabase
        from zqtwisted.errors import MalformedEventError
        from zqtwisted.zulip.push_service import ZulipPush
        from zqtwisted.zulip.settings import ZulipSettings

        worker, _ = self.build(PushSettings())
        db = FakeDatabase({"fetch_push_user": None})
        settings = ZulipSettings(external_host="zulip.example.com")
        worker.zulip = ZulipPush(db, None, settings, worker.context.publisher)
        event = worker.validate(push_add_event(12, 501, "direct_message"))
        self.successResultOf(worker.consume(event))
        self.successResultOf(worker.consume(dict(event)))
        with self.assertRaises(MalformedEventError):
            worker.validate({"type": "add", "user_profile_id": 12})

    def test_give_up_names_the_user_of_a_registration(self) -> None:
        """The failure handler finds the user inside a register_push_device_to_bouncer payload."""
        from twisted.python.failure import Failure

        from tests.zulip_events import register_push_device_event

        worker, _ = self.build(BOUNCER)
        seen: list[dict[str, Any]] = []
        worker.log = Logger(observer=cast(ILogObserver, seen.append))
        worker.on_give_up(
            register_push_device_event(12, 7, "k", "b"), Failure(BouncerRetryLater("x")), "retries-exhausted"
        )
        self.assertEqual(seen[0]["user_id"], 12)
