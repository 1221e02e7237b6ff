"""user_activity and user_activity_interval in Zulip mode: a real ``twistd zqworkers`` child, PostgreSQL, RabbitMQ.

Events are built as Zulip's ``update_user_activity`` (zerver/decorator.py) and
``update_user_activity_interval`` (zerver/actions/user_activity.py) build them
(tests/zulip_activity_events.py) and published to the queues they publish to.  The
database is a throwaway one loaded from the schema fixture, reached through a cuttable
TCP proxy (the shared PostgreSQL is never stopped).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import deferLater

from tests.contract import inline
from tests.helpers import free_port
from tests.integration.base import IntegrationCase
from tests.integration.proxy import CuttableProxy
from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_activity_events import user_activity_event, user_activity_interval_event, user_activity_queue
from tests.zulip_db import ZulipTestDatabase
from zqtwisted.zulip.activity import MIN_INTERVAL_LENGTH

REPO = Path(__file__).resolve().parents[2]
ACTIVITY = "user_activity"
INTERVAL = "user_activity_interval"
PREFETCH = 400  # UserActivityWorker.prefetch: the most a killed worker can leave unacked
T0 = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)
Key = tuple[int, int, str]


class ZulipActivityTests(IntegrationCase):
    timeout = 300

    def setUp(self):  # type: ignore[no-untyped-def]
        require_postgres(self)
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.pg = CuttableProxy(reactor, port=5432)
        self.pg.start()
        self.addCleanup(lambda: ensureDeferred(self.pg.stop()))
        realm = self.db.realm("zulip", "Zulip Dev")
        self.users = [self.db.user(realm, f"user{i}@zulip.example.com", f"User {i}") for i in range(50)]
        self.clients = [self.db.client_id] + [self.db.insert("zerver_client", name=n) for n in ("ZulipMobile", "API")]
        self.queries = [f"/api/v1/endpoint{i}" for i in range(19)] + ["send_message_backend"]
        return super().setUp()

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)

    async def purge(self) -> None:
        session = await self.direct.session(30)
        for queue in (ACTIVITY, INTERVAL, f"{ACTIVITY}.failed", f"{INTERVAL}.failed"):
            await session.declare_queue(queue)
            await session.purge(queue)

    def write_config(self, zulip: bool = True) -> Path:
        path = Path(self.tmp) / f"zqtwisted-{len(self.children)}.toml"
        text = f"""
[workers]
drain_timeout = 5
http = "tcp:{self.http_port}:interface=127.0.0.1"
[paths]
stats_dir = "{self.tmp}"
error_dir = "{self.tmp}"
[queues.{ACTIVITY}]
retry_base = 0.2
retry_cap = 1.0
[queues.{INTERVAL}]
retry_base = 0.2
retry_cap = 1.0
"""
        if zulip:
            text += f"""
