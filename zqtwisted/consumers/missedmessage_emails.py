"""Zulip's ``missedmessage_emails`` queue: batch a user's notifications into emails.

Each event is validated, stored durably (acked only once its row is committed)
and the user's timer set; when the batch is due the
:class:`~zqtwisted.missedmessage.scheduler.BatchScheduler` publishes one email
per conversation to ``email_senders``.  See ``docs/missedmessage.md``.

Sharding (``[missedmessage] shards = S`` > 1): the worker started with
``--worker-num N`` consumes ``missedmessage_emails_shardN`` and owns the users
with ``user_profile_id % S + 1 == N`` (their rows and their timers).  A worker
started without ``--worker-num`` consumes ``missedmessage_emails`` and only
routes each event to its shard's queue (confirmed before the ack), so a Zulip
server that publishes to the plain queue needs no change.

``context.extras`` may provide ``missedmessage_store`` (a PendingStore) and
``missedmessage_unread`` (an UnreadChecker), e.g. fakes in tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from zqtwisted.config import ConfigError
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.missedmessage.events import queue_for_user, stored_form, validate_event
from zqtwisted.missedmessage.scheduler import BatchScheduler, SchedulerOptions
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.sqlstore import build_store
from zqtwisted.missedmessage.store import PendingStore, Shard
from zqtwisted.missedmessage.unread import UnreadChecker, build_unread_checker
from zqtwisted.runtime.redact import redact_event
from zqtwisted.runtime.worker import Event, QueueProcessingWorker, WorkerContext, assign_queue


@assign_queue("missedmessage_emails")
class MissedMessageWorker(QueueProcessingWorker):
    """Stores notifications and sends each user's batch when it is due."""

    sharded = True

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.settings = MissedMessageSettings()
        self.store: PendingStore | None = None
        self.unread: UnreadChecker | None = None
        self.scheduler: BatchScheduler | None = None
        self.shard: Shard | None = None
        self.router = False

    def validate(self, event: Event) -> Event:
        return validate_event(event)

    def start(self) -> Deferred[None]:
        s = self.settings = self.context.config.section("missedmessage", MissedMessageSettings)
        num = self.context.worker_num
        if s.shards > 1:
            if num is None:
                self.router = True
                self.log.info(
                    "{queue}: routing events to missedmessage_emails_shard1..{shards}",
                    queue=self.queue,
                    shards=s.shards,
                )
                return succeed(None)
            if not 1 <= num <= s.shards:
                raise ConfigError(f"--worker-num {num} is outside 1..{s.shards} ([missedmessage] shards)")
            self.shard = Shard(s.shards, num)
        elif num is not None:
            self.log.warn(
                "{queue}: --worker-num {num} with [missedmessage] shards = 1: events published to "
                "missedmessage_emails are not consumed by this worker",
                queue=self.queue,
                num=num,
            )
        reactor: Any = self.context.reactor
        extras = self.context.extras
        self.store = extras.get("missedmessage_store") or build_store(reactor, s)
        self.unread = extras.get("missedmessage_unread")
        if self.unread is None and s.unread_url:
            self.unread = build_unread_checker(reactor, s.unread_url, s.unread_timeout, s.token())
        self.scheduler = BatchScheduler(
            reactor,
            self.store,
            self.context.publisher.publish_json,
            SchedulerOptions.from_settings(s),
            unread=self.unread,
            shard=self.shard,
        )
        scheduler, store = self.scheduler, self.store
        return store.open().addCallback(lambda _: scheduler.start())

    def owns(self, user_profile_id: int) -> bool:
        """Whether this worker keeps the user's notifications (else it routes them)."""
        if self.router:
            return False
        return self.shard is None or self.shard.owns(user_profile_id)

    def consume(self, event: Event) -> Deferred[None]:
        user = int(event["user_profile_id"])
        if not self.owns(user):
            return self._route(event)
        assert self.scheduler is not None, "start() was not called"
        return self.scheduler.add(event).addErrback(_transient)

    def _route(self, event: Event) -> Deferred[None]:
        queue = queue_for_user(int(event["user_profile_id"]), self.settings.shards)
        if queue == self.queue:
            raise PermanentError(f"{self.queue} does not own user {event['user_profile_id']} but is its shard")
        return self.context.publisher.publish_json(queue, stored_form(event))

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        scheduler, self.scheduler = self.scheduler, None
        store, self.store = self.store, None
        unread, self.unread = self.unread, None
        if scheduler is not None:
            await scheduler.stop()
        if store is not None:
            await store.close()
        if unread is not None:
            await unread.close()

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> Deferred[None]:
        self.log.error(
            "Could not store missedmessage_emails event {event}: {reason}", event=redact_event(event), reason=reason
        )
        return succeed(None)


def _transient(failure: Failure) -> Failure:
    """A store that fails (database down, locked, ...) means "try again later"."""
    if failure.check(CancelledError, TransientError, PermanentError):
        return failure
    return Failure(TransientError(f"could not store the notification: {failure.getErrorMessage()}"))
