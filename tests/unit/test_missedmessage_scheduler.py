"""The batch scheduler on a Clock: due times, joining, independence, failures, restart, unread filter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial import unittest

from tests.missedmessage_fixtures import FakePublisher, private_event, stream_event
from zqtwisted.missedmessage.scheduler import BatchScheduler, SchedulerOptions
from zqtwisted.missedmessage.store import MemoryStore, PendingStore, Shard
from zqtwisted.runtime.retry import BackoffPolicy

HAMLET, IAGO = "hamlet@example.com", "iago@example.com"


class FakeUnread:
    """Answers the unread check from a set of read ids, or fails."""

    def __init__(self, read: set[int] | None = None) -> None:
        self.read = read or set()
        self.asked: list[tuple[int, list[int]]] = []
        self.error: Exception | None = None

    def unread(self, user_profile_id: int, message_ids: Sequence[int]) -> Deferred[set[int]]:
        self.asked.append((user_profile_id, list(message_ids)))
        if self.error is not None:
            return fail(self.error)
        return succeed(set(message_ids) - self.read)

    def close(self) -> Deferred[None]:
        return succeed(None)


def messages_of(email: dict[str, Any]) -> list[str]:
    return [m["content"] for c in email["context"]["conversations"] for m in c["messages"]]


class SchedulerCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000)
        self.store: PendingStore = MemoryStore()
        self.successResultOf(self.store.open())
        self.publisher = FakePublisher()
        self.logged: list[dict[str, Any]] = []

    def started(self, **options: Any) -> BatchScheduler:
        unread = options.pop("unread", None)
        scheduler = BatchScheduler(
            self.clock, self.store, self.publisher.publish_json, SchedulerOptions(**options), unread=unread
        )
        scheduler.log = Logger(observer=cast(ILogObserver, self.logged.append))
        self.successResultOf(scheduler.start())
        self.addCleanup(scheduler.stop)
        return scheduler

    def add(self, scheduler: BatchScheduler, event: dict[str, Any]) -> None:
        self.successResultOf(scheduler.add(event))

    def emails_to(self, address: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.publisher.to("email_senders") if e["to_emails"] == [address]]

    def log_lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logged]


class DueTimeTests(SchedulerCase):
    def test_due_at_first_notification_plus_period(self) -> None:
        """The batch is due at the first notification + the batching period (default 120 s)."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        self.assertEqual(scheduler.due_at(10), 1_120)
        self.clock.advance(119.9)
        self.assertEqual(self.publisher.published, [])
        self.clock.advance(0.1)
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 1"]])
        self.assertIsNone(scheduler.due_at(10))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user_period_from_event(self) -> None:
        """user.batching_period_seconds overrides the default period."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1, period=30))
        self.assertEqual(scheduler.due_at(10), 1_030)

    def test_later_notifications_join_without_postponing(self) -> None:
        """Notifications during the batching period join the batch; the due time does not move."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(100)
        self.add(scheduler, stream_event(10, 2))
        self.add(scheduler, stream_event(10, 3, topic="Other"))
        self.assertEqual(scheduler.due_at(10), 1_120)
        self.clock.advance(20)
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 1", "message 2"], ["message 3"]])
        self.clock.advance(500)
        self.assertEqual(len(self.publisher.published), 2)

    def test_two_users_are_independent(self) -> None:
        """Each user has their own timer and batch."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(30)
        self.add(scheduler, private_event(11, 2, period=60))
        self.assertEqual((scheduler.due_at(10), scheduler.due_at(11)), (1_120, 1_090))
        self.clock.advance(60)
        self.assertEqual((len(self.emails_to(HAMLET)), len(self.emails_to(IAGO))), (0, 1))
        self.clock.advance(30)
        self.assertEqual((len(self.emails_to(HAMLET)), len(self.emails_to(IAGO))), (1, 1))

    def test_notification_while_sending_starts_next_batch(self) -> None:
        """A notification arriving while the batch is being published gets its own batch, later."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        self.publisher.hold = True
        self.clock.advance(120)
        self.add(scheduler, stream_event(10, 2))
        self.publisher.hold = False
        self.publisher.held.pop().callback(None)
        self.assertEqual(scheduler.due_at(10), 1_240)
        self.clock.advance(120)
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 1"], ["message 2"]])

    def test_emails_go_to_configured_queue(self) -> None:
        """Emails are published to email_queue with the configured template."""
        scheduler = self.started(email_queue="deferred_email_senders")
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(120)
        ((queue, email),) = self.publisher.published
        self.assertEqual(queue, "deferred_email_senders")
        self.assertEqual(email["template_prefix"], "zqtwisted/emails/missed_message")


