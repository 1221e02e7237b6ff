"""Retry decisions: the backoff policy, the classifier, Zulip's failed_tries rule."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.python.failure import Failure
from twisted.trial import unittest

from zqtwisted.errors import InterruptConsumeError, MalformedEventError, PermanentError, TransientError
from zqtwisted.runtime.retry import BackoffPolicy, Outcome, RetryPolicy, classify, next_attempt


class BackoffTests(unittest.TestCase):
    def test_full_jitter_within_exponential_ceiling(self) -> None:
        """The delay lies in [0, min(cap, base * 2^(n-1))]."""
        policy = BackoffPolicy(base=0.5, cap=10)
        self.assertEqual([policy.ceiling(n) for n in range(1, 7)], [0.5, 1, 2, 4, 8, 10])
        self.assertEqual(policy.delay(3, lambda: 0.5), 1.0)
        self.assertEqual(policy.delay(3, lambda: 0.0), 0.0)

    def test_huge_attempt_does_not_overflow(self) -> None:
        """A very high attempt number is capped, not an overflow."""
        self.assertEqual(BackoffPolicy(1, 60).ceiling(10_000), 60)


class ClassifyTests(unittest.TestCase):
    def test_outcomes(self) -> None:
        """Each error class maps to its outcome; unexpected ones follow retry_unexpected."""
        cases = [
            (InterruptConsumeError(), Outcome.INTERRUPT),
            (TimeoutError(), Outcome.TIMEOUT),
            (CancelledError(), Outcome.TIMEOUT),
            (MalformedEventError("x"), Outcome.MALFORMED),
            (TransientError("x"), Outcome.RETRY),
            (PermanentError("x"), Outcome.PERMANENT),
            (KeyError("x"), Outcome.PERMANENT),
        ]
        for exc, outcome in cases:
            self.assertEqual(classify(Failure(exc)), outcome, exc)
        self.assertEqual(classify(Failure(KeyError("x")), retry_unexpected=True), Outcome.RETRY)


class NextAttemptTests(unittest.TestCase):
    def test_zulip_rule(self) -> None:
        """failed_tries goes 1, 2, 3 and then the event is given up (4 attempts in all)."""
        self.assertEqual(next_attempt(None, 3), 1)
        self.assertEqual(next_attempt(2, 3), 3)
        self.assertIsNone(next_attempt(3, 3))
        self.assertIsNone(next_attempt(0, 0))

    def test_garbage_failed_tries_counts_as_zero(self) -> None:
        """A failed_tries that is not an integer counts as 0."""
        self.assertEqual(next_attempt("x", 3), 1)
        self.assertEqual(next_attempt(True, 3), 1)


class JitterFloorTests(unittest.TestCase):
    def test_floor_keeps_delay_above_a_fraction_of_the_ceiling(self) -> None:
        """With floor 0.5 (reconnects) the delay lies in [ceiling/2, ceiling]."""
        policy = BackoffPolicy(base=1.0, cap=8.0, floor=0.5)
        self.assertEqual(policy.delay(3, lambda: 0.0), 2.0)
        self.assertEqual(policy.delay(3, lambda: 1.0), 4.0)
        self.assertEqual(policy.delay(10, lambda: 1.0), 8.0)


class RetryPolicyTests(unittest.TestCase):
    def test_schedule_gives_attempt_and_delay_or_gives_up(self) -> None:
        """schedule() returns the successor's failed_tries and its delay, or None past max_retries."""
        policy = RetryPolicy(max_retries=2, backoff=BackoffPolicy(base=1.0, cap=60.0))
        self.assertEqual(policy.schedule(None, lambda: 1.0), (1, 1.0))
        self.assertEqual(policy.schedule(1, lambda: 0.5), (2, 1.0))
        self.assertIsNone(policy.schedule(2, lambda: 1.0))
