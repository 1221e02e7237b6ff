"""QueueRunner on the in-memory broker, driven by a Clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial import unittest

from tests.helpers import Harness
from zqtwisted.errors import InterruptConsumeError, MalformedEventError, PermanentError, TransientError
from zqtwisted.runtime.deadletter import EXCERPT_BYTES
from zqtwisted.runtime.worker import BatchFailures, Event, LoopQueueProcessingWorker, QueueProcessingWorker


class Recorder(QueueProcessingWorker):
    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.seen: list[Event] = []
        self.pending: list[Deferred[None]] = []
        self.hold = False
        self.fail_with: BaseException | None = None
        self.given_up: list[tuple[Event, str]] = []
        self.cancelled: list[Event] = []

    def consume(self, event: Event) -> Any:
        self.seen.append(event)
        if self.fail_with is not None:
            raise self.fail_with
        if self.hold:
            d: Deferred[None] = Deferred(lambda _: self.cancelled.append(event))
            self.pending.append(d)
            return d
        return None

    def on_give_up(self, event: Event, failure: Any, reason: str) -> None:
        self.given_up.append((event, reason))


class BatchRecorder(LoopQueueProcessingWorker):
    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.batches: list[list[Event]] = []
        self.bad: set[int] = set()

    def consume_batch(self, events: Sequence[Event]) -> Any:
        self.batches.append(list(events))
        failures = {i: PermanentError(f"bad {e['n']}") for i, e in enumerate(events) if e["n"] in self.bad}
        return BatchFailures(failures) if failures else None


class SingleEventTests(unittest.TestCase):
    def test_consumes_and_acks(self) -> None:
        """Each event reaches consume() once and is acked afterwards."""
        h = Harness(Recorder)
        h.publish({"n": 1}, {"n": 2})
        self.assertEqual(h.worker.seen, [{"n": 1}, {"n": 2}])
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.broker.messages("q"), [])

    def test_deferred_result_acks_only_when_it_fires(self) -> None:
        """An event is acked when its Deferred fires, not before."""
        h = Harness(Recorder)
        h.worker.hold = True
        h.publish({"n": 1})
        self.assertEqual(h.broker.unacked("q"), 1)
        h.worker.pending[0].callback(None)
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_coroutine_consumer(self) -> None:
        """A consume() written as a coroutine is awaited like a Deferred."""

        class Async(QueueProcessingWorker):
            waiter: Deferred[None] = Deferred()

            async def consume(self, event: Event) -> None:
                await self.waiter

        h = Harness(Async)
        h.publish({"n": 1})
        self.assertEqual(h.broker.unacked("q"), 1)
        Async.waiter.callback(None)
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_concurrency_one_keeps_order(self) -> None:
        """With concurrency 1 the next event starts only after the previous one finished."""
        h = Harness(Recorder)
        h.worker.hold = True
        h.publish({"n": 1}, {"n": 2}, {"n": 3})
        self.assertEqual(h.worker.seen, [{"n": 1}])
        h.worker.pending[0].callback(None)
        self.assertEqual(h.worker.seen, [{"n": 1}, {"n": 2}])

    def test_delivery_during_a_consume_starts_after_it(self) -> None:
        """A delivery that arrives while a consume runs (a broker delivering at once) starts once that consume ended."""

        class Nesting(QueueProcessingWorker):
            def __init__(self, context: Any) -> None:
                super().__init__(context)
                self.depth = self.deepest = 0
                self.seen: list[int] = []

            def consume(self, event: Event) -> None:
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
                self.seen.append(event["n"])
                if event["n"] == 1:
                    h.publish({"n": 2})  # delivered during this consume
                self.depth -= 1

        h = Harness(Nesting)
        h.publish({"n": 1})
        self.assertEqual((h.worker.seen, h.worker.deepest), ([1, 2], 1))
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_concurrency_bounds_in_flight(self) -> None:
        """With concurrency 3, three events are in flight at once and no more."""
        h = Harness(Recorder, concurrency=3)
        h.worker.hold = True
        h.publish(*({"n": i} for i in range(10)))
        self.assertEqual(len(h.worker.pending), 3)
        self.assertEqual(h.runner.in_flight, 3)
        h.worker.pending[1].callback(None)
        self.assertEqual(len(h.worker.pending), 4)

    def test_prefetch_bounds_deliveries(self) -> None:
        """No more than prefetch deliveries are held unacked."""
        h = Harness(Recorder, prefetch=5)
        h.worker.hold = True
        h.publish(*({"n": i} for i in range(20)))
        self.assertEqual(h.broker.unacked("q"), 5)
        self.assertEqual(len(h.broker.messages("q")), 15)

    def test_interrupt_acks_silently(self) -> None:
        """InterruptConsumeError acks the event with no error file and no dead letter."""
        h = Harness(Recorder)
        h.worker.fail_with = InterruptConsumeError()
        h.publish({"n": 1})
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.dead(), [])
        self.assertEqual(h.error_lines(), [])


class RetryTests(unittest.TestCase):
    def test_transient_failure_is_republished_after_backoff(self) -> None:
        """A transient failure is re-published with failed_tries + 1 only after the backoff delay."""
        h = Harness(Recorder, rand=1.0)
        h.worker.fail_with = TransientError("try later")
        h.publish({"n": 1})
        self.assertEqual(h.broker.unacked("q"), 1)  # held while waiting
        self.assertEqual(h.waiting(), [])
        h.advance(0.99)
        self.assertEqual(h.waiting(), [])
        h.worker.fail_with = None
        h.advance(0.02)
        self.assertEqual(h.worker.seen[-1], {"n": 1, "failed_tries": 1})
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_backoff_grows_exponentially_and_is_capped(self) -> None:
        """Retry delays double per attempt (full jitter at its top here) up to the cap."""
        h = Harness(Recorder, rand=1.0, max_retries=6)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        delays = [args[1] for name, args in h.observer.calls if name == "retried"]
        for _ in range(5):
            h.advance(60)
            delays = [args[1] for name, args in h.observer.calls if name == "retried"]
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0])

    def test_retries_exhausted_go_to_failure_handler_and_dead_letter(self) -> None:
        """After max_retries the failure handler runs and the event is dead-lettered."""
        h = Harness(Recorder, rand=0.0, max_retries=3)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        for _ in range(5):
            h.advance(0)
        self.assertEqual(len(h.worker.seen), 4)  # 1 + 3 retries, as in Zulip
        self.assertEqual(h.worker.given_up, [({"n": 1, "failed_tries": 3}, "retries-exhausted")])
        [(body, headers)] = h.dead()
        self.assertEqual(json.loads(body), {"n": 1, "failed_tries": 3})
        self.assertEqual(headers["x-zq-reason"], "retries-exhausted")
        self.assertEqual(headers["x-zq-attempts"], 4)
        self.assertEqual(headers["x-zq-exception"], "TransientError")
        self.assertEqual(headers["x-zq-original-queue"], "q")
        self.assertEqual(h.broker.unacked("q"), 0)
        self.flushLoggedErrors(TransientError)

    def test_waiting_retry_frees_the_concurrency_slot(self) -> None:
        """While a retry waits, the next event is consumed."""
        h = Harness(Recorder, rand=1.0)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        h.worker.fail_with = None
        h.publish({"n": 2})
        self.assertEqual(h.worker.seen, [{"n": 1}, {"n": 2}])
        self.assertEqual(h.broker.unacked("q"), 1)

    def test_original_stays_unacked_until_successor_confirmed(self) -> None:
        """If the re-publish fails, the original is not acked and the retry is tried again."""
        h = Harness(Recorder, rand=1.0)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        h.broker.publish_error = RuntimeError("broker says no")
        h.advance(1.0)
        self.assertEqual(h.broker.unacked("q"), 1)
        h.broker.publish_error = None
        h.worker.fail_with = None
        h.advance(1.0)
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.worker.seen[-1]["failed_tries"], 1)

    def test_unexpected_exception_is_permanent_by_default(self) -> None:
        """An unexpected exception is dead-lettered at once unless retry_unexpected is set."""
        h = Harness(Recorder)
        h.worker.fail_with = ValueError("boom")
        h.publish({"n": 1})
        [(_, headers)] = h.dead()
        self.assertEqual(headers["x-zq-reason"], "permanent")
        self.assertEqual(headers["x-zq-message"], "boom")
        h2 = Harness(Recorder, retry_unexpected=True, rand=1.0)
        h2.worker.fail_with = ValueError("boom")
        h2.publish({"n": 1})
        self.assertEqual(h2.dead(), [])
        self.assertEqual(h2.observer.names().count("retried"), 1)
        self.flushLoggedErrors(ValueError)

    def test_error_file_has_zulip_format(self) -> None:
        """A give-up appends asctime, TAB, a JSON list of the events to {queue}.errors."""
        h = Harness(Recorder)
        h.worker.fail_with = PermanentError("no")
        h.publish({"n": 1, "token": "s3cret"})
        [line] = h.error_lines()
        stamp, payload = line.split("\t")
        self.assertRegex(stamp, r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
        self.assertEqual(json.loads(payload), [{"n": 1, "token": "***"}])
        self.flushLoggedErrors(PermanentError)


class TimeoutTests(unittest.TestCase):
    def test_timeout_cancels_and_dead_letters(self) -> None:
        """A consume slower than max_consume_seconds is cancelled and dead-lettered; the next one runs."""
        h = Harness(Recorder, timeout=30.0)
        h.worker.hold = True
        h.publish({"n": 1}, {"n": 2})
        h.advance(30.0)
        self.assertEqual(h.worker.cancelled, [{"n": 1}])
        [(_, headers)] = h.dead()
        self.assertEqual(headers["x-zq-reason"], "timeout")
        self.assertEqual(h.worker.seen, [{"n": 1}, {"n": 2}])
        errors = self.flushLoggedErrors()
        self.assertEqual(errors, [])

    def test_no_timeout_when_disabled(self) -> None:
        """With the timeout disabled a slow consume is left alone."""
        h = Harness(Recorder, timeout=None)
        h.worker.hold = True
        h.publish({"n": 1})
        h.advance(3600)
        self.assertEqual(h.dead(), [])
        self.assertEqual(h.broker.unacked("q"), 1)


class BadInputTests(unittest.TestCase):
    def test_malformed_bodies_are_dead_lettered_raw(self) -> None:
        """Non-JSON and non-object bodies are dead-lettered raw; an oversized one as what arrived, with its size."""
        h = Harness(Recorder, max_body_bytes=100)
        bodies = [b"\xff\xfe", b"not json", b"[1, 2]", b'"x"', b'{"big": "' + b"x" * 200 + b'"}']
        h.publish(*bodies)
        self.assertEqual(h.worker.seen, [])
        self.assertEqual([b for b, _ in h.dead()], [*bodies[:4], bodies[4][:101]])
        self.assertEqual({hd["x-zq-reason"] for _, hd in h.dead()}, {"malformed"})
        self.assertEqual(h.dead()[4][1]["x-zq-original-size"], len(bodies[4]))
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(len(h.error_lines()), 5)
        self.flushLoggedErrors(MalformedEventError)

    def test_validate_rejects_wrong_fields(self) -> None:
        """A worker's validate() raising MalformedEventError dead-letters the event with its reason."""

        class Strict(Recorder):
            def validate(self, event: Event) -> Event:
                if not isinstance(event.get("id"), int):
                    raise MalformedEventError("id must be an integer")
                return event

        h = Harness(Strict)
        h.publish({"id": "x"}, {"id": 1})
        self.assertEqual(h.worker.seen, [{"id": 1}])
        [(_, headers)] = h.dead()
        self.assertEqual(headers["x-zq-message"], "id must be an integer")
        self.flushLoggedErrors(MalformedEventError)


