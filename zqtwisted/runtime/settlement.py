"""Carrying out verdicts: the only place where deliveries are acked or requeued.

:class:`Settler` is the I/O shell around :mod:`zqtwisted.runtime.decisions`: it acks,
requeues, waits and re-publishes a retry, or hands a failed event to the failure
handler and dead-letters it.  A delivery is acked only once its successor or its
dead letter is confirmed; a publish that fails (or misses its deadline) leaves it
unacked: a retry is tried again, a dead letter's delivery is requeued.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import FirstError, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.runtime.broker import Broker, ConsumerChannel, Delivery
from zqtwisted.runtime.consumer import QueueWorker
from zqtwisted.runtime.deadletter import (
    H_FIRST,
    DeadLetterer,
    describe_failure,
    header_text,
    iso_time,
    letter_for,
)
from zqtwisted.runtime.decisions import Action, Verdict, decide
from zqtwisted.runtime.observer import RunnerObserver
from zqtwisted.runtime.redact import redact_event
from zqtwisted.runtime.retry import Outcome, RetryPolicy

# What a publish that cannot be encoded fails with (pika raises these before sending anything).
UNENCODABLE: tuple[type[BaseException], ...] = (struct.error, OverflowError, TypeError, ValueError, UnicodeError)


@dataclass(eq=False, slots=True)
class Item:
    """A delivery and its decoded event (None when malformed), while the runner holds it."""

    delivery: Delivery
    event: dict[str, Any] | None

    @property
    def channel(self) -> ConsumerChannel:
        return self.delivery.channel


def ack(items: Sequence[Item]) -> None:
    """Ack ``items`` through their channels, one call per channel."""
    if len(items) == 1:  # the hot path: one event
        delivery = items[0].delivery
        delivery.channel.ack((delivery.tag,))
        return
    by_channel: dict[ConsumerChannel, list[int]] = {}
    for item in items:
        by_channel.setdefault(item.channel, []).append(item.delivery.tag)
    for channel, tags in by_channel.items():
        channel.ack(tags)


def requeue(items: Sequence[Item]) -> None:
    """Return ``items`` to the queue through their channels (a no-op on a closed channel)."""
    for item in items:
        item.channel.nack(item.delivery.tag, requeue=True)


class Settler:
    """Acks, retries and dead-letters the failed events of one queue.

    ``settled`` is called whenever a held delivery has been let go (acked or
    requeued), so that the runner can start more work or finish draining.
    """

    log = Logger()

    def __init__(
        self,
        worker: QueueWorker,
        policy: RetryPolicy,
        broker: Broker,
        deadletters: DeadLetterer,
        clock: IReactorTime,
        observer: RunnerObserver,
        publish_timeout: float,
        rand: Callable[[], float],
        settled: Callable[[], None],
    ) -> None:
        self.queue = worker.queue
        self._worker = worker
        self._policy = policy
        self._broker = broker
        self._deadletters = deadletters
        self._clock = clock
        self._observer = observer
        self._publish_timeout = publish_timeout
        self._rand = rand
        self._settled = settled
        self._retries: dict[Item, IDelayedCall] = {}  # waiting for their retry
        self._publishing: set[Item] = set()  # successor or dead letter not yet confirmed
        self.stopping = False

    @property
    def held(self) -> int:
        """Deliveries held unacked: waiting to retry, or waiting for a confirm."""
        return len(self._retries) + len(self._publishing)

    # -- verdicts ------------------------------------------------------------------

    def failed(self, failures: Sequence[tuple[Item, Failure]]) -> None:
        """Decide on each failed event and carry the verdicts out (dead letters grouped by outcome)."""
        give_up: dict[Outcome, list[tuple[Item, Failure]]] = {}
        verdicts: dict[Outcome, Verdict] = {}
        for item, failure in failures:
            failed_tries = item.event.get("failed_tries") if item.event is not None else None
            verdict = decide(failure, failed_tries, self._policy, self._rand)
            if verdict.action is Action.ACK:
                ack([item])
                continue
            self._observer.failed(self.queue, 1, verdict.outcome.value)
            if verdict.action is Action.RETRY:
                self.retry(item, verdict, failure)
            else:
                give_up.setdefault(verdict.outcome, []).append((item, failure))
                verdicts[verdict.outcome] = verdict
        for outcome, group in give_up.items():
            self.give_up(group, verdicts[outcome])

    # -- retries ---------------------------------------------------------------------

    def retry(self, item: Item, verdict: Verdict, failure: Failure) -> None:
        """Re-publish the event with its new ``failed_tries`` after the verdict's delay."""
        self.log.info(
            "Retrying {queue} event in {delay:.1f}s (attempt {attempt}): {error}",
            queue=self.queue,
            delay=verdict.delay,
            attempt=verdict.attempt + 1,
            error=describe_failure(failure),
        )
        self._observer.retried(self.queue, verdict.delay)
        self._retries[item] = self._clock.callLater(verdict.delay, self._republish, item, verdict.attempt)

    def _republish(self, item: Item, attempt: int) -> None:
        self._retries.pop(item, None)
        if not item.channel.is_open:
            return  # the broker redelivers the original
        assert item.event is not None
        event = dict(item.event, failed_tries=attempt)
        first = header_text(item.delivery.headers.get(H_FIRST)) or iso_time(self._clock.seconds())
        self._publishing.add(item)
        d = self._broker.publish(self.queue, json.dumps(event).encode(), {H_FIRST: first}, self._publish_timeout)

        def published(_: object) -> None:
            self._let_go(item, ack)

        def not_published(failure: Failure) -> None:
            self._publishing.discard(item)
            self.log.error(
                "Could not re-publish a {queue} event for retry: {error}",
                queue=self.queue,
                error=describe_failure(failure),
            )
            if self.stopping or not item.channel.is_open:
                self._let_go(item, requeue)
            else:
                delay = self._policy.backoff.delay(attempt, self._rand)
                self._retries[item] = self._clock.callLater(delay, self._republish, item, attempt)

        d.addCallbacks(published, not_published)

    def _let_go(self, item: Item, settle: Callable[[Sequence[Item]], None]) -> None:
        self._publishing.discard(item)
        settle([item])
        self._settled()

    # -- giving up -------------------------------------------------------------------

    def give_up(self, group: Sequence[tuple[Item, Failure]], verdict: Verdict) -> None:
        """Run the failure handler, then dead-letter (error file + ``.failed``), then ack."""
        self._report(group, verdict)
        letters = [
            letter_for(self.queue, item.delivery.body, item.event, item.delivery.headers, failure, verdict.reason)
            for item, failure in group
        ]
        items = [item for item, _ in group]
        self._publishing.update(items)

        def done(_: object) -> None:
            self._publishing.difference_update(items)
            ack(items)
            self._observer.dead_lettered(self.queue, len(items), verdict.reason)
            self._settled()

        def not_done(failure: Failure) -> None:
            if isinstance(failure.value, FirstError):
                failure = failure.value.subFailure  # gatherResults' wrapper: the publish's own error
            if failure.check(*UNENCODABLE):
                # Publishing again would fail the same way, forever: the error file has them.
                self.log.error(
                    "Could not encode the dead letters of {n} {queue} events ({error}); "
                    "they are recorded in the error file only",
                    n=len(items),
                    queue=self.queue,
                    error=describe_failure(failure),
                )
                done(None)
                return
            self._publishing.difference_update(items)
            self.log.error(
                "Could not dead-letter {n} {queue} events ({error}); returning them to the queue",
                n=len(items),
                queue=self.queue,
                error=describe_failure(failure),
            )
            requeue(items)
            self._settled()

        self._deadletters.send(self.queue, letters).addCallbacks(done, not_done)

    def _report(self, group: Sequence[tuple[Item, Failure]], verdict: Verdict) -> None:
        """Log each given-up event, run the worker's failure handler, tell the observer."""
        by_failure: dict[int, tuple[Failure, list[dict[str, Any]]]] = {}
        for item, failure in group:
            if item.event is None:
                continue
            if verdict.outcome is not Outcome.TIMEOUT:
                self.log.failure(
                    "Problem handling data on queue {queue}", failure, queue=self.queue, event=redact_event(item.event)
                )
            handled = maybeDeferred(self._worker.on_give_up, item.event, failure, verdict.reason)
            handled.addErrback(lambda f: self.log.failure("Failure handler of {queue} failed", f, queue=self.queue))
            by_failure.setdefault(id(failure), (failure, []))[1].append(item.event)
        for failure, events in by_failure.values():
            self._observer.gave_up(self.queue, events, failure, verdict.reason)

    # -- channels and stopping -------------------------------------------------------------

    def channel_closed(self, channel: ConsumerChannel) -> None:
        """The broker will redeliver the deliveries of ``channel``: drop their waiting retries."""
        for item in [i for i in self._retries if i.channel is channel]:
            self._retries.pop(item).cancel()

    def stop(self) -> None:
        """Cancel the waiting retries and return their deliveries to the queue."""
        self.stopping = True
        for item, call in list(self._retries.items()):
            call.cancel()
            requeue([item])
        self._retries.clear()

    def abandon(self) -> None:
        """The drain timeout passed: requeue the deliveries still waiting for a confirm."""
        requeue(list(self._publishing))
        self._publishing.clear()
