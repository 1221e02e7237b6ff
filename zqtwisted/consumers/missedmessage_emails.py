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

The store and the unread checker are given to the worker by its build, from
the shared :class:`zqtwisted.resources.Resources` (which owns and closes them);
the worker opens the store at start (a router never does).

Zulip mode (``[zulip] database`` set): the events are Zulip's own
(``maybe_enqueue_notifications``), the pending notifications live in Zulip's table
``zerver_scheduledmessagenotificationemail``
(:mod:`zqtwisted.zulip.missedmessage_store`) and each due batch becomes the emails
Zulip's ``handle_missedmessage_emails`` builds (:mod:`zqtwisted.zulip.missed_emails`),
handed to ``email_senders``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure

from zqtwisted.config import ConfigError
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.missedmessage.events import QUEUE, queue_for_user, stored_form, validate_event
from zqtwisted.missedmessage.scheduler import BatchScheduler, BuildEmails, SchedulerOptions
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.store import PendingStore, Shard
from zqtwisted.missedmessage.unread import UNREAD_POOL, UnreadChecker, build_unread_checker
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import ConsumerSpec, Event, QueueProcessingWorker, WorkerContext
from zqtwisted.runtime.redact import redact_event
from zqtwisted.runtime.shards import shard_queue_name
from zqtwisted.zulip.missed_emails import ZulipMissedMessages
from zqtwisted.zulip.missedmessage_store import ZulipNotificationStore, validate_zulip_event
from zqtwisted.zulip.settings import ZulipSettings


class MissedMessageWorker(QueueProcessingWorker):
    """Stores notifications and sends each user's batch when it is due."""

    sharded = True

    def __init__(
        self,
        context: WorkerContext,
        *,
        settings: MissedMessageSettings,
        store: PendingStore,
        unread: UnreadChecker | None = None,
        build_emails: BuildEmails | None = None,
    ) -> None:
        """``build_emails`` (with a store over Zulip's table): Zulip mode."""
        super().__init__(context)
        self.settings = settings
        self.store = store
        self.unread = unread
        self.build_emails = build_emails
        self.scheduler: BatchScheduler | None = None
        self.shard: Shard | None = None
        self.router = False

    def validate(self, event: Event) -> Event:
        if self.build_emails is not None:
            return validate_zulip_event(event)
        return validate_event(event)

    def start(self) -> Deferred[None]:
        s, num = self.settings, self.context.worker_num
        if s.shards > 1:
            if num is None:
                self.router = True
                self.log.info(
                    "{queue}: routing events to {first}..{shards}",
                    queue=self.queue,
                    first=shard_queue_name(QUEUE, 1),
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
        scheduler = self.scheduler = BatchScheduler(
            self.context.clock,
            self.store,
            self.context.publisher.publish_json,
            SchedulerOptions.from_settings(s),
            unread=self.unread,
            shard=self.shard,
            build_emails=self.build_emails,
        )
        return self.store.open().addCallback(lambda _: scheduler.start())

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
        """Cancel the timers (the store and the unread checker belong to the shared resources)."""
        scheduler, self.scheduler = self.scheduler, None
        return scheduler.stop() if scheduler is not None else succeed(None)

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


def build_worker(context: WorkerContext, settings: MissedMessageSettings, resources: Resources) -> MissedMessageWorker:
    """The worker with the shared store and, with ``unread_url``, a checker over the ``"unread"`` pool.

    In Zulip mode: the store over Zulip's table and the emails built from Zulip's database.
    """
    zulip = resources.config.section("zulip", ZulipSettings)
    if zulip.enabled:
        database = resources.zulip_database()
        store = ZulipNotificationStore(database, settings.default_batching_period, context.clock)
        emails = ZulipMissedMessages(database, zulip, context.publisher, clock=context.clock)
        return MissedMessageWorker(context, settings=settings, store=store, build_emails=emails.build)
    unread = None
    if settings.unread_url:
        pool = resources.http_pool("unread", UNREAD_POOL)
        unread = build_unread_checker(
            resources.reactor, pool, settings.unread_url, settings.unread_timeout, settings.token()
        )
    return MissedMessageWorker(context, settings=settings, store=resources.missedmessage_store(), unread=unread)


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(
        QUEUE, MissedMessageWorker, build_worker, section="missedmessage", settings=MissedMessageSettings, sharded=True
    ),
)
