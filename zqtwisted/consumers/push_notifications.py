"""``missedmessage_mobile_notifications``: mobile push through Zulip's push bouncer.

Zulip's ``PushNotificationsWorker``: each ``add`` / ``remove`` event becomes the
APNs and FCM payloads Zulip builds (:mod:`zqtwisted.push.payload`) and one JSON
POST to the push bouncer (:mod:`zqtwisted.push.bouncer`), many at once
(``concurrency = 50``).

* The queue is sharded: ``--worker-num N`` consumes
  ``missedmessage_mobile_notifications_shardN`` (publishers choose the shard with
  :func:`zqtwisted.push.sharding.shard_queue`).
* Timeout, TLS / connection error, HTTP >= 500: a TransientError, retried with
  backoff up to 3 times (Zulip's limit), then Zulip's warning
  ``Maximum retries exceeded for trigger:{user_id} event:push_notification``.
* Any other 4xx: a PermanentError carrying the bouncer's ``code``; dead-lettered.
* Without ``[push] bouncer_url`` each notification is logged instead of sent.

Zulip runs this queue without a per-event timeout; here the bouncer request has
its own deadline (``[push] timeout``, 15 s) well inside the queue's
``max_consume_seconds`` (30 s), so a slow bouncer is retried, not dead-lettered.

Zulip mode (``[zulip] database`` set): the events are Zulip's own (``add`` with
identifiers, ``remove``, ``register_push_device_to_bouncer``), handled as Zulip's
``handle_push_notification`` & co. handle them, from Zulip's database
(:mod:`zqtwisted.zulip.push_service`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import TransientError
from zqtwisted.push.bouncer import (
    BouncerBackend,
    BouncerRefused,
    PushBackend,
    bouncer_pool_options,
    build_backend,
    build_bouncer_client,
)
from zqtwisted.push.payload import build_notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.sharding import QUEUE
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import ConsumerSpec, Event, QueueProcessingWorker, WorkerContext
from zqtwisted.runtime.runner_settings import RunnerSettings
from zqtwisted.webhooks.client import WebhookClient
from zqtwisted.zulip.bouncer import ZulipBouncer
from zqtwisted.zulip.pool import ZulipDatabase
from zqtwisted.zulip.push_events import parse_zulip_push_event, user_of
from zqtwisted.zulip.push_service import ZulipPush
from zqtwisted.zulip.settings import ZulipSettings


class ParsedEvent(dict[str, Any]):
    """An event as delivered, carrying what :meth:`PushNotificationsWorker.validate` parsed out of it.

    The runtime hands validate()'s result to consume(), so each delivery is parsed
    once; it is still the plain event for everything else (retries, dead letters).
    """

    def __init__(self, event: Event, parsed: Any) -> None:
        super().__init__(event)
        self.parsed = parsed


class PushNotificationsWorker(QueueProcessingWorker):
    """Sends push notifications through ``backend`` (the bouncer, or the log)."""

    concurrency: ClassVar[int] = 50
    max_consume_seconds: ClassVar[float | None] = 30.0
    max_retries: ClassVar[int] = 3
    sharded: ClassVar[bool] = True
    log = Logger()

    def __init__(
        self,
        context: WorkerContext,
        *,
        settings: PushSettings,
        backend: PushBackend,
        concurrency: int,
        consume_timeout: float | None,
        zulip: ZulipPush | None = None,
        database: ZulipDatabase | None = None,
    ) -> None:
        """``concurrency`` and ``consume_timeout`` are the queue's effective ones (for the start-up checks).

        ``zulip`` (with its ``database``): Zulip mode.
        """
        super().__init__(context)
        self.settings = settings
        self.backend = backend
        self.effective_concurrency = concurrency
        self.consume_timeout = consume_timeout
        self.zulip = zulip
        self.database = database

    def start(self) -> Deferred[None] | None:
        self._announce()
        return self.database.open() if self.database is not None else None

    def _announce(self) -> None:
        if self.backend.name == "log":
            self.log.warn(
                "Mobile push notifications are not configured ([push] bouncer_url is not set): "
                "{queue} logs each notification instead of sending it",
                queue=self.queue,
            )
        else:
            self.log.info("{queue} sends push notifications through the bouncer", queue=self.queue)
        for problem in self.configuration_problems():
            self.log.warn("{queue}: {problem}", queue=self.queue, problem=problem)

    def validate(self, event: Event) -> Event:
        if self.zulip is not None:
            return ParsedEvent(event, parse_zulip_push_event(event))
        return ParsedEvent(event, parse_event(event, self.settings))

    def consume(self, event: Event) -> Deferred[None]:
        if self.zulip is not None:
            parsed = event.parsed if isinstance(event, ParsedEvent) else parse_zulip_push_event(event)
            return self.zulip.handle(parsed, event)
        return Deferred.fromCoroutine(self._consume(event))

    async def _consume(self, event: Event) -> None:
        parsed = event.parsed if isinstance(event, ParsedEvent) else parse_event(event, self.settings)
        notification = build_notification(parsed, self.settings.redact_content)
        if notification.kind == "add":
            self.log.info(
                "Sending push notifications to mobile clients for user {user_id}", user_id=notification.user_id
            )
        result = await self.backend.send(notification)
        if result is None:
            return
        self.log.info(
            "Sent mobile push notifications for user {user_id} through bouncer: "
            "{android} via FCM devices, {apple} via APNs devices",
            user_id=notification.user_id,
            android=result.total_android_devices,
            apple=result.total_apple_devices,
        )

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> None:
        """Zulip's failure processor: a warning once the retries are used up."""
        user_id = user_of(event)
        if reason == "retries-exhausted" or failure.check(TransientError):
            self.log.warn("Maximum retries exceeded for trigger:{user_id} event:push_notification", user_id=user_id)
        elif isinstance(failure.value, BouncerRefused) and failure.value.code == "PUSH_NOTIFICATIONS_DISALLOWED":
            self.log.warn("Bouncer refused to send push notification: {reason}", reason=failure.value.msg)

    # -- start-up checks --------------------------------------------------------------

    def configuration_problems(self) -> list[str]:
        """Settings that work but not as intended (logged as warnings at start)."""
        problems = []
        shards, worker_num = self.settings.shards, self.context.worker_num
        if worker_num is not None and shards == 1:
            problems.append(
                f"--worker-num {worker_num} consumes {self.queue}, but with [push] shards = 1 "
                f"publishers use {QUEUE}: run it without --worker-num, or set shards"
            )
        elif worker_num is not None and not 1 <= worker_num <= shards:
            problems.append(f"--worker-num {worker_num} is outside 1..{shards} ([push] shards): no event will come")
        elif worker_num is None and shards > 1:
            problems.append(f"[push] shards = {shards}, but this worker consumes {QUEUE}: start one per --worker-num")
        if self.backend.name == "bouncer":
            limit = self.consume_timeout
            if limit is not None and limit <= self.settings.timeout:
                problems.append(
                    f"max_consume_seconds = {limit:g} does not exceed the bouncer's deadline "
                    f"([push] timeout = {self.settings.timeout:g}): slow requests will be dead-lettered, not retried"
                )
            concurrency = self.effective_concurrency
            if concurrency > self.settings.max_connections:
                problems.append(
                    f"concurrency {concurrency} exceeds [push] max_connections = {self.settings.max_connections}: "
                    "requests will wait for a connection"
                )
        return problems