[zulip]
database = "host=127.0.0.1 port={self.pg.listen_port} dbname={self.db.name} user=postgres"
external_host = "zulip.example.com"
query_timeout = 3
connect_timeout = 2
"""
        path.write_text(text)
        return path

    http_port = 0

    def spawn(self, *queues: str, zulip: bool = True) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(self.write_config(zulip))}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / f"twistd-{len(self.children)}.log", "wb")
        self.addCleanup(log.close)
        args = [arg for queue in queues for arg in ("--queue", queue)]
        child = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "zqworkers",
             *args],
            env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.children.append(child)
        return child

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(Path(self.tmp).glob("twistd-*.log")))

    async def stop(self, child: subprocess.Popen[bytes]) -> None:
        child.send_signal(signal.SIGTERM)
        await self.until(lambda: child.poll() is not None, timeout=30)

    async def publish_all(self, events: list[dict[str, Any]]) -> None:
        """Each event to the queue Zulip's publisher picks, confirmed, 500 at a time."""
        session = await self.direct.session(30)
        for queue in {user_activity_queue(e["user_profile_id"]) if "client_id" in e else INTERVAL for e in events}:
            await session.declare_queue(queue)
        for start in range(0, len(events), 500):
            chunk = events[start : start + 500]
            sent = [
                self.direct.publish(
                    user_activity_queue(e["user_profile_id"]) if "client_id" in e else INTERVAL,
                    json.dumps(e).encode(),
                    timeout=30,
                )
                for e in chunk
            ]
            await DeferredList(sent, fireOnOneErrback=True, consumeErrors=True)

    def stream(self, count: int) -> tuple[list[dict[str, Any]], Counter[Key], dict[Key, int]]:
        """``count`` requests' events (50 users, 3 clients, 20 queries, shuffled times): events, counts, latest."""
        rng = random.Random(16)
        events = []
        for _ in range(count):
            user = rng.choice(self.users)
            client = rng.choice(self.clients)
            query = rng.choice(self.queries)
            now = T0 + timedelta(seconds=rng.randrange(0, 86400))
            event = user_activity_event(user, client, "/json/unused", now, query=query)
            assert event is not None
            events.append(event)
        counts: Counter[Key] = Counter((e["user_profile_id"], e["client_id"], e["query"]) for e in events)
        latest: dict[Key, int] = {}
        for e in events:
            key = (e["user_profile_id"], e["client_id"], e["query"])
            latest[key] = max(latest.get(key, 0), e["time"])
        return events, counts, latest

    def written(self) -> dict[Key, tuple[int, int]]:
        rows = self.db.execute(
            "SELECT user_profile_id, client_id, query, count, extract(epoch from last_visit)::bigint "
            "FROM zerver_useractivity"
        )
        return {(u, c, q): (n, t) for u, c, q, n, t in rows}

    def total(self) -> int:
        return int(self.db.execute("SELECT coalesce(sum(count), 0) FROM zerver_useractivity")[0][0])

    @inline
    async def test_ten_thousand_events_end_as_zulips_rows(self) -> None:
        """10,000 events with duplicates: counts per key sum to 10,000, last_visit is each key's latest time."""
        await self.purge()
        events, counts, latest = self.stream(10_000)
        self.assertLess(len(counts), 3000, "the stream has duplicates")
        bad = dict(events[0], query="/" + "x" * 60)
        unknown = dict(events[1], user_profile_id=99999)
        await self.publish_all([*events[:5000], bad, unknown, *events[5000:]])
        child = self.spawn(ACTIVITY)
        await self.until(lambda: self.total() >= 10_000, timeout=120)
        await self.until(lambda: "does not exist" in self.log_text(), timeout=30)
        await self.stop(child)
        self.assertEqual(self.total(), 10_000)
        written = self.written()
        self.assertEqual({k: n for k, (n, _) in written.items()}, dict(counts))
        self.assertEqual({k: t for k, (_, t) in written.items()}, latest)
        dead = await self.dead_letters(ACTIVITY)
        self.assertEqual(sorted(h["reason"] for _, h in dead), ["malformed", "permanent"])
        self.assertEqual(
            sorted(json.loads(b)["user_profile_id"] for b, _ in dead), sorted([bad["user_profile_id"], 99999])
        )
        self.assertEqual(await self.counts(ACTIVITY), (0, 0))

    @inline
    async def test_sigkill_mid_stream_then_restart(self) -> None:
        """SIGKILL while writing, then a new worker: every event counted; only redelivered ones counted twice."""
        await self.purge()
        events, counts, latest = self.stream(10_000)
        await self.publish_all(events)
        child = self.spawn(ACTIVITY)
        await self.until(lambda: self.total() >= 3000, timeout=120, step=0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        at_kill = self.total()
        self.assertLess(at_kill, 10_000, "killed mid-stream")
        restarted = self.spawn(ACTIVITY)
        await self.until(lambda: self.total() >= 10_000, timeout=120)
        await deferLater(reactor, 2, lambda: None)
        await self.stop(restarted)
        self.assertEqual(await self.counts(ACTIVITY), (0, 0), "every event acked")
        total = self.total()
        excess = total - 10_000
        sys.stderr.write(f"\nSIGKILL at {at_kill} events written; after restart {total}: {excess} counted twice\n")
        self.assertGreaterEqual(excess, 0)
        self.assertLessEqual(excess, PREFETCH, "only deliveries unacked at the kill can be redelivered")
        written = self.written()
        self.assertEqual(set(written), set(counts))
        for key, (n, t) in written.items():
            self.assertGreaterEqual(n, counts[key])
            self.assertEqual(t, latest[key])
        self.assertEqual(await self.dead_letters(ACTIVITY), [])

    @inline
    async def test_database_outage_loses_and_doubles_nothing(self) -> None:
        """PostgreSQL cut off: batches wait (not dead-lettered, /ready 503), then every count is written once."""
        await self.purge()
        self.http_port = free_port()
        events, counts, _ = self.stream(2000)
        child = self.spawn(ACTIVITY)
        await self.publish_all(events[:100])
        await self.until(lambda: self.total() == 100, timeout=60)
        await self.pg.refuse()
        self.pg.cut()
        await self.publish_all(events[100:])
        await deferLater(reactor, 6, lambda: None)
        self.assertEqual(self.total(), 100)
        self.assertEqual(await self.dead_letters(ACTIVITY), [])
        self.pg.start()
        await self.until(lambda: self.total() >= 2000, timeout=90)
        await deferLater(reactor, 1, lambda: None)
        await self.stop(child)
        self.assertEqual(self.total(), 2000)
        self.assertEqual({k: n for k, (n, _) in self.written().items()}, dict(counts))
        self.assertIn("does not answer", self.log_text())
        self.assertEqual(await self.dead_letters(ACTIVITY), [])

    @inline
    async def test_intervals_as_zulip_makes_them(self) -> None:
        """Presence events at t0, t0+600 s, t0+6000 s give Zulip's two intervals; one user's events in order."""
        await self.purge()
        hamlet, othello = self.users[:2]
        times = [T0, T0 + timedelta(seconds=600), T0 + timedelta(seconds=6000)]
        events = [user_activity_interval_event(hamlet, t) for t in times]
        events += [user_activity_interval_event(othello, T0 + timedelta(minutes=m)) for m in range(0, 60, 5)]
        events.append(user_activity_interval_event(99999, T0))
        child = self.spawn(INTERVAL)
        await self.publish_all(events)
        await self.until(lambda: len(self.db.execute("SELECT id FROM zerver_useractivityinterval")) == 3, timeout=60)
        await self.until(lambda: "user 99999 does not exist" in self.log_text(), timeout=30)
        await deferLater(reactor, 1, lambda: None)
        await self.stop(child)
        rows = self.db.execute(
            'SELECT user_profile_id, start, "end" FROM zerver_useractivityinterval ORDER BY user_profile_id, start'
        )
        self.assertEqual(
            [tuple(r) for r in rows],
            [
                (hamlet, T0, times[1] + MIN_INTERVAL_LENGTH),
                (hamlet, times[2], times[2] + MIN_INTERVAL_LENGTH),
                (othello, T0, T0 + timedelta(minutes=55) + MIN_INTERVAL_LENGTH),
            ],
        )
        (dead,) = await self.dead_letters(INTERVAL)
        self.assertEqual((json.loads(dead[0])["user_profile_id"], dead[1]["reason"]), (99999, "permanent"))

    @inline
    async def test_standalone_refuses_to_start(self) -> None:
        """Without [zulip] database, --queue user_activity stops at once with one line saying why; --all skips it."""
        child = self.spawn(ACTIVITY, zulip=False)
        started = time.monotonic()
        await self.until(lambda: child.poll() is not None, timeout=30)
        self.assertNotEqual(child.returncode, 0)
        self.assertLess(time.monotonic() - started, 30)
        self.assertIn(
            "zqworkers: configuration: --queue user_activity: this queue writes Zulip's tables and runs in "
            "Zulip mode only: set [zulip] database",
            self.log_text(),
        )
