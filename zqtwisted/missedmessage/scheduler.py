"""One timer per user's due batch: store, wait, claim, check, publish, delete.

- :meth:`BatchScheduler.add` stores a notification (the Deferred fires once the
  row is committed) and makes sure the user's timer fires when their batch is
  due.  The due time is anchored at the user's first pending notification: a
  later notification joins the batch and never postpones it.
- :meth:`BatchScheduler.start` rebuilds the timers from the store; batches that
  fell due while the process was down go out at once.
- When a timer fires, the user's due rows are claimed, optionally filtered by
  the "still unread?" check, grouped into one email per conversation, each email
  published to ``email_senders`` (confirmed), and only then are the rows
  deleted.  A crash in between re-sends a batch, it never loses one.
- A failure is logged with Zulip's line ``Failed to process {n}
  missedmessage_emails for user {id}``, the claim is released and the user's
  batch is tried again after an exponential backoff; other users are not held up.

No polling: the only timers are the users' ``callLater`` (plus an optional
rescan, off by default).

Zulip mode gives a store over Zulip's own table and ``build_emails`` (Zulip's
``handle_missedmessage_emails`` over its database); a batch that fails with a
:class:`~zqtwisted.errors.PermanentError` is logged and dropped, as Zulip drops it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import PermanentError
from zqtwisted.missedmessage.events import stored_form
from zqtwisted.missedmessage.grouping import EmailOptions, build_email_events
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.store import PendingRow, PendingStore, Shard
from zqtwisted.missedmessage.unread import UnreadChecker
from zqtwisted.runtime.retry import BackoffPolicy

Publish = Callable[[str, Mapping[str, Any]], Deferred[None]]
# Zulip mode: (user id, the due notifications) -> the email events (built from Zulip's database).
BuildEmails = Callable[[int, list[Mapping[str, Any]]], Deferred[list[dict[str, Any]]]]

FAILURE_LOG = "Failed to process {count} missedmessage_emails for user {user_profile_id}"


@dataclass(frozen=True)
class SchedulerOptions:
    default_period: float = 120.0
    claim_timeout: float = 300.0
    retry: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(1.0, 300.0))
    rescan_interval: float = 0.0
    stop_timeout: float = 10.0
    email_queue: str = "email_senders"
    email: EmailOptions = field(default_factory=EmailOptions)

    @classmethod
    def from_settings(cls, s: MissedMessageSettings) -> SchedulerOptions:
        return cls(
            default_period=s.default_batching_period,
            claim_timeout=s.claim_timeout,
            retry=BackoffPolicy(s.retry_base, s.retry_cap),
            rescan_interval=s.rescan_interval,
            stop_timeout=s.stop_timeout,
            email_queue=s.email_queue,
            email=EmailOptions(s.template_prefix, s.from_name, s.from_address),
        )


class BatchScheduler:
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: PendingStore,
        publish: Publish,
        options: SchedulerOptions | None = None,
        *,
        unread: UnreadChecker | None = None,
        shard: Shard | None = None,
        make_token: Callable[[], str] = lambda: uuid.uuid4().hex,
        build_emails: BuildEmails | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.publish = publish
        self.options = options or SchedulerOptions()
        self.unread = unread
        self.shard = shard
        self._make_token = make_token
        self.build_emails = build_emails
        self._timers: dict[int, IDelayedCall] = {}
        self._running: dict[int, Deferred[None]] = {}
        # Due times asked for while the user's batch was being sent.
        self._wanted: dict[int, float] = {}
        self._attempts: dict[int, int] = {}
        self._not_before: dict[int, float] = {}
        self._rescan: IDelayedCall | None = None
        self._stopping = False

    # -- public ------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Rebuild every owned user's timer from the store."""
        self._stopping = False
        return Deferred.fromCoroutine(self._start())

    def add(self, event: Mapping[str, Any]) -> Deferred[None]:
        """Store a validated notification; fires once it is committed and its timer set."""
        return Deferred.fromCoroutine(self._add(event))

    def due_at(self, user_profile_id: int) -> float | None:
        """When the user's timer fires (None without a timer)."""
        timer = self._timers.get(user_profile_id)
        return timer.getTime() if timer is not None and timer.active() else None

    def sending(self) -> Deferred[None]:
        """Fires when no batch is being sent (for tests and shutdown)."""
        running = list(self._running.values())
        if not running:
            return succeed(None)
        return DeferredList(running, consumeErrors=True).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Cancel every timer; batches being sent get ``stop_timeout`` to finish."""
        self._stopping = True
        if self._rescan is not None and self._rescan.active():
            self._rescan.cancel()
        self._rescan = None
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()
        running = list(self._running.values())
        if not running:
            return succeed(None)
        self.log.info("Waiting for {n} missed-message batches being sent", n=len(running))

        def cancel_all() -> None:
            for d in running:
                d.cancel()

        deadline = self.clock.callLater(self.options.stop_timeout, cancel_all)
        done = self.sending()

        def finished(_: object) -> None:
            if deadline.active():
                deadline.cancel()

        return done.addCallback(finished)

    # -- storing ------------------------------------------------------------------------

    async def _add(self, event: Mapping[str, Any]) -> None:
        user = int(event["user_profile_id"])
        # Zulip mode's events carry no "user": its store reads the user's period from Zulip's database.
        period = (event.get("user") or {}).get("batching_period_seconds")
        if period is None:
            period = self.options.default_period
        when = await self.store.add(stored_form(event), self.clock.seconds(), float(period))
        if when is not None:
            self.schedule(user, when)

    async def _start(self) -> None:
        times = await self.store.due_times(self.shard)
        now = self.clock.seconds()
        for user, when in times.items():
            self.schedule(user, when)
        overdue = sum(1 for when in times.values() if when <= now)
        self.log.info(
            "missedmessage_emails: {n} users with pending notifications ({overdue} overdue)",
            n=len(times),
            overdue=overdue,
        )
        self._schedule_rescan()

    def _schedule_rescan(self) -> None:
        if self.options.rescan_interval > 0 and not self._stopping:
            self._rescan = self.clock.callLater(self.options.rescan_interval, self._do_rescan)

    def _do_rescan(self) -> None:
        self._rescan = None

        def failed(failure: Failure) -> None:
            self.log.failure("Could not read the pending missed-message batches", failure)
            self._schedule_rescan()

        Deferred.fromCoroutine(self._start()).addErrback(failed)

    # -- timers -------------------------------------------------------------------------

    def schedule(self, user: int, when: float) -> None:
        """Make the user's timer fire at ``when`` at the latest (never after a backoff ends)."""
        if self._stopping:
            return
        not_before = self._not_before.get(user)
        if not_before is not None:
            when = max(when, not_before)
        if user in self._running:
            self._wanted[user] = min(when, self._wanted.get(user, when))
            return
        timer = self._timers.get(user)
        if timer is not None and timer.active():
            if timer.getTime() <= when:
                return
            timer.cancel()
        self._timers[user] = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._fire, user)

    def _fire(self, user: int) -> None:
        self._timers.pop(user, None)
        if self._stopping or user in self._running:
            return
        d = Deferred.fromCoroutine(self._run(user))
        self._running[user] = d

        def done(result: object) -> None:
            self._running.pop(user, None)
            if isinstance(result, Failure) and not result.check(CancelledError):
                self.log.failure("Unexpected error in the missed-message scheduler", result)
            wanted = self._wanted.pop(user, None)
            if wanted is not None:
                self.schedule(user, wanted)

        d.addBoth(done)

    # -- sending -----------------------------------------------------------------------

    async def _run(self, user: int) -> None:
        token = self._make_token()
        now = self.clock.seconds()
        count = 0
        try:
            rows = await self.store.claim(user, now, now + self.options.claim_timeout, token)
            count = len({row.message_id for row in rows})
            if rows:
                await self._send(user, rows, token)
                self._attempts.pop(user, None)
                self._not_before.pop(user, None)
            else:
                # Held by another worker, or just sent: look again, but not in a tight loop.
                self._not_before[user] = now + self.options.retry.base
        except CancelledError:
            self._release(token)
            raise
        except PermanentError:
            # Will never succeed (a user that no longer exists...): logged and dropped, as Zulip does.
            self.log.failure(FAILURE_LOG, count=count, user_profile_id=user)
            await self._drop(token)
        except Exception:  # noqa: BLE001 - one user's failure must not stop the others
            attempt = self._attempts[user] = self._attempts.get(user, 0) + 1
            delay = self.options.retry.ceiling(attempt)
            self._not_before[user] = self.clock.seconds() + delay
            self.log.failure(FAILURE_LOG, count=count, user_profile_id=user, attempt=attempt, retry_in=delay)
            await self._release(token)
        if not self._stopping:
            await self._reschedule(user)

    async def _send(self, user: int, rows: list[PendingRow], token: str) -> None:
        events = [row.event for row in rows]
        message_ids = sorted({row.message_id for row in rows})
        self.log.info(
            "Batch-processing {count} missedmessage_emails events for user {user_profile_id}",
            count=len(message_ids),
            user_profile_id=user,
        )
        if self.build_emails is not None:
            emails = await self.build_emails(user, list(events))
            for email in emails:
                await self.publish(self.options.email_queue, email)
            await self.store.delete(token)
            self.log.info("Sent {emails} missed-message emails for user {user_profile_id}", emails=len(emails),
                          user_profile_id=user)  # fmt: skip
            return
        if self.unread is not None:
            unread = await self.unread.unread(user, message_ids)
            events = [e for e in events if int(e["message_id"]) in unread]
        emails = build_email_events(events, self.options.email)
        for email in emails:
            await self.publish(self.options.email_queue, email)
        await self.store.delete(token)
        self.log.info(
            "Sent {emails} missed-message emails ({dropped} messages read meanwhile) for user {user_profile_id}",
            emails=len(emails),
            dropped=len(message_ids) - len({int(e["message_id"]) for e in events}),
            user_profile_id=user,
        )

    async def _reschedule(self, user: int) -> None:
        try:
            when = await self.store.next_due(user)
        except Exception:  # noqa: BLE001 - the batch stays stored; look again after a backoff
            attempt = self._attempts[user] = self._attempts.get(user, 0) + 1
            delay = self.options.retry.ceiling(attempt)
            self._not_before[user] = self.clock.seconds() + delay
            self.log.failure("Could not read the pending batch of user {user_profile_id}", user_profile_id=user)
            when = self.clock.seconds()
        if when is None:
            self._attempts.pop(user, None)
            self._not_before.pop(user, None)
            return
        self.schedule(user, when)

    def _drop(self, token: str) -> Deferred[None]:
        """Delete a batch that can never be sent (never fails: on error the batch is retried later)."""

        def failed(failure: Failure) -> None:
            self.log.warn("Could not delete a failed missed-message batch: {error}", error=failure.getErrorMessage())
            self._release(token)

        return self.store.delete(token).addCallbacks(lambda _: None, failed)

    def _release(self, token: str) -> Deferred[None]:
        """Give the claim back (never fails: an unreleased claim expires by itself)."""

        def failed(failure: Failure) -> None:
            self.log.warn(
                "Could not release a missed-message claim ({error}); it expires by itself",
                error=failure.getErrorMessage(),
            )

        return self.store.release(token).addErrback(failed)
