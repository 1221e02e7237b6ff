"""Push notifications against a fake push bouncer (twisted.web on 127.0.0.1) that checks auth and JSON shape.

Two levels:

* :class:`BouncerHTTPTests`: the worker's consume against the bouncer over real
  HTTP (add, remove, 5xx, 4xx, timeout with a short deadline, connection refused);
* :class:`PushServiceTests`: a real WorkerService on the real RabbitMQ (5xx then
  success, a timeout then success, 4xx to ``{queue}.failed``, retries exhausted,
  several shards).
"""

from __future__ import annotations

import dataclasses
import socket
import types
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.contract import inline
from tests.integration.base import IntegrationCase
from tests.resource_fakes import reactor_resources
from tests.unit.test_push_payload import dm_event, remove_event
from zqtwisted.config import Config, QueueSettings
from zqtwisted.consumers.push_notifications import PushNotificationsWorker, build_worker
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.push.bouncer import BouncerRefused, BouncerRetryLater
from zqtwisted.push.payload import build_notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.sharding import QUEUE, shard_queue, shard_queues
from zqtwisted.push.testing import RunningBouncer, error_body, serve_bouncer
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.runtime.deadletter import failed_queue
from zqtwisted.runtime.reactor import IConnectingReactor
from zqtwisted.runtime.service import WorkerService
from zqtwisted.tap import build_service

SHARDS = 3
CREDENTIALS = {f"uuid-{n}": f"key-{n}" for n in range(1, SHARDS + 1)}
FAST_RETRIES = QueueSettings(retry_base=0.05, retry_cap=0.2)
PUSH_QUEUES = [QUEUE, *shard_queues(SHARDS)]


def expected_body(event: dict[str, Any]) -> dict[str, Any]:
    return build_notification(parse_event(event)).request_body()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BouncerMixin:
    addCleanup: Callable[..., None]

    def start_bouncer(self) -> RunningBouncer:
        """A fake bouncer on 127.0.0.1; stopped (port and connections) at cleanup."""
        running = serve_bouncer(reactor, CREDENTIALS)
        self.addCleanup(lambda: Deferred.fromCoroutine(running.stop()))
        return running

    def push_settings(self, running: RunningBouncer, shard: int = 1, **changes: Any) -> PushSettings:
        return PushSettings(bouncer_url=running.url, server_uuid=f"uuid-{shard}", api_key=f"key-{shard}", **changes)


async def until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    for _ in range(int(timeout / step)):
        if predicate():
            return
        await deferLater(reactor, step, lambda: None)
    raise AssertionError(f"condition not reached within {timeout}s")


