"""Settlement: acks and requeues go one way, and nothing is acked before its successor or dead letter is confirmed."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from twisted.trial import unittest

from tests.helpers import Harness
from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.runtime.consumer import Event, QueueProcessingWorker


class Failing(QueueProcessingWorker):
    error: BaseException = PermanentError("no")

    def consume(self, event: Event) -> Any:
        raise self.error


class Flaky(Failing):
    error = TransientError("later")


W = TypeVar("W", bound=QueueProcessingWorker)


def publish_then_hold(h: Harness[W], event: Event) -> None:
    """Publish ``event`` (confirmed), then hold every later confirm, then deliver."""
    session = h.broker.current_session()
    assert session is not None
    session.publish("q", json.dumps(event).encode())
    h.broker.hold_confirms = True
    h.broker.flush()


class DeadLetterDeadlineTests(unittest.TestCase):
    def test_unconfirmed_dead_letter_is_requeued_not_acked(self) -> None:
        """A dead letter the broker never confirms fails at publish_timeout; the delivery goes back, unacked."""
        h = Harness(Failing, publish_timeout=5.0)
        publish_then_hold(h, {"n": 1})
        self.assertEqual(h.broker.unacked("q"), 1)
        self.assertEqual(h.runner.held, 1)
        h.clock.advance(4.9)
        self.assertEqual(h.broker.unacked("q"), 1)
        channel = h.broker.sessions[0].channels[0]
        h.broker.hold_confirms = False  # the redelivery's dead letter is confirmed
        h.advance(0.1)
        self.assertNotIn((1, False), channel.ack_calls)  # the original was requeued, never acked
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.runner.held, 0)
        self.flushLoggedErrors(PermanentError)

    def test_late_confirm_after_deadline_is_harmless(self) -> None:
        """A confirm arriving after the deadline changes nothing: the delivery was already requeued."""
        h = Harness(Failing, publish_timeout=5.0)
        publish_then_hold(h, {"n": 1})
        h.clock.advance(5.0)
        h.broker.release_confirms()
        h.broker.flush()
        self.assertGreaterEqual(len(h.dead()), 1)  # at least once: the late letter and the redelivery's
        self.assertEqual(h.broker.unacked("q"), 0)
        self.flushLoggedErrors(PermanentError)


class RetryDeadlineTests(unittest.TestCase):
    def test_unconfirmed_successor_keeps_original_unacked_and_retries(self) -> None:
        """A retry whose re-publish is never confirmed keeps the original unacked and is tried again later."""
        h = Harness(Flaky, rand=1.0, publish_timeout=5.0)
        h.publish({"n": 1})
        h.broker.hold_confirms = True
        h.advance(1.0)  # the successor is sent, not confirmed
        self.assertEqual(h.runner.held, 1)
        h.advance(5.0)  # its deadline passes: a new retry waits
        self.assertEqual(h.broker.unacked("q"), 1)
        self.assertEqual(len(h.broker.unconfirmed), 1)
        h.broker.hold_confirms = False
        h.advance(1.0)
        successors = [json.loads(b) for q, b, _ in h.broker.published if q == "q"]
        self.assertIn({"n": 1, "failed_tries": 1}, successors)


class OneWayTests(unittest.TestCase):
    def test_stop_requeues_through_the_channel(self) -> None:
        """Deliveries returned on stop go back through their channel's nack, like acks go through its ack."""
        h = Harness(Flaky, rand=1.0)
        h.publish({"n": 1})
        self.successResultOf(h.runner.stop(10.0))
        h.broker.flush()
        self.assertEqual(h.waiting(), [{"n": 1}])
        self.assertEqual(h.runner.held, 0)