class FailureTests(SchedulerCase):
    def test_failure_logged_retried_and_others_unaffected(self) -> None:
        """A failing user is logged with Zulip's line and retried with backoff; others are sent."""
        scheduler = self.started(retry=BackoffPolicy(1.0, 4.0))
        self.add(scheduler, stream_event(10, 1))
        self.add(scheduler, stream_event(10, 2))
        self.add(scheduler, stream_event(11, 3))
        self.publisher.failing = {HAMLET}
        self.clock.advance(120)
        self.assertEqual(len(self.emails_to(IAGO)), 1)
        self.assertIn("Failed to process 2 missedmessage_emails for user 10", self.log_lines())
        self.assertEqual(scheduler.due_at(10), 1_121)
        self.clock.advance(1)
        self.assertEqual(scheduler.due_at(10), 1_123)  # backoff doubles
        self.clock.advance(2)
        self.assertEqual(scheduler.due_at(10), 1_127)
        self.clock.advance(4)
        self.assertEqual(scheduler.due_at(10), 1_131)  # capped
        self.publisher.failing = set()
        self.clock.advance(4)
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 1", "message 2"]])
        self.assertEqual(self.successResultOf(self.store.rows(10)), [])
        self.assertIsNone(scheduler.due_at(10))

    def test_delete_failure_resends_never_loses(self) -> None:
        """If the rows cannot be deleted after publishing, the batch is sent again later, not lost."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        store = self.store
        assert isinstance(store, MemoryStore)
        original = store.delete
        store.delete = lambda token: fail(OSError("disk full"))  # type: ignore[method-assign]
        self.clock.advance(120)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)
        self.assertEqual(len(self.successResultOf(store.rows(10))), 1)
        store.delete = original  # type: ignore[method-assign]
        self.clock.advance(1)
        self.assertEqual(len(self.emails_to(HAMLET)), 2)
        self.assertEqual(self.successResultOf(store.rows(10)), [])

    def test_store_failure_on_claim(self) -> None:
        """A store that fails while claiming is retried after the backoff."""
        scheduler = self.started()
        self.add(scheduler, stream_event(10, 1))
        assert isinstance(self.store, MemoryStore)
        self.store.fail_next(OSError("locked"))
        self.clock.advance(120)
        self.assertIn("Failed to process 0 missedmessage_emails for user 10", self.log_lines())
        self.clock.advance(1)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)

    def test_claim_held_elsewhere_waits_for_expiry(self) -> None:
        """A batch claimed by another worker is looked at again when the claim expires."""
        scheduler = self.started(claim_timeout=300)
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(120)
        # Another worker claims the next batch just before this one's timer fires.
        self.add(scheduler, stream_event(10, 2))
        self.successResultOf(self.store.claim(10, 1_240, 1_540, "other-worker"))
        self.clock.advance(120)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)
        self.assertEqual(scheduler.due_at(10), 1_540)
        self.clock.advance(300)
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 1"], ["message 2"]])


class UnreadTests(SchedulerCase):
    def test_read_messages_dropped(self) -> None:
        """Messages the check reports as read are left out; the rest are sent."""
        unread = FakeUnread(read={1})
        scheduler = self.started(unread=unread)
        self.add(scheduler, stream_event(10, 1))
        self.add(scheduler, stream_event(10, 2))
        self.add(scheduler, stream_event(10, 3, topic="Other"))
        self.clock.advance(120)
        self.assertEqual(unread.asked, [(10, [1, 2, 3])])
        self.assertEqual([messages_of(e) for e in self.emails_to(HAMLET)], [["message 2"], ["message 3"]])

    def test_all_read_sends_nothing_and_clears(self) -> None:
        """When everything was read, no email is sent and the rows are deleted."""
        scheduler = self.started(unread=FakeUnread(read={1}))
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(120)
        self.assertEqual(self.publisher.published, [])
        self.assertEqual(self.successResultOf(self.store.rows(10)), [])

    def test_check_failure_retries(self) -> None:
        """A failed check sends nothing now and is retried later."""
        unread = FakeUnread()
        unread.error = TimeoutError("no answer")
        scheduler = self.started(unread=unread)
        self.add(scheduler, stream_event(10, 1))
        self.clock.advance(120)
        self.assertEqual(self.publisher.published, [])
        unread.error = None
        self.clock.advance(1)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)


class LifecycleTests(SchedulerCase):
    def test_start_rebuilds_and_sends_overdue_at_once(self) -> None:
        """On start the timers come from the store; overdue batches go out at once."""
        self.successResultOf(self.store.add(stream_event(10, 1), 500.0, 120))
        self.successResultOf(self.store.add(stream_event(11, 2), 990.0, 60))
        scheduler = self.started()
        self.assertEqual((scheduler.due_at(10), scheduler.due_at(11)), (1_000, 1_050))
        self.clock.advance(0)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)
        self.clock.advance(50)
        self.assertEqual(len(self.emails_to(IAGO)), 1)

    def test_start_rebuilds_only_own_shard(self) -> None:
        """A sharded scheduler rebuilds the timers of its own users only."""
        self.successResultOf(self.store.add(stream_event(10, 1), 990.0, 120))
        self.successResultOf(self.store.add(stream_event(11, 2), 990.0, 120))
        scheduler = BatchScheduler(self.clock, self.store, self.publisher.publish_json, shard=Shard(2, 2))
        self.successResultOf(scheduler.start())
        self.addCleanup(scheduler.stop)
        self.assertEqual((scheduler.due_at(10), scheduler.due_at(11)), (None, 1_110))

    def test_stop_cancels_timers(self) -> None:
        """Stopping leaves no timer behind and sends nothing more."""
        scheduler = self.started(rescan_interval=60)
        self.add(scheduler, stream_event(10, 1))
        self.successResultOf(scheduler.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(500)
        self.assertEqual(self.publisher.published, [])
        self.assertEqual(len(self.successResultOf(self.store.rows(10))), 1)

    def test_stop_waits_for_sending_then_cancels(self) -> None:
        """Stop waits for a batch being published, up to stop_timeout, then cancels it (rows stay)."""
        scheduler = self.started(stop_timeout=5)
        self.add(scheduler, stream_event(10, 1))
        self.publisher.hold = True
        self.clock.advance(120)
        stopped = scheduler.stop()
        self.assertNoResult(stopped)
        self.clock.advance(5)
        self.successResultOf(stopped)
        rows = self.successResultOf(self.store.rows(10))
        self.assertEqual(len(rows), 1)
        self.assertEqual(self.successResultOf(self.store.next_due(10)), 1_120)  # claim released

    def test_rescan_picks_up_rows_of_others(self) -> None:
        """With rescan_interval, rows stored by another worker get a timer here too."""
        scheduler = self.started(rescan_interval=60)
        self.successResultOf(self.store.add(stream_event(10, 1), 1_000.0, 10))
        self.assertIsNone(scheduler.due_at(10))
        self.clock.advance(60)
        self.assertEqual(len(self.emails_to(HAMLET)), 1)


class RestartTests(unittest.TestCase):
    """A store that outlives its scheduler: a process stopped with pending batches, a new one started.

    The same story over a real SQLite file is in tests/integration/test_missedmessage_store.py.
    """

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(self.store.open())

    def process(self, now: float) -> tuple[BatchScheduler, Clock, FakePublisher]:
        clock, publisher = Clock(), FakePublisher()
        clock.advance(now)
        scheduler = BatchScheduler(clock, self.store, publisher.publish_json)
        self.successResultOf(scheduler.start())
        self.addCleanup(scheduler.stop)
        return scheduler, clock, publisher

    def test_restart_sends_each_batch_exactly_once(self) -> None:
        """Batches pending at stop are sent once after restart: overdue at once, the others when due."""
        scheduler, clock, publisher = self.process(1_000)
        self.successResultOf(scheduler.add(stream_event(10, 1)))
        self.successResultOf(scheduler.add(stream_event(10, 2, topic="Other")))
        self.successResultOf(scheduler.add(private_event(11, 3, period=600)))
        self.successResultOf(scheduler.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(publisher.published, [])

        # The process was down for 200 s: user 10's batch is overdue, user 11's is not yet due.
        scheduler2, clock2, publisher2 = self.process(1_200)
        self.assertEqual((scheduler2.due_at(10), scheduler2.due_at(11)), (1_200, 1_600))  # overdue: now
        clock2.advance(0)
        self.assertEqual([messages_of(dict(e)) for e in publisher2.to("email_senders")], [["message 1"], ["message 2"]])
        clock2.advance(400)
        self.assertEqual(len(publisher2.published), 3)
        self.assertEqual(publisher2.published[2][1]["to_emails"], [IAGO])
        self.successResultOf(scheduler2.stop())

        # A third start finds nothing left to send.
        scheduler3, clock3, publisher3 = self.process(5_000)
        self.assertEqual(clock3.getDelayedCalls(), [])
        self.assertEqual((scheduler3.due_at(10), scheduler3.due_at(11)), (None, None))
        self.assertEqual(publisher3.published, [])


class ZulipModeTests(SchedulerCase):
    """build_emails (Zulip mode): the batch's emails come from it; a permanent failure drops the batch."""

    def zulip_started(self, build: Any) -> BatchScheduler:
        scheduler = BatchScheduler(self.clock, self.store, self.publisher.publish_json, SchedulerOptions(),
                                   build_emails=build)  # fmt: skip
        scheduler.log = Logger(observer=cast(ILogObserver, self.logged.append))
        self.successResultOf(scheduler.start())
        self.addCleanup(scheduler.stop)
        return scheduler

    def test_built_emails_published_then_rows_deleted(self) -> None:
        """When due, the user's notifications go to build_emails and its events to email_senders."""
        asked: list[tuple[int, list[int]]] = []

        def build(user: int, events: list[Any]) -> Deferred[list[dict[str, Any]]]:
            asked.append((user, [e["message_id"] for e in events]))
            return succeed([{"to_user_ids": [user], "n": len(events)}])

        scheduler = self.zulip_started(build)
        for message in (501, 502):
            self.add(scheduler, {"user_profile_id": 10, "message_id": message, "trigger": "direct_message"})
        self.clock.advance(120)
        self.assertEqual(asked, [(10, [501, 502])])
        self.assertEqual(self.publisher.to("email_senders"), [{"to_user_ids": [10], "n": 2}])
        self.assertEqual(self.successResultOf(self.store.rows(10)), [])
        self.assertIn("Sent 1 missed-message emails for user 10", self.log_lines())

    def test_permanent_failure_drops_the_batch(self) -> None:
        """A PermanentError (the user is gone) is logged as Zulip logs it and the batch dropped, not retried."""
        from zqtwisted.errors import PermanentError

        calls: list[int] = []

        def build(user: int, events: list[Any]) -> Deferred[list[dict[str, Any]]]:
            calls.append(user)
            return fail(PermanentError("user 10 does not exist"))

        scheduler = self.zulip_started(build)
        self.add(scheduler, {"user_profile_id": 10, "message_id": 501, "trigger": "direct_message"})
        self.clock.advance(120)
        self.clock.advance(600)
        self.assertEqual(calls, [10])
        self.assertEqual(self.successResultOf(self.store.rows(10)), [])
        self.assertIn("Failed to process 1 missedmessage_emails for user 10", self.log_lines())
        self.assertEqual(self.publisher.to("email_senders"), [])

    def test_skipped_notification_sets_no_timer(self) -> None:
        """A store that skipped the notification (its message deleted) answers None: no timer."""

        class Skipping(MemoryStore):
            def add(self, event: Any, now: float, period: float) -> Deferred[float | None]:
                return succeed(None)

        self.store = Skipping()
        self.successResultOf(self.store.open())
        scheduler = self.zulip_started(lambda user, events: succeed([]))
        self.add(scheduler, {"user_profile_id": 10, "message_id": 501, "trigger": "direct_message"})
        self.assertIsNone(scheduler.due_at(10))