class BouncerHTTPTests(BouncerMixin, TestCase):
    timeout = 30

    def worker(self, settings: PushSettings) -> PushNotificationsWorker:
        resources = reactor_resources()
        # Cleanups run last-in first-out: the pools close before the bouncer stops.
        self.addCleanup(resources.close)
        worker = build_worker(WorkerContext(QUEUE, resources.reactor, resources.publisher), settings, resources)
        worker.start()
        return worker

    async def test_add(self) -> None:
        """An add reaches the bouncer with the server's basic auth and Zulip's JSON body."""
        running = self.start_bouncer()
        worker = self.worker(self.push_settings(running, user_agent_version="10.0"))
        await worker.consume(worker.validate(dm_event()))
        (received,) = running.bouncer.requests
        self.assertEqual(received.server_uuid, "uuid-1")
        self.assertEqual(received.body, expected_body(dm_event()))
        self.assertEqual(received.headers["user-agent"], "ZulipServer/10.0")
        self.assertEqual(running.bouncer.rejected, [])

    async def test_remove(self) -> None:
        """A remove reaches the bouncer with the remove payloads."""
        running = self.start_bouncer()
        worker = self.worker(self.push_settings(running))
        await worker.consume(remove_event())
        (received,) = running.bouncer.requests
        self.assertEqual(received.body, expected_body(remove_event()))
        self.assertEqual(received.body["gcm_payload"]["zulip_message_ids"], "501,502")

    async def test_5xx_is_transient(self) -> None:
        """A 503 fails the consume with a TransientError (retry later)."""
        running = self.start_bouncer()
        running.bouncer.answer(503, b"maintenance")
        worker = self.worker(self.push_settings(running))
        with self.assertRaises(TransientError) as caught:
            await worker.consume(dm_event())
        self.assertEqual(str(caught.exception), "Received 503 from push notification bouncer")

    async def test_4xx_is_permanent_with_code(self) -> None:
        """Wrong credentials: the bouncer's 401 is a PermanentError carrying INVALID_ZULIP_SERVER."""
        running = self.start_bouncer()
        worker = self.worker(dataclasses.replace(self.push_settings(running), api_key="wrong"))
        with self.assertRaises(PermanentError) as caught:
            await worker.consume(dm_event())
        assert isinstance(caught.exception, BouncerRefused)
        self.assertEqual((caught.exception.status, caught.exception.code), (401, "INVALID_ZULIP_SERVER"))

    async def test_timeout_short_deadline(self) -> None:
        """No answer within a 0.3 s deadline: TransientError, and the connection is closed."""
        running = self.start_bouncer()
        running.bouncer.hold()
        worker = self.worker(self.push_settings(running, timeout=0.3))
        started = reactor.seconds()
        with self.assertRaises(BouncerRetryLater) as caught:
            await worker.consume(dm_event())
        self.assertLess(reactor.seconds() - started, 5)
        self.assertIn("Timeout", str(caught.exception))
        await until(lambda: running.bouncer.lost == running.bouncer.held)

    async def test_connection_refused(self) -> None:
        """Nobody listening: TransientError (retry later)."""
        settings = PushSettings(bouncer_url=f"http://127.0.0.1:{closed_port()}", server_uuid="u", api_key="k")
        worker = self.worker(settings)
        with self.assertRaises(BouncerRetryLater) as caught:
            await worker.consume(dm_event())
        self.assertIn("ConnectionError", str(caught.exception))


@implementer(ILogObserver)
class LineCollector:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("zqtwisted.consumers.push_notifications"):
            self.lines.append(formatEvent(event))


