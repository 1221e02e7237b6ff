"""The SQLite store on a real file through adbapi: the store contract, reopening, and a scheduler restart."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from tests.contract import inline
from tests.missedmessage_fixtures import FakePublisher, StoreContract, private_event, stream_event
from zqtwisted.missedmessage.scheduler import BatchScheduler
from zqtwisted.missedmessage.sqlstore import SQLiteStore
from zqtwisted.missedmessage.store import PendingStore

IAGO = "iago@example.com"


def messages_of(email: dict[str, Any]) -> list[str]:
    return [m["content"] for c in email["context"]["conversations"] for m in c["messages"]]


class SQLiteStoreTests(StoreContract, unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="zqtest-mm-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def make_store(self) -> PendingStore:
        return SQLiteStore(reactor, os.path.join(self.tmp, "sub", "pending.sqlite3"))

    @inline
    async def test_rows_survive_reopen(self) -> None:
        """Rows committed by one store are there for a new store over the same file."""
        first = await self.opened()
        await first.add(stream_event(10, 1), 100.0, 120)
        await first.close()
        second = await self.opened()
        self.assertEqual(await second.due_times(), {10: 220.0})
        self.assertEqual((await second.rows(10))[0].event["user"]["email"], "hamlet@example.com")


class RestartTests(unittest.TestCase):
    """A real SQLite file, a process stopped with pending batches, a new one started."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="zqtest-mm-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.path = os.path.join(self.tmp, "missedmessage.sqlite3")

    async def process(self, clock: Clock, publisher: FakePublisher) -> tuple[BatchScheduler, SQLiteStore]:
        store = SQLiteStore(reactor, self.path)
        await store.open()
        self.addCleanup(store.close)
        scheduler = BatchScheduler(clock, store, publisher.publish_json)
        await scheduler.start()
        return scheduler, store

    @inline
    async def test_restart_sends_each_batch_exactly_once(self) -> None:
        """Batches pending at stop are sent once after restart: overdue at once, the others when due."""
        clock, publisher = Clock(), FakePublisher()
        clock.advance(1_000)
        scheduler, store = await self.process(clock, publisher)
        await scheduler.add(stream_event(10, 1))
        await scheduler.add(stream_event(10, 2, topic="Other"))
        await scheduler.add(private_event(11, 3, period=600))
        await scheduler.stop()
        await store.close()
        self.assertEqual(publisher.published, [])

        # The process was down for 200 s: user 10's batch is overdue, user 11's is not yet due.
        clock2, publisher2 = Clock(), FakePublisher()
        clock2.advance(1_200)
        scheduler2, store2 = await self.process(clock2, publisher2)
        self.assertEqual((scheduler2.due_at(10), scheduler2.due_at(11)), (1_200, 1_600))  # overdue: now
        clock2.advance(0)
        await scheduler2.sending()
        self.assertEqual([messages_of(dict(e)) for e in publisher2.to("email_senders")], [["message 1"], ["message 2"]])
        clock2.advance(400)
        await scheduler2.sending()
        self.assertEqual(len(publisher2.published), 3)
        self.assertEqual(publisher2.published[2][1]["to_emails"], [IAGO])
        await scheduler2.stop()
        await store2.close()

        # A third start finds nothing left to send.
        clock3, publisher3 = Clock(), FakePublisher()
        clock3.advance(5_000)
        scheduler3, _ = await self.process(clock3, publisher3)
        self.assertEqual(clock3.getDelayedCalls(), [])
        await scheduler3.stop()
        self.assertEqual(publisher3.published, [])
