"""Shared by the missed-message tests: event builders, fakes, and the store contract."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.trial import unittest

from tests.contract import inline
from zqtwisted.missedmessage.store import PendingStore, Shard
from zqtwisted.testing import RecordingPublisher

USERS = {
    10: ("hamlet@example.com", "Hamlet"),
    11: ("iago@example.com", "Iago"),
    12: ("cordelia@example.com", "Cordelia"),
}


def stream_event(
    user: int,
    message_id: int,
    stream: str = "Verona",
    topic: str = "Lunch",
    sender: str = "Othello",
    content: str | None = None,
    period: float | None = None,
    timestamp: float | None = None,
    **message: Any,
) -> dict[str, Any]:
    """A valid channel-message notification."""
    email, name = USERS.get(user, (f"user{user}@example.com", f"User {user}"))
    user_block: dict[str, Any] = {"email": email, "full_name": name}
    if period is not None:
        user_block["batching_period_seconds"] = period
    return {
        "user_profile_id": user,
        "message_id": message_id,
        "trigger": "mentioned",
        "mentioned_user_group_id": None,
        "user": user_block,
        "message": {
            "id": message_id,
            "type": "stream",
            "stream_name": stream,
            "topic": topic,
            "sender_full_name": sender,
            "sender_email": f"{sender.lower()}@example.com",
            "content": content if content is not None else f"message {message_id}",
            "rendered_content": f"<p>message {message_id}</p>",
            "timestamp": timestamp if timestamp is not None else 1_700_000_000 + message_id,
            "url": f"https://chat.example.com/#narrow/near/{message_id}",
            **message,
        },
    }


def private_event(
    user: int, message_id: int, sender: str = "Othello", others: Sequence[str] = (), **kwargs: Any
) -> dict[str, Any]:
    """A direct-message notification from ``sender`` (with ``others`` for a group DM)."""
    event = stream_event(user, message_id, sender=sender, **kwargs)
    message = event["message"]
    del message["stream_name"], message["topic"]
    message["type"] = "private"
    if others:
        email, name = USERS.get(user, (f"user{user}@example.com", f"User {user}"))
        people = [sender, *others]
        message["recipients"] = [{"email": email, "full_name": name}] + [
            {"email": f"{p.lower()}@example.com", "full_name": p} for p in people
        ]
    event["trigger"] = "direct_message"
    return event


class FakePublisher(RecordingPublisher):
    """A RecordingPublisher whose emails to an address in ``failing`` fail."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def publish_json(
        self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None
    ) -> Deferred[None]:
        if set(event.get("to_emails") or ()) & self.failing:
            return fail(ConnectionError("broker unavailable"))
        return super().publish_json(queue, event, headers)


if TYPE_CHECKING:
    _Base = unittest.TestCase
else:
    _Base = object


class StoreContract(_Base):
    """Mixin for a trial TestCase; ``make_store()`` returns an unopened store."""

    store: PendingStore
    _ids = itertools.count(1)

    def make_store(self) -> PendingStore:
        raise NotImplementedError

    async def opened(self) -> PendingStore:
        self.store = self.make_store()
        await self.store.open()
        self.addCleanup(self.store.close)
        return self.store

    @inline
    async def test_add_anchors_at_first(self) -> None:
        """The first notification sets the due time; later ones join it and fire with it."""
        store = await self.opened()
        self.assertEqual(await store.add(stream_event(10, 1), 100.0, 120), 220.0)
        self.assertEqual(await store.add(stream_event(10, 2), 200.0, 120), 220.0)
        rows = await store.rows(10)
        self.assertEqual([(r.message_id, r.due) for r in rows], [(1, 220.0), (2, 220.0)])
        self.assertEqual(rows[0].event["message"]["content"], "message 1")

    @inline
    async def test_shorter_period_caps_due(self) -> None:
        """A user who shortened their period is never scheduled past now + period."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 600)
        self.assertEqual(await store.add(stream_event(10, 2), 110.0, 10), 120.0)

    @inline
    async def test_duplicate_message_ignored(self) -> None:
        """A redelivered notification of the same message adds no second row."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 120)
        await store.add(stream_event(10, 1), 105.0, 120)
        self.assertEqual(len(await store.rows(10)), 1)

    @inline
    async def test_due_times_per_user_and_shard(self) -> None:
        """due_times gives each user's earliest batch, filtered by shard."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 120)
        await store.add(stream_event(11, 2), 130.0, 60)
        await store.add(stream_event(12, 3), 140.0, 10)
        self.assertEqual(await store.due_times(), {10: 220.0, 11: 190.0, 12: 150.0})
        self.assertEqual(await store.due_times(Shard(2, 1)), {10: 220.0, 12: 150.0})
        self.assertEqual(await store.due_times(Shard(2, 2)), {11: 190.0})
        self.assertEqual(await store.next_due(11), 190.0)
        self.assertIsNone(await store.next_due(99))

    @inline
    async def test_claim_only_due_rows_once(self) -> None:
        """A claim takes the due rows of one user; a second claim gets nothing while it holds."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 120)
        await store.add(stream_event(10, 2), 110.0, 120)
        await store.add(stream_event(11, 3), 110.0, 120)
        self.assertEqual(await store.claim(10, 219.0, 600.0, "a"), [])
        claimed = await store.claim(10, 220.0, 600.0, "a")
        self.assertEqual([r.message_id for r in claimed], [1, 2])
        self.assertEqual(await store.claim(10, 221.0, 600.0, "b"), [])
        self.assertEqual(await store.next_due(10), 600.0)
        self.assertEqual(await store.delete("a"), 2)
        self.assertEqual(await store.rows(10), [])
        self.assertEqual(len(await store.rows(11)), 1)

    @inline
    async def test_new_rows_during_claim_start_a_new_batch(self) -> None:
        """A notification arriving while a batch is claimed is not part of it and gets its own due time."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 120)
        await store.claim(10, 220.0, 600.0, "a")
        self.assertEqual(await store.add(stream_event(10, 2), 225.0, 120), 345.0)
        self.assertEqual(await store.delete("a"), 1)
        self.assertEqual([r.message_id for r in await store.rows(10)], [2])

    @inline
    async def test_release_and_expiry(self) -> None:
        """Released rows are due again at once; an expired claim can be taken by another token."""
        store = await self.opened()
        await store.add(stream_event(10, 1), 100.0, 120)
        await store.claim(10, 220.0, 600.0, "a")
        await store.release("a")
        self.assertEqual(await store.next_due(10), 220.0)
        await store.claim(10, 230.0, 600.0, "b")
        self.assertEqual([r.message_id for r in await store.claim(10, 600.0, 900.0, "c")], [1])
        self.assertEqual(await store.delete("b"), 0)
        self.assertEqual(await store.delete("c"), 1)

    @inline
    async def test_closed_store_fails(self) -> None:
        """Using a closed store fails through the Deferred."""
        store = await self.opened()
        await store.close()
        with self.assertRaises(Exception):  # noqa: B017
            await store.add(stream_event(10, 1), 100.0, 120)