class BuggyValidateTests(unittest.TestCase):
    def test_validate_crashing_dead_letters_the_event(self) -> None:
        """A validate() that raises something unexpected dead-letters the event instead of holding it."""

        class Buggy(Recorder):
            def validate(self, event: Event) -> Event:
                return {"n": event["missing"]}

        h = Harness(Buggy)
        h.publish({"n": 1})
        [(_, headers)] = h.dead()
        self.assertEqual((headers["x-zq-reason"], headers["x-zq-exception"]), ("malformed", "KeyError"))
        self.assertEqual(h.broker.unacked("q"), 0)


class BatchTests(unittest.TestCase):
    def test_flush_by_size(self) -> None:
        """A batch flushes as soon as batch_size events are held, with one multiple-ack."""
        h = Harness(BatchRecorder, batch_size=3, sleep_delay=1.0, prefetch=10)
        h.publish(*({"n": i} for i in range(3)))
        self.assertEqual(h.worker.batches, [[{"n": 0}, {"n": 1}, {"n": 2}]])
        channel = h.broker.sessions[0].channels[0]
        self.assertEqual(channel.ack_calls, [(3, True)])

    def test_flush_by_timer(self) -> None:
        """Fewer than batch_size events flush sleep_delay seconds after the first was held."""
        h = Harness(BatchRecorder, batch_size=100, sleep_delay=1.0)
        h.publish({"n": 1})
        h.advance(0.5)
        h.publish({"n": 2})
        self.assertEqual(h.worker.batches, [])
        h.advance(0.5)
        self.assertEqual(h.worker.batches, [[{"n": 1}, {"n": 2}]])
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_one_bad_event_does_not_fail_the_others(self) -> None:
        """A failed event of a batch is dead-lettered alone; the others are acked."""
        h = Harness(BatchRecorder, batch_size=3, prefetch=10)
        h.worker.bad = {1}
        h.publish(*({"n": i} for i in range(3)))
        self.assertEqual([json.loads(b) for b, _ in h.dead()], [{"n": 1}])
        self.assertEqual(h.broker.unacked("q"), 0)
        channel = h.broker.sessions[0].channels[0]
        self.assertNotIn((3, True), channel.ack_calls)
        self.flushLoggedErrors(PermanentError)

    def test_batch_timeout_scales_with_length(self) -> None:
        """A batch's deadline is max_consume_seconds times its length."""

        class Slow(LoopQueueProcessingWorker):
            def consume_batch(self, events: Sequence[Event]) -> Deferred[None]:
                return Deferred()

        h = Harness(Slow, batch_size=2, timeout=10.0, prefetch=10)
        h.publish({"n": 1}, {"n": 2})
        h.advance(19)
        self.assertEqual(h.dead(), [])
        h.advance(1)
        self.assertEqual(len(h.dead()), 2)