def build_worker(context: WorkerContext, settings: PushSettings, resources: Resources) -> PushNotificationsWorker:
    """The worker with its backend over the shared ``"push"`` pool, and the queue's effective limits.

    In Zulip mode it also gets Zulip's database and the bouncer requests of Zulip mode.
    """
    zulip = resources.config.section("zulip", ZulipSettings)
    if zulip.enabled and not settings.user_agent_version:
        settings = dataclasses.replace(settings, user_agent_version=zulip.version)

    def client() -> WebhookClient:
        pool = resources.http_pool("push", bouncer_pool_options(settings))
        return build_bouncer_client(resources.reactor, settings, pool)

    runner = RunnerSettings.resolve(PushNotificationsWorker, resources.config.queue(context.queue))
    backend = build_backend(settings, client)
    service = database = None
    if zulip.enabled:
        database = resources.zulip_database()
        bouncer = None
        if isinstance(backend, BouncerBackend):
            bouncer = ZulipBouncer(backend.client, settings.bouncer_url, settings.server_uuid, settings.secret())
        service = ZulipPush(database, bouncer, zulip, context.publisher, zulip.salt())
    return PushNotificationsWorker(
        context,
        settings=settings,
        backend=backend,
        concurrency=runner.concurrency,
        consume_timeout=runner.timeout,
        zulip=service,
        database=database,
    )


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(QUEUE, PushNotificationsWorker, build_worker, section="push", settings=PushSettings, sharded=True),
)
