"""AckTracker: multiple-acks only where they are exact; publish deadlines; the size of a cut body."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.runtime.broker import (
    ORIGINAL_SIZE,
    AckTracker,
    BrokerUnavailable,
    Delivery,
    PublishDeadline,
    PublishTimeout,
    body_size,
)


class AckTrackerTests(unittest.TestCase):
    def tracker(self, *tags: int) -> AckTracker:
        t = AckTracker()
        for tag in tags:
            t.delivered(tag)
        return t

    def test_contiguous_lowest_tags_use_one_multiple_ack(self) -> None:
        """Acking exactly the lowest outstanding tags is one multiple-ack of the highest."""
        t = self.tracker(1, 2, 3, 4)
        self.assertEqual(t.settle([1, 2, 3]), [(3, True)])
        self.assertEqual(len(t), 1)

    def test_gap_held_elsewhere_forces_single_acks(self) -> None:
        """If a lower tag is held elsewhere (a waiting retry), each tag is acked alone."""
        t = self.tracker(1, 2, 3, 4)
        self.assertEqual(t.settle([2, 3]), [(2, False), (3, False)])
        self.assertEqual(t.settle([1]), [(1, False)])
        self.assertEqual(t.settle([4]), [(4, False)])
        self.assertEqual(len(t), 0)

    def test_unknown_tags_are_ignored(self) -> None:
        """Tags not outstanding (already settled) produce no ack."""
        t = self.tracker(5)
        self.assertEqual(t.settle([4, 5]), [(5, False)])
        self.assertEqual(t.settle([5]), [])
        self.assertFalse(t.forget(5))


class BlockedSession:
    node = "mq:5672"
    blocked: str | None = "low on disk"


class PublishDeadlineTests(unittest.TestCase):
    def expire(self, sending: bool, session: Any = None) -> str:
        clock = Clock()
        deadline = PublishDeadline(2.0)
        deadline.sending, deadline.session = sending, session
        d: Deferred[None] = deadline.apply(Deferred(), clock)
        clock.advance(2.0)
        failure = self.failureResultOf(d, BrokerUnavailable, PublishTimeout)
        return f"{failure.type.__name__}: {failure.getErrorMessage()}"

    def test_what_a_missed_deadline_says(self) -> None:
        """No session: BrokerUnavailable; sent: PublishTimeout, naming the broker's block when there is one."""
        self.assertEqual(self.expire(False), "BrokerUnavailable: no broker connection within 2s")
        self.assertEqual(self.expire(True), "PublishTimeout: publish not confirmed within 2s")
        self.assertEqual(
            self.expire(True, BlockedSession()),
            "PublishTimeout: publish not confirmed within 2s: RabbitMQ at mq:5672 blocks publishing (low on disk)",
        )


class BodySizeTests(unittest.TestCase):
    def test_the_size_as_published(self) -> None:
        """A cut body's size is its header's; otherwise (or for a nonsensical header) its length."""
        channel: Any = None

        def size(body: bytes, headers: dict[str, Any]) -> int:
            return body_size(Delivery("q", body, 1, channel, headers=headers))

        self.assertEqual(size(b"abc", {}), 3)
        self.assertEqual(size(b"abc", {ORIGINAL_SIZE: 50_000_000}), 50_000_000)
        for bogus in (2, True, "9", None):
            self.assertEqual(size(b"abc", {ORIGINAL_SIZE: bogus}), 3)