class ConnectionLossTests(unittest.TestCase):
    def test_no_ack_on_dead_channel_and_redelivery(self) -> None:
        """After a connection drop, an in-flight event is not acked on the old channel and comes back."""
        h = Harness(Recorder)
        h.worker.hold = True
        h.publish({"n": 1})
        old_channel = h.broker.sessions[0].channels[0]
        h.broker.disconnect()
        self.assertFalse(h.runner.attached)
        h.worker.pending[0].callback(None)  # finishes on a dead channel
        self.assertEqual(old_channel.ack_calls, [])
        h.broker.connect()
        h.broker.flush()
        self.assertTrue(h.runner.attached)
        self.assertEqual(h.worker.seen, [{"n": 1}, {"n": 1}])

    def test_waiting_retry_is_dropped_with_its_channel(self) -> None:
        """A retry waiting when the channel dies is cancelled; the broker redelivers the original."""
        h = Harness(Recorder, rand=1.0)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        h.broker.disconnect()
        h.advance(5)
        self.assertEqual([q for q, _, _ in h.broker.published if q == "q"], ["q"])  # only the original
        self.assertEqual(h.waiting(), [{"n": 1}])


class StopTests(unittest.TestCase):
    def test_stop_drains_in_flight_and_requeues_waiting(self) -> None:
        """Stopping waits for in-flight events, acks them and requeues the rest."""
        h = Harness(Recorder, prefetch=10)
        h.worker.hold = True
        h.publish({"n": 1}, {"n": 2}, {"n": 3})
        stopped = h.runner.stop(30.0)
        h.broker.flush()
        self.assertNoResult(stopped)
        self.assertEqual(h.waiting(), [{"n": 2}, {"n": 3}])
        h.worker.pending[0].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(h.broker.unacked("q"), 0)

    def test_drain_timeout_requeues_and_cancels(self) -> None:
        """After the drain timeout, in-flight events are requeued and their consume cancelled."""
        h = Harness(Recorder, timeout=None)
        h.worker.hold = True
        h.publish({"n": 1})
        stopped = h.runner.stop(30.0)
        h.advance(30.0)
        self.successResultOf(stopped)
        self.assertEqual(h.waiting(), [{"n": 1}])
        self.assertEqual(h.worker.cancelled, [{"n": 1}])
        self.assertEqual(h.dead(), [])

    def test_stop_flushes_held_batch(self) -> None:
        """Stopping flushes a held batch instead of waiting for its timer."""
        h = Harness(BatchRecorder, batch_size=100, sleep_delay=1.0)
        h.publish({"n": 1})
        stopped = h.runner.stop(30.0)
        self.successResultOf(stopped)
        self.assertEqual(h.worker.batches, [[{"n": 1}]])

    def test_stop_cancels_retry_timers_and_requeues(self) -> None:
        """A waiting retry is cancelled on stop and its delivery returns to the queue."""
        h = Harness(Recorder, rand=1.0)
        h.worker.fail_with = TransientError("down")
        h.publish({"n": 1})
        self.successResultOf(h.runner.stop(30.0))
        h.broker.flush()
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.waiting(), [{"n": 1}])


class GeneratedBodyTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        bodies=st.lists(
            st.one_of(
                st.binary(max_size=300),
                st.text(max_size=100).map(str.encode),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children),
                    max_leaves=10,
                ).map(lambda v: json.dumps(v).encode()),
            ),
            max_size=20,
        )
    )
    def test_any_body_is_consumed_or_dead_lettered(self, bodies: list[bytes]) -> None:
        """Whatever the bodies, each is consumed or dead-lettered, all are acked, nothing crashes."""
        h = Harness(Recorder, max_body_bytes=200)
        h.publish(*bodies)
        self.assertEqual(len(h.worker.seen) + len(h.dead()), len(bodies))
        for body, headers in h.dead():
            self.assertEqual(headers["x-zq-reason"], "malformed", body)
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.broker.messages("q"), [])
        self.flushLoggedErrors()


def pika_encoding(h: Harness[Any]) -> None:
    """Make the harness's broker refuse headers pika cannot encode, as the real one does (struct.error)."""
    import pika.data
    from twisted.internet.defer import fail

    real = h.broker.publish

    def publish(queue: str, body: bytes, headers: Any = None, timeout: float | None = None) -> Deferred[None]:
        try:
            pika.data.encode_table([], dict(headers or {}))
        except Exception as e:  # noqa: BLE001 - what pika raises before sending
            return fail(e)
        return real(queue, body, headers, timeout)

    h.broker.publish = publish  # type: ignore[method-assign]