class PushServiceTests(BouncerMixin, IntegrationCase):
    async def _purge(self) -> None:
        await super()._purge()
        session = await self.direct.session(30)
        for queue in PUSH_QUEUES:
            for name in (queue, failed_queue(queue)):
                await session.declare_queue(name)
                await session.purge(name)

    def push_config(self, settings: PushSettings) -> Config:
        config = self.config(**{QUEUE: FAST_RETRIES})
        return config.replace(sections=types.MappingProxyType({"push": settings}))

    async def start_push(self, settings: PushSettings, worker_num: int | None = None) -> WorkerService:
        connecting = cast(IConnectingReactor, reactor)
        service = build_service(connecting, self.push_config(settings), [QUEUE], worker_num=worker_num)
        self.services.append(service)
        service.startService()
        await self.until(lambda: service.ready, timeout=30)
        return service

    def collect_lines(self) -> LineCollector:
        collector = LineCollector()
        globalLogPublisher.addObserver(collector)
        self.addCleanup(globalLogPublisher.removeObserver, collector)
        return collector

    @inline
    async def test_add_and_remove(self) -> None:
        """Published add and remove events reach the bouncer; the queue ends empty."""
        running = self.start_bouncer()
        await self.start_push(self.push_settings(running))
        await self.publish(QUEUE, [dm_event(), remove_event()])
        await self.until(lambda: len(running.bouncer.requests) == 2, timeout=30)
        bodies = sorted((r.body for r in running.bouncer.requests), key=lambda b: b["gcm_payload"]["event"])
        self.assertEqual(bodies, [expected_body(dm_event()), expected_body(remove_event())])
        await self.until_counts(QUEUE, 0)
        self.assertEqual(await self.dead_letters(QUEUE), [])

    @inline
    async def test_5xx_then_success(self) -> None:
        """Two 503s, then 200: delivered on the third attempt, nothing dead-lettered."""
        running = self.start_bouncer()
        running.bouncer.answer(503, b"down", times=2)
        service = await self.start_push(self.push_settings(running))
        await self.publish(QUEUE, [dm_event()])
        await self.until(lambda: len(running.bouncer.requests) == 3, timeout=30)
        await self.until(lambda: service.runners[0].held == 0 and service.runners[0].in_flight == 0, timeout=30)
        self.assertEqual([r.body for r in running.bouncer.requests], [expected_body(dm_event())] * 3)
        self.assertEqual(await self.dead_letters(QUEUE), [])
        await self.until_counts(QUEUE, 0)
        self.flushLoggedErrors(BouncerRetryLater)

    @inline
    async def test_timeout_then_success(self) -> None:
        """The bouncer does not answer within a 0.3 s deadline: retried, then delivered."""
        running = self.start_bouncer()
        running.bouncer.hold()
        await self.start_push(self.push_settings(running, timeout=0.3))
        await self.publish(QUEUE, [dm_event()])
        await self.until(lambda: len(running.bouncer.requests) == 2, timeout=30)
        await self.until(lambda: running.bouncer.lost == running.bouncer.held, timeout=10)
        self.assertEqual(await self.dead_letters(QUEUE), [])

    @inline
    async def test_4xx_to_the_dead_letter_queue(self) -> None:
        """A 400 is not retried: the event is in {queue}.failed with the bouncer's code."""
        running = self.start_bouncer()
        running.bouncer.answer(400, error_body("Invalid GCM option to bouncer: priority 'urgent'", "BAD_REQUEST"))
        await self.start_push(self.push_settings(running))
        await self.publish(QUEUE, [dm_event()])
        await self.until_counts(failed_queue(QUEUE), 1)
        ((body, headers),) = await self.dead_letters(QUEUE)
        self.assertEqual(len(running.bouncer.requests), 1)
        self.assertEqual((headers["reason"], headers["exception"]), ("permanent", "BouncerRefused"))
        self.assertIn("code BAD_REQUEST", headers["message"])
        self.assertIn(b'"user_profile_id": 10', body)
        self.flushLoggedErrors(BouncerRefused)

    @inline
    async def test_retries_exhausted(self) -> None:
        """Always 502: 4 attempts (Zulip's 3 retries), Zulip's warning, then {queue}.failed."""
        collector = self.collect_lines()
        running = self.start_bouncer()
        running.bouncer.answer(502, b"bad gateway", times=10)
        await self.start_push(self.push_settings(running))
        await self.publish(QUEUE, [dm_event()])
        await self.until_counts(failed_queue(QUEUE), 1)
        ((_, headers),) = await self.dead_letters(QUEUE)
        self.assertEqual(len(running.bouncer.requests), 4)
        self.assertEqual((headers["reason"], headers["attempts"]), ("retries-exhausted", 4))
        self.assertIn("Maximum retries exceeded for trigger:10 event:push_notification", collector.lines)
        self.flushLoggedErrors(BouncerRetryLater)

    @inline
    async def test_shards(self) -> None:
        """Three shard workers (--worker-num 1..3): each user's events are sent by the worker of its shard."""
        running = self.start_bouncer()
        for n in range(1, SHARDS + 1):
            await self.start_push(self.push_settings(running, shard=n, shards=SHARDS), worker_num=n)
        users = list(range(1, 13))
        for user in users:
            await self.publish(shard_queue(user, SHARDS), [dm_event(user_profile_id=user)])
        await self.until(lambda: len(running.bouncer.requests) == len(users), timeout=30)
        sent_by = {r.body["user_id"]: r.server_uuid for r in running.bouncer.requests}
        self.assertEqual(sent_by, {user: f"uuid-{user % SHARDS + 1}" for user in users})
        for queue in PUSH_QUEUES:
            await self.until_counts(queue, 0)
