"""The consumer of one queue: flow control, batching, acks, retries, dead letters.

A :class:`QueueRunner` owns the acks of its queue.  It keeps at most
``concurrency`` consumes in flight (events, or batches for batch workers); the
broker's prefetch bounds what waits locally.  Every consume has a deadline.  A
failed event is retried with backoff (the delivery stays unacked until its
successor is confirmed) or dead-lettered (acked only once the dead letter is
confirmed).  Nothing is dropped.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from inspect import iscoroutine
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import MalformedEventError
from zqtwisted.runtime.broker import Broker, BrokerSession, ConsumerChannel, Delivery
from zqtwisted.runtime.deadletter import H_FIRST, DeadLetter, DeadLetterer, iso_time
from zqtwisted.runtime.observer import NullObserver, RunnerObserver
from zqtwisted.runtime.redact import redact_event
from zqtwisted.runtime.retry import Outcome, classify, next_attempt
from zqtwisted.runtime.runner_settings import RunnerSettings
from zqtwisted.runtime.worker import BatchFailures, LoopQueueProcessingWorker, QueueProcessingWorker, QueueWorker

REATTACH_DELAY = 1.0

REASONS = {
    Outcome.RETRY: "retries-exhausted",
    Outcome.PERMANENT: "permanent",
    Outcome.TIMEOUT: "timeout",
    Outcome.MALFORMED: "malformed",
}


@dataclass(eq=False, slots=True)
class Item:
    """A delivery and its decoded event, while the runner holds it."""

    delivery: Delivery
    event: dict[str, Any] | None

    @property
    def channel(self) -> ConsumerChannel:
        return self.delivery.channel


class QueueRunner:
    log = Logger()

    def __init__(
        self,
        worker: QueueWorker,
        settings: RunnerSettings,
        broker: Broker,
        deadletters: DeadLetterer,
        clock: IReactorTime,
        observer: RunnerObserver | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.worker = worker
        self.queue = worker.queue
        self.settings = settings
        self._broker = broker
        self._deadletters = deadletters
        self._clock = clock
        self._observer: RunnerObserver = observer or NullObserver()
        self._rand = rand
        self._batched = isinstance(worker, LoopQueueProcessingWorker)
        self._channel: ConsumerChannel | None = None
        self._pending: deque[Item] = deque()
        self._in_flight: dict[Deferred[Any], list[Item]] = {}
        self._retries: dict[Item, IDelayedCall] = {}
        self._settling: set[Item] = set()  # being re-published or dead-lettered
        self._batch_timer: IDelayedCall | None = None
        self._batch_due = False
        self._reattach: IDelayedCall | None = None
        self._idle_check: IDelayedCall | None = None
        self._pumping = False
        self._stopping = False
        self._drained: list[Deferred[None]] = []

    # -- state, for health checks and tests ------------------------------------

    @property
    def attached(self) -> bool:
        return self._channel is not None and self._channel.is_open

    @property
    def in_flight(self) -> int:
        return sum(len(items) for items in self._in_flight.values())

    @property
    def held(self) -> int:
        """Deliveries held unacked: waiting, in flight, waiting to retry, settling."""
        return len(self._pending) + self.in_flight + len(self._retries) + len(self._settling)

    # -- attachment to the broker ------------------------------------------------

    def attach(self, session: BrokerSession) -> Deferred[None]:
        """Consume on a new session (called on every new connection)."""
        if self._stopping:
            return succeed(None)
        self._cancel_reattach()

        def consuming(channel: ConsumerChannel) -> None:
            self._channel = channel
            channel.when_closed().addCallback(lambda _: self._channel_closed(channel, session))
            self._observer.attached(self.queue, True)
            self.log.info("Consuming {queue} (prefetch {prefetch})", queue=self.queue, prefetch=self.settings.prefetch)

        return session.consume(self.queue, self.settings.prefetch, self._on_delivery).addCallback(consuming)

    def _channel_closed(self, channel: ConsumerChannel, session: BrokerSession) -> None:
        """The broker forgot every delivery of ``channel``: it will redeliver them."""
        if channel is self._channel:
            self._channel = None
            self._observer.attached(self.queue, False)
        self._pending = deque(i for i in self._pending if i.channel is not channel)
        for item in [i for i in self._retries if i.channel is channel]:
            self._retries.pop(item).cancel()
        if not self._pending:
            self._cancel_batch_timer()
        if not self._stopping and session.is_open and self._channel is None:
            self.log.warn("Channel of {queue} closed; re-attaching", queue=self.queue)
            self._reattach = self._clock.callLater(REATTACH_DELAY, self._try_reattach)
        self._check_drained()

    def _try_reattach(self) -> None:
        self._reattach = None
        session = self._broker.current_session()
        if session is not None and session.is_open and self._channel is None:
            self.attach(session).addErrback(self._reattach_failed)

    def _reattach_failed(self, failure: Failure) -> None:
        self.log.failure("Could not re-attach {queue}", failure, queue=self.queue)
        if not self._stopping:
            self._reattach = self._clock.callLater(REATTACH_DELAY * 5, self._try_reattach)

    def _cancel_reattach(self) -> None:
        if self._reattach is not None and self._reattach.active():
            self._reattach.cancel()
        self._reattach = None

    # -- deliveries --------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            delivery.nack(requeue=True)
            return
        try:
            event = self._decode(delivery.body)
        except Exception as e:  # noqa: BLE001 - MalformedEventError, or a bug in validate(): never lose it
            self.log.warn(
                "Malformed event on {queue} ({size} bytes): {error}", queue=self.queue, size=len(delivery.body), error=e
            )
            self._give_up([(Item(delivery, None), Failure())], Outcome.MALFORMED)
            return
        self._pending.append(Item(delivery, event))
        self._pump()

    def _decode(self, body: bytes) -> dict[str, Any]:
        if len(body) > self.settings.max_body_bytes:
            raise MalformedEventError(f"body of {len(body)} bytes exceeds the limit of {self.settings.max_body_bytes}")
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise MalformedEventError(f"body is not UTF-8 JSON: {e}") from None
        if not isinstance(event, dict):
            raise MalformedEventError(f"event is a JSON {type(event).__name__}, not an object")
        validated = self.worker.validate(event)
        if not isinstance(validated, dict):
            raise MalformedEventError("validate() did not return an event")
        return validated

    def _pump(self) -> None:
        """Start what may start; re-entered from a consume that finished at once, it defers to the outer loop."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        limit = self.settings.concurrency
        if not self._batched:
            while self._pending and len(self._in_flight) < limit:
                self._start([self._pending.popleft()])
            return
        size = self.settings.batch_size
        while self._pending and len(self._in_flight) < limit and (len(self._pending) >= size or self._batch_due):
            batch = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
            self._batch_due = False
            self._start(batch)
        if not self._pending:
            self._cancel_batch_timer()
        elif self._batch_timer is None and not self._batch_due:
            self._batch_timer = self._clock.callLater(self.settings.sleep_delay, self._batch_timer_fired)

    def _batch_timer_fired(self) -> None:
        self._batch_timer = None
        self._batch_due = True
        self._pump()

    def _cancel_batch_timer(self) -> None:
        if self._batch_timer is not None and self._batch_timer.active():
            self._batch_timer.cancel()
        self._batch_timer = None
        self._batch_due = False

    # -- consuming -------------------------------------------------------------

    def _start(self, items: list[Item]) -> None:
        events = [i.event for i in items if i.event is not None]
        self._observer.consume_started(self.queue, len(items))
        started = self._clock.seconds()
        try:
            if self._batched:
                assert isinstance(self.worker, LoopQueueProcessingWorker)
                result = self.worker.consume_batch(events)
            else:
                assert isinstance(self.worker, QueueProcessingWorker)
                result = self.worker.consume(events[0])
        except Exception:  # noqa: BLE001 - the consumer's failure, handled like any other
            self._complete(Failure(), items, started)
            return
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if not isinstance(result, Deferred):
            self._complete(result, items, started)  # a plain value: no Deferred, no timer
            return
        if self.settings.timeout is not None:
            result.addTimeout(self.settings.timeout * len(items), self._clock)
        self._in_flight[result] = items
        result.addBoth(self._finished, result, started)

    def _finished(self, result: object, d: Deferred[Any], started: float) -> None:
        items = self._in_flight.pop(d, None)
        if items is None:
            return None  # abandoned by a drain timeout: already requeued
        self._complete(result, items, started)
        return None

    def _complete(self, result: object, items: list[Item], started: float) -> None:
        elapsed = self._clock.seconds() - started
        if isinstance(result, Failure):
            if result.check(TimeoutError) and self.settings.timeout is not None:
                self.log.error(
                    "Timed out in {queue} after {limit} seconds processing {n} events",
                    queue=self.queue,
                    limit=_seconds(self.settings.timeout * len(items)),
                    n=len(items),
                )
            failures = [(item, result) for item in items]
        elif isinstance(result, BatchFailures):
            failures = [(items[i], Failure(exc)) for i, exc in sorted(result.failures.items()) if 0 <= i < len(items)]
        else:  # success: the hot path
            self._ack(items)
            self._observer.consumed(self.queue, len(items), elapsed)
            self._after_settle()
            return
        failed = {id(item) for item, _ in failures}
        succeeded = [item for item in items if id(item) not in failed]
        self._ack(succeeded)
        self._observer.consumed(self.queue, len(succeeded), elapsed)
        if failures:
            self._handle_failures(failures)
        self._after_settle()

    def _after_settle(self) -> None:
        if not self._stopping:
            self._pump()
        if not self._pending and not self._in_flight and self._idle_check is None:
            # Deliveries read from the socket in one go arrive one after another in
            # this same reactor turn: the local buffer has emptied only if it is
            # still empty once they are all handed over.
            self._idle_check = self._clock.callLater(0, self._check_idle)
        self._check_drained()

    def _check_idle(self) -> None:
        self._idle_check = None
        if not self._pending and not self._in_flight:
            self._observer.idle(self.queue)

    def _ack(self, items: Sequence[Item]) -> None:
        if len(items) == 1:
            items[0].delivery.channel.ack((items[0].delivery.tag,))
            return
        by_channel: dict[ConsumerChannel, list[int]] = {}
        for item in items:
            by_channel.setdefault(item.channel, []).append(item.delivery.tag)
        for channel, tags in by_channel.items():
            channel.ack(tags)

    # -- failures ----------------------------------------------------------------

    def _handle_failures(self, failures: Sequence[tuple[Item, Failure]]) -> None:
        give_up: dict[Outcome, list[tuple[Item, Failure]]] = {}
        for item, failure in failures:
            outcome = classify(failure, self.settings.retry_unexpected)
            if outcome is Outcome.INTERRUPT:
                self._ack([item])
                continue
            self._observer.failed(self.queue, 1, outcome.value)
            if outcome is Outcome.RETRY:
                assert item.event is not None
                attempt = next_attempt(item.event.get("failed_tries"), self.settings.max_retries)
                if attempt is not None:
                    self._schedule_retry(item, attempt, failure)
                    continue
            give_up.setdefault(outcome, []).append((item, failure))
        for outcome, group in give_up.items():
            self._give_up(group, outcome)

    def _schedule_retry(self, item: Item, attempt: int, failure: Failure) -> None:
        delay = self.settings.backoff.delay(attempt, self._rand)
        self.log.info(
            "Retrying {queue} event in {delay:.1f}s (attempt {attempt}): {error}",
            queue=self.queue,
            delay=delay,
            attempt=attempt + 1,
            error=_describe(failure),
        )
        self._observer.retried(self.queue, delay)
        self._retries[item] = self._clock.callLater(delay, self._republish, item, attempt)

    def _republish(self, item: Item, attempt: int) -> None:
        self._retries.pop(item, None)
        if not item.channel.is_open:
            return  # the broker redelivers the original
        assert item.event is not None
        event = dict(item.event, failed_tries=attempt)
        first = item.delivery.headers.get(H_FIRST) or iso_time(self._clock.seconds())
        self._settling.add(item)
        d = self._broker.publish(
            self.queue, json.dumps(event).encode(), {H_FIRST: first}, timeout=self.settings.publish_timeout
        )

        def published(_: object) -> None:
            self._settling.discard(item)
            self._ack([item])
            self._after_settle()

        def not_published(failure: Failure) -> None:
            self._settling.discard(item)
            self.log.error(
                "Could not re-publish a {queue} event for retry: {error}", queue=self.queue, error=_describe(failure)
            )
            if self._stopping or not item.channel.is_open:
                item.delivery.nack(requeue=True)
                self._after_settle()
            else:
                self._retries[item] = self._clock.callLater(
                    self.settings.backoff.delay(attempt, self._rand), self._republish, item, attempt
                )

        d.addCallbacks(published, not_published)

    def _give_up(self, group: Sequence[tuple[Item, Failure]], outcome: Outcome) -> None:
        """Run the failure handler, write the error file, dead-letter, then ack."""
        reason = REASONS[outcome]
        events = [item.event for item, _ in group if item.event is not None]
        for item, failure in group:
            if item.event is None:
                continue
            if outcome is not Outcome.TIMEOUT:
                self.log.failure(
                    "Problem handling data on queue {queue}", failure, queue=self.queue, event=redact_event(item.event)
                )
            handled = maybeDeferred(self.worker.on_give_up, item.event, failure, reason)
            handled.addErrback(lambda f: self.log.failure("Failure handler of {queue} failed", f, queue=self.queue))
        by_failure: dict[int, tuple[Failure, list[dict[str, Any]]]] = {}
        for item, failure in group:
            if item.event is not None:
                by_failure.setdefault(id(failure), (failure, []))[1].append(item.event)
        for failure, failed_events in by_failure.values():
            self._observer.gave_up(self.queue, failed_events, failure, reason)
        raw = [_raw(item) for item, _ in group if item.event is None]
        self._deadletters.write_error_file(self.queue, [*events, *raw])
        letters = [
            DeadLetter(
                queue=self.queue,
                body=item.delivery.body,
                event=item.event,
                reason=reason,
                exception=_exception_name(failure),
                message=str(failure.value),
                attempts=_attempts(item),
                first_failure=item.delivery.headers.get(H_FIRST),
            )
            for item, failure in group
        ]
        items = [item for item, _ in group]
        self._settling.update(items)

        def done(_: object) -> None:
            self._settling.difference_update(items)
            self._ack(items)
            self._observer.dead_lettered(self.queue, len(items), reason)
            self._after_settle()

        def not_done(failure: Failure) -> None:
            self._settling.difference_update(items)
            self.log.error(
                "Could not dead-letter {n} {queue} events ({error}); returning them to the queue",
                n=len(items),
                queue=self.queue,
                error=_describe(failure),
            )
            for item in items:
                item.delivery.nack(requeue=True)
            self._after_settle()

        self._deadletters.publish(letters).addCallbacks(done, not_done)

    # -- stopping ----------------------------------------------------------------

    def stop(self, drain_timeout: float) -> Deferred[None]:
        """Stop consuming, let in-flight work finish (bounded), requeue the rest."""
        self._stopping = True
        self._cancel_reattach()
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.cancel().addErrback(lambda f: None)
        if self._batched:
            while self._pending:
                self._start([self._pending.popleft() for _ in range(min(self.settings.batch_size, len(self._pending)))])
        self._cancel_batch_timer()
        if self._idle_check is not None and self._idle_check.active():
            self._idle_check.cancel()
            self._idle_check = None
        while self._pending:
            self._pending.popleft().delivery.nack(requeue=True)
        for item, call in list(self._retries.items()):
            call.cancel()
            item.delivery.nack(requeue=True)
        self._retries.clear()
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        timer: DelayedCall = self._clock.callLater(drain_timeout, self._abandon, drain_timeout)  # type: ignore[assignment]

        def finished(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        d.addCallback(finished)
        self._check_drained()
        return d

    def _abandon(self, drain_timeout: float) -> None:
        """The drain timeout passed: requeue what is still in flight and cancel it."""
        running = list(self._in_flight.items())
        if running:
            self.log.warn(
                "{queue}: {n} events still in flight after {timeout}s; returning them to the queue",
                queue=self.queue,
                n=sum(len(items) for _, items in running),
                timeout=drain_timeout,
            )
        self._in_flight.clear()
        for d, items in running:
            for item in items:
                item.delivery.nack(requeue=True)
            d.cancel()
        for item in list(self._settling):
            item.delivery.nack(requeue=True)
        self._settling.clear()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._in_flight and not self._settling and not self._retries:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _exception_name(failure: Failure) -> str:
    cls = failure.type
    return getattr(cls, "__qualname__", str(cls))


def _describe(failure: Failure) -> str:
    return f"{_exception_name(failure)}: {failure.value}"


def _attempts(item: Item) -> int:
    tries = item.event.get("failed_tries", 0) if item.event is not None else 0
    return (tries if isinstance(tries, int) and not isinstance(tries, bool) else 0) + 1


def _raw(item: Item) -> str:
    return item.delivery.body[:1000].decode("utf-8", "replace")