class PoisonTests(unittest.TestCase):
    def test_huge_failed_tries_is_dead_lettered_once(self) -> None:
        """Defect 1: failed_tries = 2**63-1 on a failing event ends in .failed after one attempt (no loop)."""

        class Transient(Recorder):
            def consume(self, event: Event) -> None:
                raise TransientError("bot unreachable")

        h = Harness(Transient)
        pika_encoding(h)
        h.publish({"id": 1, "failed_tries": 2**63 - 1}, {"id": 2, "failed_tries": 10**30})
        h.advance(120)
        dead = h.dead()
        self.assertEqual(len(dead), 2)
        self.assertEqual({hd["x-zq-reason"] for _, hd in dead}, {"retries-exhausted"})
        self.assertTrue(all(hd["x-zq-attempts"] < 2**31 for _, hd in dead))
        self.assertEqual((h.broker.unacked("q"), h.waiting()), (0, []))
        self.flushLoggedErrors(TransientError)

    def test_negative_or_non_integer_failed_tries_is_malformed(self) -> None:
        """Defect 1: failed_tries of -1000000 (a million retries) or a string is malformed: dead-lettered at once."""
        h = Harness(Recorder)
        h.publish({"id": 1, "failed_tries": -1_000_000}, {"id": 2, "failed_tries": "3"}, {"id": 3, "failed_tries": 2})
        self.assertEqual([e["id"] for e in h.worker.seen], [3])
        self.assertEqual([hd["x-zq-reason"] for _, hd in h.dead()], ["malformed", "malformed"])
        self.assertIn("failed_tries", h.dead()[0][1]["x-zq-message"])

    def test_unencodable_dead_letter_still_ends_the_event(self) -> None:
        """A dead letter that cannot be encoded is acked once the error file has it, never requeued forever."""
        import struct

        from twisted.internet.defer import fail

        h = Harness(Recorder)
        h.broker.publish = lambda *args, **kwargs: fail(struct.error("argument out of range"))  # type: ignore[method-assign]
        h.publish(b"not json", b'{"id": 1, "x": 1e999}')
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(h.waiting(), [])
        self.assertEqual(len(h.error_lines()), 1)
        self.assertEqual(h.worker.seen, [{"id": 1, "x": float("inf")}])
        self.flushLoggedErrors(MalformedEventError)


