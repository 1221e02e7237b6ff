"""The runner's pure core: verdicts from a failure, failed_tries and the retry policy; no Deferreds."""

from __future__ import annotations

from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure
from twisted.trial import unittest

from zqtwisted.errors import InterruptConsumeError, MalformedEventError, PermanentError, TransientError
from zqtwisted.runtime.consumer import BatchFailures
from zqtwisted.runtime.decisions import MALFORMED, Action, Verdict, attempts_of, decide, failures_of
from zqtwisted.runtime.retry import BackoffPolicy, Outcome, RetryPolicy

POLICY = RetryPolicy(max_retries=3, backoff=BackoffPolicy(base=1.0, cap=60.0))


def top() -> float:
    return 1.0


class DecideTests(unittest.TestCase):
    def test_transient_failure_is_retried_with_backoff(self) -> None:
        """A transient failure is retried with failed_tries + 1 after the backoff ceiling (jitter at its top)."""
        verdict = decide(Failure(TransientError("x")), 1, POLICY, top)
        self.assertEqual(verdict, Verdict(Action.RETRY, Outcome.RETRY, attempt=2, delay=2.0))

    def test_retries_exhausted_dead_letters(self) -> None:
        """Past max_retries a transient failure is dead-lettered as retries-exhausted."""
        verdict = decide(Failure(TransientError("x")), 3, POLICY, top)
        self.assertEqual((verdict.action, verdict.reason), (Action.DEAD_LETTER, "retries-exhausted"))

    def test_unavailable_dependency_is_retried_without_counting(self) -> None:
        """A DependencyUnavailable is retried however many tries were made, failed_tries unchanged."""
        from zqtwisted.errors import DependencyUnavailable

        for tries in (None, 0, 3, 10):
            verdict = decide(Failure(DependencyUnavailable("db down")), tries, POLICY, top)
            self.assertEqual((verdict.action, verdict.attempt), (Action.RETRY, tries or 0))
            self.assertGreater(verdict.delay, 0)

    def test_permanent_timeout_malformed_dead_letter_at_once(self) -> None:
        """Permanent errors, time-outs and malformed events are dead-lettered on the first failure."""
        cases = [
            (PermanentError("x"), "permanent"),
            (TimeoutError(), "timeout"),
            (MalformedEventError("x"), "malformed"),
        ]
        for exc, reason in cases:
            verdict = decide(Failure(exc), None, POLICY, top)
            self.assertEqual((verdict.action, verdict.reason), (Action.DEAD_LETTER, reason), exc)
        self.assertEqual(MALFORMED.reason, "malformed")

    def test_interrupt_is_acked_and_not_counted(self) -> None:
        """InterruptConsumeError is acked and is not reported as a failure."""
        verdict = decide(Failure(InterruptConsumeError()), None, POLICY, top)
        self.assertEqual(verdict.action, Action.ACK)
        self.assertFalse(verdict.counts_as_failure)

    def test_unexpected_errors_follow_retry_unexpected(self) -> None:
        """An unexpected exception is permanent unless the policy retries unexpected errors."""
        self.assertEqual(decide(Failure(KeyError("k")), None, POLICY, top).action, Action.DEAD_LETTER)
        policy = RetryPolicy(3, BackoffPolicy(), retry_unexpected=True)
        self.assertEqual(decide(Failure(KeyError("k")), None, policy, top).action, Action.RETRY)


class FailuresOfTests(unittest.TestCase):
    def test_plain_value_is_success(self) -> None:
        """Any result that is neither a Failure nor BatchFailures means every event succeeded."""
        self.assertIsNone(failures_of(None, 3))
        self.assertIsNone(failures_of({"ok": True}, 1))

    def test_failure_fails_every_event(self) -> None:
        """A Failure fails each event of the consume."""
        failure = Failure(PermanentError("x"))
        self.assertEqual(failures_of(failure, 2), [(0, failure), (1, failure)])

    def test_batch_failures_name_events_in_range(self) -> None:
        """BatchFailures fail only the named events, in index order; out-of-range indexes are ignored."""
        result = failures_of(BatchFailures({2: ValueError("b"), 0: ValueError("a"), 9: ValueError("z")}), 3)
        assert result is not None
        self.assertEqual([(i, str(f.value)) for i, f in result], [(0, "a"), (2, "b")])


class AttemptsTests(unittest.TestCase):
    def test_attempts_count_this_one(self) -> None:
        """attempts is failed_tries + 1, with garbage counting as 0."""
        self.assertEqual([attempts_of(None), attempts_of(3), attempts_of("x"), attempts_of(True)], [1, 4, 1, 1])
