"""The missedmessage_emails consumer under the real runner (MemoryBroker + Clock)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import TestCase

from tests.helpers import Harness
from tests.missedmessage_fixtures import stream_event
from tests.resource_fakes import memory_resources
from zqtwisted.config import Config, ConfigError
from zqtwisted.consumers.missedmessage_emails import SPECS, MissedMessageWorker
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.missedmessage.store import MemoryStore
from zqtwisted.missedmessage.unread import HTTPUnreadChecker
from zqtwisted.runtime.consumer import WorkerContext
from zqtwisted.runtime.deadletter import H_MESSAGE


class HoldingStore(MemoryStore):
    """A MemoryStore whose add() commits only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.waiting: list[tuple[Deferred[float | None], Deferred[float | None]]] = []

    def add(self, event: Any, now: float, period: float) -> Deferred[float | None]:
        if not self.hold:
            return super().add(event, now, period)
        d: Deferred[float | None] = Deferred()
        self.waiting.append((d, super().add(event, now, period)))
        return d

    def commit(self) -> None:
        for d, result in self.waiting:
            result.chainDeferred(d)
        self.waiting = []


class MissedMessageHarness:
    def __init__(self, test: TestCase, worker_num: int | None = None, start: bool = True, **settings: Any) -> None:
        queue = "missedmessage_emails" if worker_num is None else f"missedmessage_emails_shard{worker_num}"
        self.store = HoldingStore()
        self.logged: list[dict[str, Any]] = []
        mm = MissedMessageSettings(**settings)

        def build(context: WorkerContext) -> MissedMessageWorker:
            context = dataclasses.replace(context, worker_num=worker_num)
            return MissedMessageWorker(context, settings=mm, store=self.store)

        self.h = Harness(MissedMessageWorker, queue=queue, build=build)
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        worker = self.h.worker
        assert isinstance(worker, MissedMessageWorker)
        self.worker = worker
        worker.log = Logger(observer=cast(ILogObserver, self.logged.append))
        if start:
            test.successResultOf(worker.start())
            test.addCleanup(worker.stop)

    def published(self, queue: str) -> list[dict[str, Any]]:
        return [json.loads(body) for q, body, _ in self.h.broker.published if q == queue]


class DeclarationTests(TestCase):
    def test_declared_sharded(self) -> None:
        """The queue is declared sharded (NAME_shardN under --worker-num), with the [missedmessage] section."""
        (spec,) = SPECS
        self.assertEqual((spec.queue, spec.worker, spec.sharded), ("missedmessage_emails", MissedMessageWorker, True))
        self.assertEqual((spec.section, spec.settings), ("missedmessage", MissedMessageSettings))

    def test_spec_builds_a_worker_over_the_shared_store(self) -> None:
        """With default settings the spec builds a worker over the resources' one store, and no unread check."""
        (spec,) = SPECS
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        settings = MissedMessageSettings(sqlite_path=os.path.join(directory, "mm.sqlite3"))
        resources, reactor, publisher = memory_resources(
            Config(sections=types.MappingProxyType({"missedmessage": settings}))
        )
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), settings, resources)
        assert isinstance(worker, MissedMessageWorker)
        self.assertIs(worker.store, resources.missedmessage_store())
        self.assertIsNone(worker.unread)

    def test_unread_check_over_the_shared_pool(self) -> None:
        """With unread_url the spec's worker asks it through the resources' "unread" pool."""
        (spec,) = SPECS
        settings = MissedMessageSettings(unread_url="https://chat.example.com/unread", unread_timeout=4)
        resources, reactor, publisher = memory_resources()
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), settings, resources)
        assert isinstance(worker, MissedMessageWorker) and isinstance(worker.unread, HTTPUnreadChecker)
        self.assertEqual((worker.unread.url, worker.unread.client.timeout), ("https://chat.example.com/unread", 4))
        self.assertFalse(resources.http_pool("unread").retryAutomatically)


