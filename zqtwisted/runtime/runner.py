"""The consumer of one queue: flow control, batching, time limits; verdicts go to the settler.

A :class:`QueueRunner` owns the acks of its queue.  It keeps at most
``concurrency`` consumes in flight (events, or batches for batch workers); the
broker's prefetch bounds what waits locally.  Every consume has a deadline
(:mod:`~zqtwisted.runtime.timelimit`).  What happens to a failed event is decided
by :mod:`~zqtwisted.runtime.decisions` and carried out by
:mod:`~zqtwisted.runtime.settlement`: retried with backoff (the delivery stays
unacked until its successor is confirmed) or dead-lettered (acked only once the
dead letter is confirmed).  Nothing is dropped.

A delivery the runner holds is in exactly one place: ``_pending`` (waiting for a
consume slot or a batch), ``_in_flight`` (being consumed), or the settler (waiting
for a retry or for a confirm).
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Sequence
from inspect import iscoroutine
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import BodyTooLarge, MalformedEventError
from zqtwisted.runtime.broker import Broker, BrokerSession, ConsumerChannel, Delivery, body_size
from zqtwisted.runtime.consumer import Event, LoopQueueProcessingWorker, QueueProcessingWorker, QueueWorker
from zqtwisted.runtime.deadletter import DeadLetterer
from zqtwisted.runtime.decisions import MALFORMED, check_failed_tries, failures_of
from zqtwisted.runtime.observer import NullObserver, RunnerObserver
from zqtwisted.runtime.retry import RetryPolicy
from zqtwisted.runtime.runner_settings import RunnerSettings
from zqtwisted.runtime.settlement import Item, Settler, ack, requeue
from zqtwisted.runtime.timelimit import TimeLimit

__all__ = ["REATTACH_DELAY", "QueueRunner", "RunnerSettings"]

REATTACH_DELAY = 1.0


class _Batch:
    """When a held batch is due: at ``batch_size`` events, or ``sleep_delay`` after the first one."""

    def __init__(self, clock: IReactorTime, size: int, delay: float, fire: Callable[[], None]) -> None:
        self._clock = clock
        self.size = size
        self._delay = delay
        self._fire = fire
        self._timer: IDelayedCall | None = None
        self.due = False

    def wait(self) -> None:
        """Events are held: make sure the timer runs."""
        if self._timer is None and not self.due:
            self._timer = self._clock.callLater(self._delay, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.due = True
        self._fire()

    def reset(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.due = False


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
        self._clock = clock
        self._observer: RunnerObserver = observer or NullObserver()
        self._limit = TimeLimit(settings.timeout)
        self._consume = _consumer_of(worker)
        # Single-event workers take the hot path (_start_one): straight to consume().
        self._consume_one: Callable[[Event], object] | None = (
            None if worker.batched else cast(QueueProcessingWorker, worker).consume
        )
        self._batch = _Batch(clock, settings.batch_size, settings.sleep_delay, self._pump) if worker.batched else None
        policy = RetryPolicy(settings.max_retries, settings.backoff, settings.retry_unexpected)
        self._settler = Settler(
            worker, policy, broker, deadletters, clock, self._observer, settings.publish_timeout, rand, self._settled
        )
        self._channel: ConsumerChannel | None = None
        self._reattach: IDelayedCall | None = None
        self._pending: deque[Item] = deque()
        self._in_flight: dict[Deferred[Any], list[Item]] = {}
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
        return len(self._pending) + self.in_flight + self._settler.held

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

        consuming_on = session.consume(
            self.queue, self.settings.prefetch, self._on_delivery, self.settings.max_body_bytes
        )
        return consuming_on.addCallback(consuming)

    def _channel_closed(self, channel: ConsumerChannel, session: BrokerSession) -> None:
        """The broker forgot every delivery of ``channel``: it will redeliver them."""
        if channel is self._channel:
            self._channel = None
            self._observer.attached(self.queue, False)
        self._pending = deque(i for i in self._pending if i.channel is not channel)
        self._settler.channel_closed(channel)
        if not self._pending and self._batch is not None:
            self._batch.reset()
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
            delivery.channel.nack(delivery.tag, requeue=True)
            return
        try:
            event = self._decode(delivery.body)
        except Exception as e:  # noqa: BLE001 - MalformedEventError, or a bug in validate(): never lose it
            self._malformed(delivery, e)
            return
        item = Item(delivery, event)
        if self._consume_one is not None and not self._pending and not self._pumping:
            if len(self._in_flight) < self.settings.concurrency:
                # The hot path: a free slot and nothing waiting, so no trip through _pending.
                # As in _pump, deliveries made during the consume (a broker that delivers
                # at once) wait in _pending and start after it.
                self._pumping = True
                try:
                    self._start_one(item)
                    self._pump_once()
                finally:
                    self._pumping = False
                return
        self._pending.append(item)
        self._pump()

    def _malformed(self, delivery: Delivery, error: Exception) -> None:
        """Dead-letter a delivery whose body is no event of this queue (a body too large: as an excerpt).

        The error goes on without its traceback and context: their frames hold the body
        (a JSONDecodeError, the whole text) for as long as anything holds the error.
        """
        size = body_size(delivery)  # a body cut on arrival (too large) says its full size
        if isinstance(error, BodyTooLarge):
            error = BodyTooLarge(size, error.limit)
        error.__traceback__ = error.__context__ = error.__cause__ = None
        self.log.warn(
            "Malformed event on {queue} ({size} bytes): {error}", queue=self.queue, size=size, error=str(error)
        )
        # A consume like any other for the stats (Zulip counts it too): a queue that
        # dead-letters everything still shows it is alive.
        self._observer.consume_started(self.queue, 1)
        self._observer.consumed(self.queue, 0, 0.0)
        self._observer.failed(self.queue, 1, MALFORMED.outcome.value)
        self._settler.give_up([(Item(delivery, None), Failure(error))], MALFORMED)

    def _decode(self, body: bytes) -> dict[str, Any]:
        if len(body) > self.settings.max_body_bytes:
            raise BodyTooLarge(len(body), self.settings.max_body_bytes)
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, ValueError) as e:
            raise MalformedEventError(f"body is not UTF-8 JSON: {e}") from None
        if not isinstance(event, dict):
            raise MalformedEventError(f"event is a JSON {type(event).__name__}, not an object")
        check_failed_tries(event)
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
        batch = self._batch
        if batch is None:
            while self._pending and len(self._in_flight) < limit:
                self._start_one(self._pending.popleft())
            return
        while self._pending and len(self._in_flight) < limit and (len(self._pending) >= batch.size or batch.due):
            batch.due = False
            self._start(self._take_batch(batch.size))
        if not self._pending:
            batch.reset()
        else:
            batch.wait()

    def _take_batch(self, size: int) -> list[Item]:
        return [self._pending.popleft() for _ in range(min(size, len(self._pending)))]

    # -- consuming -------------------------------------------------------------

    def _start(self, items: list[Item]) -> None:
        self._observer.consume_started(self.queue, len(items))
        started = self._clock.seconds()
        try:
            result = self._consume(items)
        except Exception:  # noqa: BLE001 - the consumer's failure, handled like any other
            self._complete(Failure(), items, started)
            return
        self._follow(result, items, started)

    def _start_one(self, item: Item) -> None:
        """:meth:`_start` for one event of a single-event worker, with the shortest way for a plain success.

        A consume that returned None (no Deferred, no coroutine: the most common
        consume of all) succeeded at once: ack, count, go on, with no Deferred and no
        timer.  Anything else takes the general way (:meth:`_follow`).
        """
        consume, observer, clock = self._consume_one, self._observer, self._clock
        assert consume is not None  # a single-event worker's
        observer.consume_started(self.queue, 1)
        started = clock.seconds()
        try:
            result = consume(item.event)  # type: ignore[arg-type] # a pending item always has its event
        except Exception:  # noqa: BLE001 - the consumer's failure, handled like any other
            self._complete(Failure(), [item], started)
            return
        if result is not None:
            self._follow(result, [item], started)
            return
        ack((item,))
        observer.consumed(self.queue, 1, clock.seconds() - started)
        self._settled()

    def _follow(self, result: object, items: list[Item], started: float) -> None:
        """Wait for what a consume returned (a Deferred, a coroutine), within its time limit; or complete it now."""
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if not isinstance(result, Deferred):
            self._complete(result, items, started)  # a plain value: no Deferred, no timer
            return
        self._limit.apply(result, len(items), self._clock)
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
        failed = failures_of(result, len(items))
        if failed is None:  # success: the hot path
            ack(items)
            self._observer.consumed(self.queue, len(items), elapsed)
            self._settled()
            return
        if isinstance(result, Failure) and self._limit.expired(result):
            self._limit.report(self.log, self.queue, len(items))
        failures = [(items[i], failure) for i, failure in failed]
        failed_ids = {id(item) for item, _ in failures}
        succeeded = [item for item in items if id(item) not in failed_ids]
        ack(succeeded)
        self._observer.consumed(self.queue, len(succeeded), elapsed)
        if failures:
            self._settler.failed(failures)
        self._settled()

    def _settled(self) -> None:
        """Deliveries were let go: start more work, notice idleness, finish a drain."""
        if not self._stopping and (self._pending or self._batch is not None):
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

    # -- stopping ----------------------------------------------------------------

    def stop(self, drain_timeout: float) -> Deferred[None]:
        """Stop consuming, let in-flight work finish (bounded), requeue the rest."""
        self._stopping = True
        self._cancel_reattach()
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.cancel().addErrback(lambda f: None)
        if self._batch is not None:
            while self._pending:
                self._start(self._take_batch(self._batch.size))
            self._batch.reset()
        if self._idle_check is not None and self._idle_check.active():
            self._idle_check.cancel()
            self._idle_check = None
        requeue(self._pending)
        self._pending.clear()
        self._settler.stop()
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        timer = self._clock.callLater(drain_timeout, self._abandon, drain_timeout)

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
            requeue(items)
            d.cancel()
        self._settler.abandon()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._in_flight and not self._settler.held:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)


def _consumer_of(worker: QueueWorker) -> Callable[[Sequence[Item]], object]:
    """How to hand a consume's items to ``worker``: one event to consume(), or a batch to consume_batch()."""
    if worker.batched:
        consume_batch = cast(LoopQueueProcessingWorker, worker).consume_batch
        return lambda items: consume_batch([i.event for i in items if i.event is not None])
    consume = cast(QueueProcessingWorker, worker).consume
    return lambda items: consume(items[0].event)  # type: ignore[arg-type] # a pending item always has its event
