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
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import TransientError
from zqtwisted.push.bouncer import BouncerRefused, PushBackend, build_backend
from zqtwisted.push.payload import build_notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.sharding import QUEUE
from zqtwisted.runtime.worker import Event, QueueProcessingWorker, WorkerContext, assign_queue


@assign_queue(QUEUE)
class PushNotificationsWorker(QueueProcessingWorker):
    """Sends push notifications.

    ``context.extras["push_backend"]`` may replace the backend chosen by
    ``[push]`` (anything with ``send(notification)`` and ``close()``).
    """

    concurrency: ClassVar[int] = 50
    max_consume_seconds: ClassVar[float | None] = 30.0
    max_retries: ClassVar[int] = 3
    sharded: ClassVar[bool] = True
    log = Logger()

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self._backend: PushBackend | None = None

    @property
    def settings(self) -> PushSettings:
        return self.context.config.section("push", PushSettings)

    @property
    def backend(self) -> PushBackend:
        if self._backend is None:
            self._backend = self.context.extras.get("push_backend") or build_backend(
                self.context.reactor, self.settings
            )
        return self._backend

    def start(self) -> None:
        backend = self.backend  # build now, so that a bad configuration fails at start
        if backend.name == "log":
            self.log.warn(
                "Mobile push notifications are not configured ([push] bouncer_url is not set): "
                "{queue} logs each notification instead of sending it",
                queue=self.queue,
            )
        else:
            self.log.info("{queue} sends push notifications through the bouncer", queue=self.queue)
        for problem in self.configuration_problems():
            self.log.warn("{queue}: {problem}", queue=self.queue, problem=problem)

    def stop(self) -> Deferred[None] | None:
        return self._backend.close() if self._backend is not None else None

    def validate(self, event: Event) -> Event:
        parse_event(event, self.settings)
        return event

    def consume(self, event: Event) -> Deferred[None]:
        return Deferred.fromCoroutine(self._consume(event))

    async def _consume(self, event: Event) -> None:
        notification = build_notification(parse_event(event, self.settings), self.settings.redact_content)
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
        user_id = event.get("user_profile_id")
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
            limit = self._consume_timeout()
            if limit is not None and limit <= self.settings.timeout:
                problems.append(
                    f"max_consume_seconds = {limit:g} does not exceed the bouncer's deadline "
                    f"([push] timeout = {self.settings.timeout:g}): slow requests will be dead-lettered, not retried"
                )
            concurrency = self.context.config.queue(self.queue).concurrency or self.concurrency
            if concurrency > self.settings.max_connections:
                problems.append(
                    f"concurrency {concurrency} exceeds [push] max_connections = {self.settings.max_connections}: "
                    "requests will wait for a connection"
                )
        return problems

    def _consume_timeout(self) -> float | None:
        value: Any = self.context.config.queue(self.queue).max_consume_seconds
        if value == "none":
            return None
        if value == "default":
            return self.max_consume_seconds
        return float(value)
