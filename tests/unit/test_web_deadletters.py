"""Dead letters through the broker for the dashboard: list, replay one or all, purge (MemoryBroker)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from zqtwisted.ops.logs import SecretMasker
from zqtwisted.ops.web.deadletters import (
    BrokerTimeout,
    DeadLetters,
    LetterNotFound,
    ReplayIncomplete,
    UnknownQueue,
)
from zqtwisted.ops.web.letters import MAX_BROWSE, letter_id
from zqtwisted.runtime.broker import BrokerUnavailable, Delivery, PublishFailed
from zqtwisted.runtime.deadletter import DeadLetter
from zqtwisted.testing import MemoryBroker, MemorySession


def letter_headers(n: int) -> dict[str, Any]:
    return DeadLetter("q", b"", None, "permanent", "PermanentError", f"bad {n}", 1).headers(1_800_000_000.0 + n)


class HeldGets:
    """Wraps a MemorySession: ``get`` waits until the test releases it (or forever)."""

    def __init__(self, session: MemorySession) -> None:
        self._session = session
        self.waiting: list[tuple[str, Deferred[Delivery | None]]] = []
        self.is_open = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def get(self, queue: str) -> Deferred[Delivery | None]:
        d: Deferred[Delivery | None] = Deferred()
        self.waiting.append((queue, d))
        return d

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for queue, d in waiting:
            self._session.get(queue).chainDeferred(d)


class SlowBroker:
    """A MemoryBroker whose session holds every ``get``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        session = broker.current_session()
        assert session is not None
        self.held = HeldGets(session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def session(self, timeout: float | None = None) -> Deferred[Any]:
        return succeed(self.held)


class DeadLetterTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.connect()
        self.masker = SecretMasker()
        self.letters = DeadLetters(self.broker, self.clock, ["q"], self.masker, timeout=5)

    def dead(self, n: int) -> list[tuple[bytes, dict[str, Any]]]:
        session = self.broker.current_session()
        assert session is not None
        made = []
        for i in range(n):
            body = json.dumps({"id": i, "failed_tries": 3, "password": "pw"}).encode()
            headers = letter_headers(i)
            session.publish("q.failed", body, headers)
            made.append((body, headers))
        self.broker.published.clear()
        return made

    def waiting(self, queue: str = "q.failed") -> list[int]:
        return [json.loads(b)["id"] for b in self.broker.messages(queue)]

    def test_page_lists_in_order_and_gives_every_letter_back(self) -> None:
        """A page holds letters offset..offset+limit, masked; afterwards every letter waits in place."""
        self.dead(5)
        page = self.successResultOf(self.letters.page("q", 2, 2))
        self.assertEqual((page.queue, page.total, page.offset, page.limit), ("q", 5, 2, 2))
        self.assertEqual([json.loads(v.body)["id"] for v in page.letters], [2, 3])
        self.assertEqual(json.loads(page.letters[0].body)["password"], "***")
        self.assertEqual(page.letters[0].message, "bad 2")
        self.assertEqual(self.waiting(), [0, 1, 2, 3, 4])
        self.assertEqual(self.broker.unacked("q.failed"), 0)
        empty = self.successResultOf(self.letters.page("q", 10, 2))
        self.assertEqual((empty.total, list(empty.letters)), (5, []))

    def test_listing_is_bounded(self) -> None:
        """Listing never takes more than MAX_BROWSE letters off the queue."""
        self.dead(3)
        page = self.successResultOf(self.letters.page("q", MAX_BROWSE - 1, 100))
        self.assertEqual(page.letters, [])

    def test_page_masks_through_the_offload(self) -> None:
        """The bodies of a page are masked through ``offload`` (a thread pool in the service)."""
        ran: list[int] = []

        def offload(f: Any) -> Deferred[Any]:
            ran.append(1)
            return succeed(f())

        letters = DeadLetters(self.broker, self.clock, ["q"], self.masker, timeout=5, offload=offload)
        self.dead(1)
        self.assertEqual(len(self.successResultOf(letters.page("q", 0, 20)).letters), 1)
        self.assertEqual(ran, [1])

    def test_replay_one(self) -> None:
        """Replay moves exactly that letter to its queue (failed_tries removed); the others stay in order."""
        made = self.dead(3)
        wanted = letter_id(*made[1])
        self.assertEqual(self.successResultOf(self.letters.replay("q", wanted)), 1)
        self.assertEqual(self.waiting(), [0, 2])
        self.assertEqual([json.loads(b) for b in self.broker.messages("q")], [{"id": 1, "password": "pw"}])
        self.assertEqual(self.broker.unacked("q.failed"), 0)

    def test_replay_unknown_letter(self) -> None:
        """An id that is not there fails with LetterNotFound and leaves every letter in place."""
        self.dead(2)
        self.failureResultOf(self.letters.replay("q", "nope"), LetterNotFound)
        self.assertEqual(self.waiting(), [0, 1])
        self.assertEqual(self.broker.messages("q"), [])

    def test_replay_publish_failure_keeps_the_letter(self) -> None:
        """If the publish is not confirmed, the letter stays a dead letter, in place."""
        made = self.dead(2)
        self.broker.publish_error = PublishFailed("nacked")
        self.failureResultOf(self.letters.replay("q", letter_id(*made[0])), PublishFailed)
        self.assertEqual(self.waiting(), [0, 1])

    def test_replay_all_is_bounded_by_the_count_at_start(self) -> None:
        """Replay all moves every letter waiting at the start, in order, and reports how many."""
        self.dead(250)
        self.assertEqual(self.successResultOf(self.letters.replay_all("q")), 250)
        self.assertEqual(self.waiting(), [])
        self.assertEqual([json.loads(b)["id"] for b in self.broker.messages("q")], list(range(250)))
        self.assertEqual(self.successResultOf(self.letters.replay_all("q")), 0)

    def test_replay_all_stops_at_a_failed_publish(self) -> None:
        """A failed publish stops replay all: the letters not replayed stay dead letters."""
        self.dead(3)
        self.broker.publish_error = PublishFailed("nacked")
        failure = self.failureResultOf(self.letters.replay_all("q"), ReplayIncomplete)
        self.assertEqual(failure.value.replayed, 0)
        self.assertEqual(sorted(self.waiting()), [0, 1, 2])

    def test_purge(self) -> None:
        """Purge deletes the dead letters and says how many."""
        self.dead(4)
        self.assertEqual(self.successResultOf(self.letters.purge("q")), 4)
        self.assertEqual(self.waiting(), [])

    def test_unknown_queue(self) -> None:
        """Only the queues of this process can be acted on."""
        self.assertEqual(self.letters.queues, ["q"])
        for d in (self.letters.page("x", 0, 1), self.letters.purge("x"), self.letters.replay_all("x")):
            self.failureResultOf(d, UnknownQueue)

    def test_no_broker_within_the_deadline(self) -> None:
        """Without a connection the operation fails once its deadline passes."""
        self.broker.disconnect()
        d = self.letters.purge("q")
        self.assertNoResult(d)
        self.clock.advance(5)
        self.failureResultOf(d, BrokerUnavailable)

    def test_a_get_without_answer_times_out_and_gives_back_what_it_held(self) -> None:
        """A get that never answers fails the listing after the deadline; letters taken so far go back."""
        self.dead(3)
        slow = SlowBroker(self.broker)
        letters = DeadLetters(slow, self.clock, ["q"], self.masker, timeout=5)
        d = letters.page("q", 0, 3)
        slow.held.release()  # the first get answers
        self.assertNoResult(d)
        self.clock.advance(5)
        self.failureResultOf(d, BrokerTimeout)
        self.assertEqual(self.waiting(), [0, 1, 2])

    def test_operations_on_a_queue_run_one_at_a_time(self) -> None:
        """A purge asked during a listing waits for it, so the listing's letters are purged too."""
        self.dead(2)
        slow = SlowBroker(self.broker)
        letters = DeadLetters(slow, self.clock, ["q"], self.masker, timeout=5)
        listing = letters.page("q", 0, 5)
        purge = letters.purge("q")
        self.assertNoResult(purge)
        for _ in range(3):
            slow.held.release()
        self.assertEqual(len(self.successResultOf(listing).letters), 2)
        self.assertEqual(self.successResultOf(purge), 2)
