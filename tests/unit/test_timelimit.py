"""The consume time limit: per event, scaled by batch length, applied with a Clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from zqtwisted.runtime.timelimit import TimeLimit, seconds_text


class TimeLimitTests(unittest.TestCase):
    def test_limit_scales_with_events(self) -> None:
        """The deadline of a consume is the per-event limit times its number of events; None means none."""
        self.assertEqual(TimeLimit(10.0).for_events(3), 30.0)
        self.assertIsNone(TimeLimit(None).for_events(3))

    def test_apply_cancels_late_consume(self) -> None:
        """A consume still running at its deadline is cancelled and fails with TimeoutError."""
        clock = Clock()
        d: Deferred[None] = Deferred()
        TimeLimit(5.0).apply(d, 2, clock)
        clock.advance(9.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        self.assertTrue(TimeLimit(5.0).expired(self.failureResultOf(d, TimeoutError)))

    def test_no_limit_sets_no_timer(self) -> None:
        """Without a limit no timer is scheduled."""
        clock = Clock()
        TimeLimit(None).apply(Deferred(), 1, clock)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_expired_only_for_timeouts(self) -> None:
        """Only a TimeoutError under a limit counts as the limit expiring."""
        self.assertFalse(TimeLimit(5.0).expired(Failure(ValueError())))
        self.assertFalse(TimeLimit(None).expired(Failure(TimeoutError())))

    def test_seconds_printed_as_zulip_does(self) -> None:
        """Whole seconds print without a decimal point, others as they are."""
        self.assertEqual((seconds_text(30.0), seconds_text(2.5)), ("30", "2.5"))
