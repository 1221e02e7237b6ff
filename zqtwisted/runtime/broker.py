"""The broker interface the runtime is written against.

Two implementations stand behind it: :mod:`zqtwisted.runtime.amqp` (RabbitMQ through
pika's ``TwistedProtocolConnection``) and :class:`zqtwisted.testing.MemoryBroker`.
Both pass the shared contract tests in ``tests/contract.py``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime


class BrokerUnavailable(Exception):
    """No connection to the broker could be had within the deadline."""


class BrokerRefused(BrokerUnavailable):
    """The broker refused the connection itself (credentials, vhost access): retrying helps only once that is fixed.

    Its message says which node refused whom and what to check; it never holds a password.
    """


class PublishFailed(Exception):
    """The broker did not confirm a publish (nacked, returned, or the channel died)."""


class PublishTimeout(PublishFailed):
    """The broker did not confirm a publish within its deadline (a memory or disk alarm, a stuck broker)."""


# A body larger than its consumer's limit is handed over cut, with its full size in this header.
ORIGINAL_SIZE = "x-zq-original-size"


@dataclass(eq=False, slots=True)
class Delivery:
    """One message handed to a consumer; acked or nacked through its channel.

    Treat it as immutable (not frozen only because frozen dataclasses are slow to
    build, and one is built per message).
    """

    queue: str
    body: bytes
    tag: int
    channel: ConsumerChannel
    redelivered: bool = False
    headers: Mapping[str, Any] = field(default_factory=dict)

    def ack(self) -> None:
        self.channel.ack([self.tag])

    def nack(self, requeue: bool = True) -> None:
        self.channel.nack(self.tag, requeue=requeue)


def body_size(delivery: Delivery) -> int:
    """The size of the body as it was published: a body cut on arrival carries it in :data:`ORIGINAL_SIZE`."""
    size = delivery.headers.get(ORIGINAL_SIZE)
    length = len(delivery.body)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > length else length


class ConsumerChannel(Protocol):
    """The channel one queue is consumed on; gone for good once closed."""

    @property
    def is_open(self) -> bool: ...

    def ack(self, tags: Sequence[int]) -> None:
        """Ack these delivery tags, with one multiple-ack where that is exact."""

    def nack(self, tag: int, requeue: bool = True) -> None: ...

    def cancel(self) -> Deferred[None]:
        """Stop deliveries; deliveries in hand can still be acked."""

    def when_closed(self) -> Deferred[None]:
        """Fires when the channel closes, for whatever reason."""


class BrokerSession(Protocol):
    """One live connection to the broker."""

    @property
    def is_open(self) -> bool: ...

    @property
    def node(self) -> str:
        """The node this connection is to (``host:port``), for logs and ``/ready``."""

    @property
    def blocked(self) -> str | None:
        """Why the broker blocks publishing on this connection now (a memory or disk alarm), or None."""

    def declare_queue(self, name: str) -> Deferred[None]: ...

    def consume(
        self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None], max_body: int | None = None
    ) -> Deferred[ConsumerChannel]:
        """Declare ``queue``, open a channel with this prefetch and start consuming.

        A body larger than ``max_body`` is not held whole: it is handed over cut to its
        first ``max_body + 1`` bytes, with its size in the :data:`ORIGINAL_SIZE` header.
        """

    def publish(self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None) -> Deferred[None]:
        """Publish persistently; fires once the broker has confirmed the message."""

    def queue_counts(self, queue: str) -> Deferred[tuple[int, int]]:
        """(messages ready, consumers) of a queue, declaring it if needed."""

    def purge(self, queue: str) -> Deferred[int]: ...

    def get(self, queue: str) -> Deferred[Delivery | None]:
        """Take one message (unacked) from ``queue``, or None when it is empty."""


class SessionListener(Protocol):
    def session_started(self, session: BrokerSession) -> Deferred[None] | None:
        """Called on every new connection, before it is handed to anyone else."""

    def session_lost(self, session: BrokerSession) -> None: ...


class Broker(Protocol):
    """A connection to the broker kept up as a service."""

    def add_listener(self, listener: SessionListener) -> None: ...

    @property
    def problem(self) -> str | None:
        """Why there is no connection now (the last failure: credentials refused, node unreachable...), or None."""

    def current_session(self) -> BrokerSession | None: ...

    def session(self, timeout: float | None = None) -> Deferred[BrokerSession]:
        """The current session, or the next one; fails with BrokerUnavailable after ``timeout``."""

    def publish(
        self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Deferred[None]:
        """Publish through the current or next session, confirmed, within ``timeout``.

        The deadline covers the wait for a session and the wait for the confirm: it
        fails with BrokerUnavailable (no session) or PublishTimeout (no confirm).
        """


class SessionWaiters:
    """Callers waiting for the next session, each wait bounded by its own timeout."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiting: list[Deferred[BrokerSession]] = []

    def wait(self, timeout: float | None) -> Deferred[BrokerSession]:
        d: Deferred[BrokerSession] = Deferred(lambda d: self._waiting.remove(d))
        self._waiting.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self._clock, onTimeoutCancel=_no_session_within)
        return d

    def fire(self, session: BrokerSession) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(session)

    def fail(self, reason: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(reason)


def _no_session_within(result: object, timeout: float) -> None:
    raise BrokerUnavailable(f"no broker connection within {timeout:.0f}s")


class PublishDeadline:
    """The deadline of one publish, over the wait for a session and the wait for its confirm.

    ``apply`` cancels the publish's Deferred when the time is up: the cancel reaches the
    wait for a session or for the confirm, and the Deferred fails with
    :class:`BrokerUnavailable` if no session was had yet, :class:`PublishTimeout` otherwise
    (saying so when the session it was sent on is blocked by the broker).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sending = False
        self.session: BrokerSession | None = None  # the session it was sent on

    def apply(self, d: Deferred[None], clock: IReactorTime) -> Deferred[None]:
        return d.addTimeout(self.timeout, clock, onTimeoutCancel=self._expired)

    def _expired(self, result: object, timeout: float) -> None:
        if not self.sending:
            _no_session_within(result, timeout)
        session = self.session
        blocked = session.blocked if session is not None else None
        if session is not None and blocked is not None:
            raise PublishTimeout(
                f"publish not confirmed within {timeout:g}s: RabbitMQ at {session.node} blocks publishing ({blocked})"
            )
        raise PublishTimeout(f"publish not confirmed within {timeout:g}s")


class AckTracker:
    """The delivery tags outstanding on one channel, to ack batches exactly.

    A multiple-ack of tag ``n`` acks every outstanding tag up to ``n``; it is used
    only when those are exactly the tags being acked, so that a delivery held
    elsewhere (a waiting retry, another batch) is never acked by accident.
    """

    def __init__(self) -> None:
        self._tags: list[int] = []

    def __len__(self) -> int:
        return len(self._tags)

    def delivered(self, tag: int) -> None:
        if self._tags and tag < self._tags[-1]:
            bisect.insort(self._tags, tag)
        else:
            self._tags.append(tag)

    def settle(self, tags: Sequence[int]) -> list[tuple[int, bool]]:
        """Forget ``tags``; return the (tag, multiple) acks that settle them."""
        if len(tags) == 1:  # the common case: one event
            return [(tags[0], False)] if self.forget(tags[0]) else []
        wanted = sorted(set(tags))
        if not wanted:
            return []
        highest = wanted[-1]
        below = bisect.bisect_right(self._tags, highest)
        if below == len(wanted) > 1 and self._tags[:below] == wanted:
            # The usual turn: these are exactly the oldest tags outstanding (one list comparison).
            del self._tags[:below]
            return [(highest, True)]
        present = [t for t in wanted if self._contains(t)]
        if len(present) == below and len(present) > 1:
            del self._tags[:below]
            return [(highest, True)]
        for t in present:
            self._remove(t)
        return [(t, False) for t in present]

    def forget(self, tag: int) -> bool:
        """Drop ``tag`` (nacked); False if it was not outstanding."""
        if self._contains(tag):
            self._remove(tag)
            return True
        return False

    def _contains(self, tag: int) -> bool:
        i = bisect.bisect_left(self._tags, tag)
        return i < len(self._tags) and self._tags[i] == tag

    def _remove(self, tag: int) -> None:
        del self._tags[bisect.bisect_left(self._tags, tag)]
