"""zqctl's commands against the in-memory broker."""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.cli.zqctl import (
    cmd_check,
    cmd_failed,
    cmd_publish,
    cmd_purge,
    cmd_queues,
    cmd_replay,
    parser,
)
from zqtwisted.config import Config, PathSettings
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.queues import QueueCount
from zqtwisted.ops.settings import CheckSettings
from zqtwisted.runtime.broker import BrokerUnavailable, PublishFailed
from zqtwisted.runtime.deadletter import replay_body
from zqtwisted.testing import MemoryBroker


class FixedReader:
    """A queue reader that answers with fixed rows."""

    source = "fixed"

    def __init__(self, rows: list[QueueCount]) -> None:
        self.rows = rows

    def read(self) -> Deferred[list[QueueCount]]:
        return succeed(list(self.rows))


class ChannelClosed(Exception):
    reply_code = 404


class NotFoundSession:
    """basic.get on a queue that does not exist: RabbitMQ closes the channel with 404."""

    def get(self, queue: str) -> Deferred[None]:
        return fail(ChannelClosed(f"NOT_FOUND - no queue '{queue}'"))


class CliTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.startService()
        session = self.broker.current_session()
        assert session is not None
        self.session = session
        self.tmp = tempfile.mkdtemp()
        self.config = Config(paths=PathSettings(stats_dir=self.tmp, error_dir=self.tmp))

    def run_cmd(self, command: Any, *argv: str) -> tuple[int, str]:
        args = parser().parse_args(list(argv))
        args.config_obj = self.config
        args.clock = self.clock
        out = io.StringIO()
        code = self.successResultOf(ensureDeferred(command(self.broker, self.session, args, out)))
        return code, out.getvalue()

    def test_publish_one_event(self) -> None:
        """``publish QUEUE JSON`` publishes one compact JSON event."""
        code, out = self.run_cmd(cmd_publish, "publish", "noop", '{"a": 1}')
        self.assertEqual((code, out), (0, "published 1 event(s) to noop\n"))
        self.assertEqual(self.broker.messages("noop"), [b'{"a":1}'])

    def test_publish_rejects_non_objects(self) -> None:
        """A JSON value that is not an object is refused with a usage error."""
        code, _ = self.run_cmd(cmd_publish, "publish", "noop", "[1]")
        self.assertEqual(code, 2)
        self.assertEqual(self.broker.messages("noop"), [])

    def test_purge_known_queue_only(self) -> None:
        """``purge`` empties a known queue and refuses an unknown one, as Zulip's purge_queue."""
        self.run_cmd(cmd_publish, "publish", "noop", "{}")
        code, out = self.run_cmd(cmd_purge, "purge", "noop")
        self.assertEqual(code, 0)
        self.assertIn("purged 1 event(s) from noop", out)
        args = parser().parse_args(["purge", "nope"])
        self.failureResultOf(
            ensureDeferred(cmd_purge(self.broker, self.session, args, io.StringIO())), WorkerDeclarationError
        )

    def look(self, command: Any, reader: Any, *argv: str) -> tuple[int, str]:
        """Run a read-only command over ``reader`` (no broker session at all)."""
        args = parser().parse_args(list(argv))
        args.config_obj = self.config
        args.clock = self.clock
        out = io.StringIO()
        code = self.successResultOf(ensureDeferred(command(reader, args, out)))
        return code, out.getvalue()

    def test_queues_lists_depth_and_consumers(self) -> None:
        """``queues`` shows known queues and the vhost's others: messages, ready, unacked, consumers, dead letters."""
        reader = FixedReader(
            [
                QueueCount("noop", 3, 1, ready=1, unacked=2),
                QueueCount("noop.failed", 4, 0, ready=4),
                QueueCount("outgoing_webhook_responses", 7, 0, ready=7),
            ]
        )
        _, out = self.look(cmd_queues, reader, "queues")
        rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
        self.assertEqual(rows["noop"], ["3", "1", "2", "1", "4"])
        self.assertEqual(rows["outgoing_webhook_responses"], ["7", "7", "0", "0", "-"])
        self.assertEqual(rows["test"], ["-", "-", "-", "-", "-"], "a known queue that does not exist")
        self.assertNotIn("noop.failed", rows)

    def test_failed_lists_without_consuming_and_purges(self) -> None:
        """``failed`` lists dead letters with their reason and leaves them; ``--purge`` empties."""
        self.session.declare_queue("noop.failed")
        self.session.publish("noop.failed", b'{"a": 1}', {"x-zq-reason": "timeout", "x-zq-attempts": 1})
        _, out = self.run_cmd(cmd_failed, "failed", "noop")
        record = json.loads(out.splitlines()[0])
        self.assertEqual((record["reason"], record["body"]), ("timeout", '{"a": 1}'))
        self.assertEqual(len(self.broker.messages("noop.failed")), 1)
        _, out = self.run_cmd(cmd_failed, "failed", "noop", "--purge")
        self.assertEqual(self.broker.messages("noop.failed"), [])

    def test_replay_resets_failed_tries(self) -> None:
        """``replay`` moves dead letters back to their queue with failed_tries removed."""
        self.session.declare_queue("noop.failed")
        for n in range(3):
            self.session.publish("noop.failed", json.dumps({"n": n, "failed_tries": 3}).encode())
        _, out = self.run_cmd(cmd_replay, "replay", "noop", "--limit", "2")
        self.assertIn("replayed 2 event(s)", out)
        self.assertEqual([json.loads(b) for b in self.broker.messages("noop")], [{"n": 0}, {"n": 1}])
        self.assertEqual(len(self.broker.messages("noop.failed")), 1)

    def test_replay_body_keeps_malformed_bodies(self) -> None:
        """A malformed body is replayed as it was."""
        self.assertEqual(replay_body(b"{oops"), b"{oops")
        self.assertEqual(replay_body(b"[1]"), b"[1]")

    def test_check_unknown_without_stats_and_consumers_critical(self) -> None:
        """``check`` follows Zulip's rules; ``--consumers`` is critical when a queue has none."""
        code, out = self.look(cmd_check, FixedReader([]), "check")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"^\d+\|0\|OK\|queues normal")
        code, out = self.look(cmd_check, FixedReader([QueueCount("noop", 0, 1)]), "check")
        self.assertEqual(code, 3, "a consumed stats queue without a stats file is UNKNOWN")
        code, out = self.look(cmd_check, FixedReader([QueueCount("noop", 0, 1)]), "check", "--consumers")
        self.assertEqual(code, 2)
        self.assertIn("queue test has 0 consumers, needs 1", out)
        self.assertNotIn("queue noop has", out)

    def test_zulip_mode_queues_need_consumers_only_in_zulip_mode(self) -> None:
        """``check --consumers`` expects user_activity's consumers only with [zulip] database (as --all runs them)."""
        from zqtwisted.cli.zqctl import enabled_queues
        from zqtwisted.zulip.settings import ZulipSettings

        self.assertNotIn("user_activity", enabled_queues(Config()))
        zulip = ZulipSettings(database="dbname=zulip", external_host="zulip.example.com")
        self.assertIn("user_activity", enabled_queues(Config(sections={"zulip": zulip})))

    def write_stats(self, queue: str, update_time: float) -> None:
        stats = {
            "update_time": update_time,
            "recent_average_consume_time": 0.1,
            "queue_last_emptied_timestamp": 1.0,
            "consumed_since_last_emptied": 5,
        }
        with open(os.path.join(self.tmp, f"{queue}.stats"), "w") as f:
            json.dump(stats, f)

    def test_check_stuck_queue_is_critical(self) -> None:
        """A queue with a consumer, 20 messages (ready + unacked) and stale stats is CRITICAL 'appears to be stuck'."""
        self.clock.advance(1000)
        self.write_stats("noop", 1.0)
        reader = FixedReader([QueueCount("noop", 20, 1, ready=0, unacked=20)])
        code, out = self.look(cmd_check, reader, "check")
        self.assertEqual(code, 2, out)
        self.assertIn("queue noop problem: CRITICAL:queue appears to be stuck, last update 1.0, queue size 20", out)

    def test_check_stuck_seconds_is_a_parameter(self) -> None:
        """``--stuck-seconds`` (and ``[check] stuck_seconds``) replace Zulip's 180 s."""
        self.clock.advance(100)
        self.write_stats("noop", 50.0)
        reader = FixedReader([QueueCount("noop", 20, 1)])
        self.assertEqual(self.look(cmd_check, reader, "check")[0], 0, "50 s old: not stuck under 180 s")
        self.assertEqual(self.look(cmd_check, reader, "check", "--stuck-seconds", "30")[0], 2)

    def test_check_foreign_queues_by_count(self) -> None:
        """A queue nothing of ours serves (Zulip's outgoing_webhook_responses) is judged by its size."""
        reader = FixedReader([QueueCount("outgoing_webhook_responses", 51, 0)])
        code, out = self.look(cmd_check, reader, "check")
        self.assertEqual(code, 2)
        self.assertIn("queue outgoing_webhook_responses problem: CRITICAL:count critical: 51", out)

    def test_check_failed(self) -> None:
        """``check --failed``: dead letters above the limits warn or are critical; none is OK."""
        code, out = self.look(cmd_check, FixedReader([QueueCount("noop.failed", 0, 0)]), "check", "--failed")
        self.assertEqual(code, 0)
        self.assertIn("|0|OK|dead letters normal", out)
        code, out = self.look(cmd_check, FixedReader([QueueCount("noop.failed", 3, 0)]), "check", "--failed")
        self.assertEqual(code, 1)
        self.assertIn("queue noop.failed problem: WARNING:dead letters warning: 3", out)
        self.config = self.config.replace(
            sections={"check": CheckSettings(failed_warning=5, failed_critical=10, failed_limits={"test": [0, 2]})}
        )
        reader = FixedReader([QueueCount("noop.failed", 3, 0), QueueCount("test.failed", 3, 0)])
        code, out = self.look(cmd_check, reader, "check", "--failed")
        self.assertEqual(code, 2)
        self.assertIn("queue test.failed problem: CRITICAL:dead letters critical: 3", out)
        self.assertNotIn("noop.failed", out)

    def test_failed_on_a_missing_queue_lists_nothing(self) -> None:
        """``failed`` on a queue without a .failed queue (basic.get answers 404) lists nothing and creates nothing."""
        session = NotFoundSession()
        args = parser().parse_args(["failed", "noop"])
        out = io.StringIO()
        code = self.successResultOf(ensureDeferred(cmd_failed(self.broker, session, args, out)))  # type: ignore[arg-type]
        self.assertEqual(code, 0)
        self.assertIn("0 dead letter(s) listed for noop (there is no queue noop.failed)", out.getvalue())

    def test_parser_requires_a_command(self) -> None:
        """zqctl without a command is a usage error."""
        with self.assertRaises(SystemExit):
            parser().parse_args([])
        self.assertIsInstance(parser().parse_args(["queues"]), argparse.Namespace)


