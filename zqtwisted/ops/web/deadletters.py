"""Dead letters on the broker, for the dashboard: list a page, replay one or all, purge.

Every operation goes through the service's own broker (its current session), and
every broker call has a deadline.  AMQP cannot browse a queue: listing takes the
letters up to the end of the page with ``basic.get`` (unacked) and gives them back
(``nack``, requeued: RabbitMQ puts them back in place), as ``zqctl failed`` does.
Operations on one queue run one at a time (a lock per queue), so a listing never
hides letters from a replay or a purge running beside it.

A replay publishes the event to its queue (``failed_tries`` removed, as
``zqctl replay`` does) and acks the dead letter only once the publish is
confirmed: a failure leaves the letter where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.ops.web.letters import MAX_BROWSE, LetterPage, Masker, letter_id, letter_view
from zqtwisted.runtime.broker import Broker, BrokerSession, BrokerUnavailable, Delivery
from zqtwisted.runtime.deadletter import failed_queue, replay_body

T = TypeVar("T")

# How many dead letters a "replay this one" looks through to find it.
MAX_SCAN = 10_000
# Letters taken and re-published at once by "replay all".
REPLAY_BATCH = 100


class UnknownQueue(LookupError):
    """The queue is not one this process consumes."""


class LetterNotFound(LookupError):
    """No dead letter with that id (replayed or purged meanwhile, or past the scan limit)."""


class BrokerTimeout(BrokerUnavailable):
    """RabbitMQ did not answer a call within its deadline."""


class ReplayIncomplete(Exception):
    """Some letters were replayed, then a publish failed: the rest stay dead letters."""

    def __init__(self, replayed: int, reason: str) -> None:
        super().__init__(f"replayed {replayed}, then stopped: {reason}")
        self.replayed = replayed


Offload = Callable[[Callable[[], Any]], "Deferred[Any]"]


def _at_once(f: Callable[[], T]) -> Deferred[T]:
    return maybeDeferred(f)


def _give_back(held: Sequence[Delivery]) -> None:
    """Requeue letters taken with ``get`` (RabbitMQ puts them back in place)."""
    for delivery in reversed(held):
        delivery.nack(requeue=True)


class DeadLetters:
    log = Logger()

    def __init__(
        self,
        broker: Broker,
        clock: IReactorTime,
        queues: Iterable[str],
        masker: Masker,
        timeout: float = 10.0,
        offload: Offload | None = None,
    ) -> None:
        """``offload(f)`` runs ``f`` away from the reactor (a thread pool) and fires with its result;
        by default ``f`` runs at once.  Masking a page of bodies goes through it."""
        self._broker = broker
        self._clock = clock
        self._masker = masker
        self._timeout = timeout
        self._offload: Offload = offload if offload is not None else _at_once
        self._locks = {queue: DeferredLock() for queue in queues}

    @property
    def queues(self) -> list[str]:
        return list(self._locks)

    def _run(self, queue: str, operation: Callable[[BrokerSession], Any]) -> Deferred[T]:
        """Run ``operation(session)`` (a coroutine function) alone for ``queue``."""
        lock = self._locks.get(queue)
        if lock is None:
            return fail(UnknownQueue(f"{queue} is not a queue of this process"))

        async def run() -> T:
            session = await self._within(self._broker.session(self._timeout), "a broker connection")
            result: T = await operation(session)
            return result

        return lock.run(lambda: Deferred.fromCoroutine(run()))

    def _within(self, d: Deferred[T], what: str) -> Deferred[T]:
        def too_late(result: T | Failure, timeout: float) -> T | Failure:
            raise BrokerTimeout(f"no answer from RabbitMQ for {what} within {timeout:g}s")

        return d.addTimeout(self._timeout, self._clock, onTimeoutCancel=too_late)

    async def _count(self, session: BrokerSession, name: str) -> int:
        ready, _ = await self._within(session.queue_counts(name), f"the size of {name}")
        return int(ready)

    async def _get(self, session: BrokerSession, name: str) -> Delivery | None:
        return await self._within(session.get(name), f"a message of {name}")

    async def _take(self, session: BrokerSession, name: str, count: int) -> list[Delivery]:
        """Up to ``count`` letters of ``name``, held unacked; all given back if a get fails."""
        held: list[Delivery] = []
        done = False
        try:
            while len(held) < count:
                delivery = await self._get(session, name)
                if delivery is None:
                    break
                held.append(delivery)
            done = True
        finally:
            if not done:
                _give_back(held)
        return held

    def page(self, queue: str, offset: int, limit: int) -> Deferred[LetterPage]:
        """The letters ``offset`` to ``offset + limit`` of ``{queue}.failed``, oldest first."""
        name = failed_queue(queue)

        async def listing(session: BrokerSession) -> LetterPage:
            total = await self._count(session, name)
            held = await self._take(session, name, min(offset + limit, MAX_BROWSE))
            _give_back(held)
            shown = [(d.body, d.headers) for d in held[offset:]]
            letters = await self._offload(lambda: [letter_view(body, headers, self._masker) for body, headers in shown])
            return LetterPage(queue, max(total, len(held)), offset, limit, letters)

        return self._run(queue, listing)

    def replay(self, queue: str, wanted: str) -> Deferred[int]:
        """Re-publish the letter ``wanted`` (an id of :func:`letter_id`) to ``queue``; fires with 1."""
        name = failed_queue(queue)

        async def replaying(session: BrokerSession) -> int:
            passed: list[Delivery] = []
            found: Delivery | None = None
            try:
                while found is None and len(passed) < MAX_SCAN:
                    delivery = await self._get(session, name)
                    if delivery is None:
                        break
                    if letter_id(delivery.body, delivery.headers) == wanted:
                        found = delivery
                    else:
                        passed.append(delivery)
                if found is None:
                    raise LetterNotFound(f"no dead letter {wanted} in {name}")
                await self._broker.publish(queue, replay_body(found.body), timeout=self._timeout)
                found.ack()
                found = None
            finally:
                if found is not None:
                    found.nack(requeue=True)
                _give_back(passed)
            self.log.info("Dashboard: replayed dead letter {id} to {queue}", id=wanted, queue=queue)
            return 1

        return self._run(queue, replaying)

    def replay_all(self, queue: str) -> Deferred[int]:
        """Re-publish every letter waiting now to ``queue``; fires with how many.

        Bounded by the count at the start, so letters that fail again meanwhile (and
        come back) are not replayed in a loop.
        """
        name = failed_queue(queue)

        async def replaying(session: BrokerSession) -> int:
            remaining = await self._count(session, name)
            replayed = 0
            while remaining > 0:
                batch = await self._take(session, name, min(REPLAY_BATCH, remaining))
                if not batch:
                    break
                remaining -= len(batch)
                published = [self._broker.publish(queue, replay_body(d.body), timeout=self._timeout) for d in batch]
                results = await DeferredList(published, consumeErrors=True)
                error = None
                for delivery, (ok, result) in zip(batch, results, strict=True):
                    if ok:
                        delivery.ack()
                        replayed += 1
                    else:
                        delivery.nack(requeue=True)
                        error = result
                if error is not None:
                    raise ReplayIncomplete(replayed, error.getErrorMessage())
            self.log.info("Dashboard: replayed {n} dead letter(s) to {queue}", n=replayed, queue=queue)
            return replayed

        return self._run(queue, replaying)

    def purge(self, queue: str) -> Deferred[int]:
        """Delete every letter waiting in ``{queue}.failed``; fires with how many."""
        name = failed_queue(queue)

        async def purging(session: BrokerSession) -> int:
            count: int = await self._within(session.purge(name), f"purging {name}")
            self.log.info("Dashboard: purged {n} dead letter(s) of {queue}", n=count, queue=queue)
            return count

        return self._run(queue, purging)