class ConsumerTests(TestCase):
    def test_acked_only_after_commit(self) -> None:
        """The event stays unacked until its row is committed."""
        m = MissedMessageHarness(self)
        m.store.hold = True
        m.h.publish(stream_event(10, 1))
        self.assertEqual(m.h.broker.unacked(m.h.queue), 1)
        m.store.commit()
        m.h.broker.flush()
        self.assertEqual(m.h.broker.unacked(m.h.queue), 0)
        self.assertEqual(len(self.successResultOf(m.store.rows(10))), 1)
        self.assertEqual(m.worker.scheduler.due_at(10) if m.worker.scheduler else None, m.h.clock.seconds() + 120)

    def test_end_to_end_to_email_senders(self) -> None:
        """Two notifications of one topic become one email event on email_senders when due."""
        m = MissedMessageHarness(self, default_batching_period=30)
        m.h.publish(stream_event(10, 1), stream_event(10, 2, topic="lunch"))
        m.h.advance(29)
        self.assertEqual(m.published("email_senders"), [])
        m.h.advance(1)
        (email,) = m.published("email_senders")
        self.assertEqual(email["to_emails"], ["hamlet@example.com"])
        self.assertEqual(len(email["context"]["conversations"][0]["messages"]), 2)
        self.assertEqual(self.successResultOf(m.store.rows(10)), [])

    def test_malformed_event_dead_lettered(self) -> None:
        """An invalid event is dead-lettered with the reason, without being stored."""
        m = MissedMessageHarness(self)
        bad = stream_event(10, 1)
        del bad["user"]
        m.h.publish(bad)
        ((_, headers),) = m.h.dead()
        self.assertIn("missing field 'user'", headers[H_MESSAGE])
        self.assertEqual(self.successResultOf(m.store.rows(10)), [])

    def test_store_failure_is_retried(self) -> None:
        """A store failure makes the event transient: it is re-published with failed_tries."""
        m = MissedMessageHarness(self)
        m.store.fail_next(OSError("database is locked"))
        m.h.publish(stream_event(10, 1))
        m.h.advance(60)
        self.assertEqual(m.h.dead(), [])
        self.assertEqual(len(self.successResultOf(m.store.rows(10))), 1)
        self.assertEqual(self.successResultOf(m.store.rows(10))[0].event.get("failed_tries"), None)

    def test_stop_cancels_the_timers(self) -> None:
        """stop() cancels the timers; the store stays open for its owner (the shared resources) to close."""
        m = MissedMessageHarness(self)
        m.h.publish(stream_event(10, 1))
        self.successResultOf(m.worker.stop())
        self.assertTrue(m.store.is_open)
        self.assertEqual(m.h.clock.getDelayedCalls(), [])


class ShardingTests(TestCase):
    def test_shard_worker_keeps_own_users_and_routes_others(self) -> None:
        """Worker 2 of 2 keeps odd users; an event of another shard is routed to its queue."""
        m = MissedMessageHarness(self, worker_num=2, shards=2)
        m.h.publish(stream_event(11, 1), stream_event(10, 2))
        self.assertEqual(len(self.successResultOf(m.store.rows(11))), 1)
        self.assertEqual(self.successResultOf(m.store.rows(10)), [])
        (routed,) = m.published("missedmessage_emails_shard1")
        self.assertEqual(routed["message_id"], 2)
        self.assertEqual(m.h.broker.unacked(m.h.queue), 0)

    def test_router_without_worker_num(self) -> None:
        """With shards > 1 and no --worker-num, the worker only routes (no store is opened)."""
        m = MissedMessageHarness(self, shards=3)
        m.h.publish(stream_event(10, 1), stream_event(11, 2), stream_event(12, 3))
        self.assertFalse(m.store.is_open)
        self.assertEqual([e["message_id"] for e in m.published("missedmessage_emails_shard2")], [1])
        self.assertEqual([e["message_id"] for e in m.published("missedmessage_emails_shard3")], [2])
        self.assertEqual([e["message_id"] for e in m.published("missedmessage_emails_shard1")], [3])

    def test_worker_num_out_of_range(self) -> None:
        """--worker-num beyond [missedmessage] shards stops start-up with a ConfigError."""
        m = MissedMessageHarness(self, worker_num=3, shards=2, start=False)
        with self.assertRaises(ConfigError):
            m.worker.start()

    def test_worker_num_without_shards_warns(self) -> None:
        """--worker-num with shards = 1 warns that nothing publishes to the shard queue."""
        m = MissedMessageHarness(self, worker_num=1)
        self.assertTrue(any("shards = 1" in str(e.get("log_format")) for e in m.logged))


class ZulipModeTests(TestCase):
    def test_spec_builds_zulip_mode(self) -> None:
        """With [zulip] database: a store over Zulip's table, emails built from Zulip's database, Zulip's events."""
        from tests.zulip_fakes import SETTINGS
        from zqtwisted.errors import MalformedEventError
        from zqtwisted.zulip.missedmessage_store import ZulipNotificationStore

        (spec,) = SPECS
        resources, reactor, publisher = memory_resources(Config(sections=types.MappingProxyType({"zulip": SETTINGS})))
        worker = spec.build(WorkerContext(spec.queue, reactor, publisher), MissedMessageSettings(), resources)
        assert isinstance(worker, MissedMessageWorker)
        assert isinstance(worker.store, ZulipNotificationStore)
        self.assertIs(worker.store.db, resources.zulip_database())
        self.assertIsNotNone(worker.build_emails)
        event = {"user_profile_id": 10, "message_id": 501, "trigger": "mentioned", "mentioned_user_group_id": None}
        self.assertEqual(worker.validate(event), event)
        with self.assertRaises(MalformedEventError):
            worker.validate({"user_profile_id": 10, "message_id": "501", "trigger": "mentioned"})