class HangingSession:
    """A session whose broker never answers (a purge or a get that never returns)."""

    def purge(self, queue: str) -> Deferred[int]:
        return Deferred()

    def get(self, queue: str) -> Deferred[None]:
        return Deferred()


class BrokerTroubleTests(unittest.TestCase):
    """Defect 2: every zqctl command gives up, saying why, instead of hanging."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.broker.startService()
        session = self.broker.current_session()
        assert session is not None
        self.session = session

    def start(self, command: Any, *argv: str, session: Any = None) -> tuple[Deferred[int], io.StringIO]:
        args = parser().parse_args(["--timeout", "2", *argv])
        args.clock = self.clock
        out = io.StringIO()
        return ensureDeferred(command(self.broker, session or self.session, args, out)), out

    def test_publish_gives_up_when_the_broker_blocks_it(self) -> None:
        """Under a resource alarm, publish fails after --timeout saying the broker blocks publishing."""
        self.successResultOf(self.start(cmd_publish, "publish", "noop", '{"a": 1}')[0])
        self.broker.block("low on memory")
        running, _ = self.start(cmd_publish, "publish", "noop", '{"a": 2}')
        self.clock.advance(1.9)
        self.assertNoResult(running)
        self.clock.advance(0.1)
        error = self.failureResultOf(running, PublishFailed).getErrorMessage()
        self.assertEqual(
            error,
            "gave up on event 1: publish not confirmed within 2s: RabbitMQ at memory blocks publishing "
            "(low on memory) (0 event(s) published to noop)",
        )

    def test_operations_that_get_no_answer_give_up(self) -> None:
        """A purge, or a get of ``failed`` / ``replay``, that the broker never answers fails after --timeout."""
        for argv in (("purge", "noop"), ("failed", "noop"), ("failed", "noop", "--purge"), ("replay", "noop")):
            command = {"purge": cmd_purge, "failed": cmd_failed, "replay": cmd_replay}[argv[0]]
            running, _ = self.start(command, *argv, session=HangingSession())
            self.clock.advance(2)
            error = self.failureResultOf(running, BrokerUnavailable).getErrorMessage()
            self.assertTrue(error.startswith("RabbitMQ did not answer within 2s ("), error)

    def test_replay_leaves_excerpts_of_huge_bodies(self) -> None:
        """``replay`` re-publishes whole events only; an excerpt of a body too large stays in .failed, said so."""
        self.session.declare_queue("noop.failed")
        self.session.publish("noop.failed", b'{"pad": "xxx', {"x-zq-original-size": 50_000_000})
        self.session.publish("noop.failed", b'{"n": 1, "failed_tries": 3}')
        running, out = self.start(cmd_replay, "replay", "noop")
        self.assertEqual(self.successResultOf(running), 0)
        self.assertIn("replayed 1 event(s) to noop", out.getvalue())
        self.assertEqual(self.broker.messages("noop"), [b'{"n":1}'])
        self.assertEqual(self.broker.messages("noop.failed"), [b'{"pad": "xxx'])
        self.assertIn("1 dead letter(s) left in noop.failed: they hold an excerpt", out.getvalue())

    def test_replay_stops_at_a_publish_that_fails(self) -> None:
        """A replayed event the broker does not confirm stays in .failed; the command fails saying how far it got."""
        self.session.declare_queue("noop.failed")
        self.session.publish("noop.failed", b'{"n": 1}')
        self.broker.block()
        running, _ = self.start(cmd_replay, "replay", "noop")
        self.clock.advance(2)
        error = self.failureResultOf(running, PublishFailed).getErrorMessage()
        self.assertIn("gave up replaying: publish not confirmed within 2s", error)
        self.assertIn("(0 event(s) replayed to noop)", error)
        self.assertEqual(self.broker.messages("noop.failed"), [b'{"n": 1}'])