class MalformedStatsTests(unittest.TestCase):
    def test_malformed_consumes_are_counted(self) -> None:
        """Item 4: a malformed event is a consume for the stats (started, consumed with 0 events, then idle)."""
        h = Harness(Recorder)
        h.publish(b"{oops")
        h.advance(0)
        names = [n for n in h.observer.names() if n != "attached"]
        self.assertEqual(names[:2], ["consume_started", "consumed"])
        self.assertIn(("consumed", ("q", 0, 0.0)), h.observer.calls)
        self.assertIn("idle", names)


class HugeBodyTests(unittest.TestCase):
    """Defect 6: a body refused as too large is dead-lettered as a bounded excerpt, and nothing holds on to it."""

    def test_a_huge_body_is_dead_lettered_as_an_excerpt_with_its_size(self) -> None:
        """The dead letter holds the first EXCERPT_BYTES of what arrived and x-zq-original-size; the event is acked."""
        h = Harness(Recorder, max_body_bytes=100_000)
        body = b'{"id": 1, "pad": "' + b"x" * 3_000_000 + b'"}'
        events: list[dict[str, Any]] = []
        h.runner.log = Logger(observer=cast(ILogObserver, events.append))
        h.publish(body)
        [(letter, headers)] = h.dead()
        self.assertEqual(letter, body[:EXCERPT_BYTES])
        self.assertEqual(headers["x-zq-original-size"], len(body))
        self.assertEqual(headers["x-zq-message"], f"body of {len(body)} bytes exceeds the limit of 100000")
        self.assertEqual(h.broker.unacked("q"), 0)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [f"Malformed event on q ({len(body)} bytes): body of {len(body)} bytes exceeds the limit of 100000"],
        )
        [line] = h.error_lines()
        self.assertLess(len(line), 2000)

    def test_a_malformed_event_leaves_no_frames_behind(self) -> None:
        """The failure handed on has no traceback nor context (whose frames, or a JSONDecodeError, hold the body)."""
        h = Harness(Recorder)
        given_up: list[Any] = []
        give_up = h.runner._settler.give_up

        def spy(group: Any, verdict: Any) -> None:
            given_up.extend(failure for _, failure in group)
            give_up(group, verdict)

        h.runner._settler.give_up = spy  # type: ignore[method-assign]
        events: list[dict[str, Any]] = []
        h.runner.log = Logger(observer=cast(ILogObserver, events.append))
        h.publish(b'{"text": "' + b"y" * 10_000, b'{"failed_tries": -1}')
        self.assertEqual(len(given_up), 2)
        for failure in given_up:
            self.assertIsNone(failure.tb)
            self.assertIsNone(failure.value.__traceback__)
            self.assertIsNone(failure.value.__context__)
        self.assertTrue(all(isinstance(e["error"], str) for e in events))
