"""Zulip's queue check on crafted stats files: statuses, messages, Nagios exit codes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.config import ConfigError, parse_config
from zqtwisted.ops.check import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    analyze_queue_stats,
    check_consumers,
    check_failed,
    limits_for,
    parse_stats,
    run_check,
)
from zqtwisted.ops.settings import CheckSettings
from zqtwisted.sections import SECTIONS

NOW = 1_700_000_000
QUEUES = {"email_senders", "outgoing_webhooks", "deferred_work", "missedmessage_mobile_notifications"}


def temp_path(case: TestCase) -> str:
    """A fresh path in a temporary directory removed after the test (not under the cwd)."""
    root = tempfile.mkdtemp(prefix="zqtwisted-test-")
    case.addCleanup(shutil.rmtree, root, True)
    return os.path.join(root, "path")


def stats(update: float = NOW - 5, average: float | None = 0.01, emptied: float = NOW - 60) -> dict[str, Any]:
    return {
        "update_time": update,
        "recent_average_consume_time": average,
        "queue_last_emptied_timestamp": emptied,
        "consumed_since_last_emptied": 3,
    }


class RunCheckTests(TestCase):
    def setUp(self) -> None:
        self.dir = temp_path(self)
        os.makedirs(self.dir)

    def write(self, queue: str, content: dict[str, Any] | str) -> None:
        text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
        with open(os.path.join(self.dir, f"{queue}.stats"), "w") as f:
            f.write(text)

    def check(
        self, counts: dict[str, tuple[int, int]], limits: dict[str, tuple[float, float]] | None = None
    ) -> tuple[int, str]:
        return run_check(counts, self.dir, NOW + 0.7, limits, stats_queues=QUEUES)

    def test_normal(self) -> None:
        """Fresh stats and a small backlog: 0 and Zulip's 'queues normal' line."""
        self.write("email_senders", stats())
        self.assertEqual(self.check({"email_senders": (5, 1)}), (OK, f"{NOW}|0|OK|queues normal"))

    def test_stuck(self) -> None:
        """Stats older than 180 s with more than 10 waiting: CRITICAL 'queue appears to be stuck'."""
        self.write("outgoing_webhooks", stats(update=NOW - 181.5))
        code, text = self.check({"outgoing_webhooks": (11, 1)})
        self.assertEqual(code, CRITICAL)
        self.assertEqual(
            text,
            f"{NOW}|2|CRITICAL|queue outgoing_webhooks problem: CRITICAL:"
            f"queue appears to be stuck, last update {NOW - 181.5}, queue size 11",
        )

    def test_old_stats_with_short_queue_is_fine(self) -> None:
        """Old stats with at most 10 waiting is an idle queue, not a stuck one."""
        self.write("outgoing_webhooks", stats(update=NOW - 1000))
        self.assertEqual(self.check({"outgoing_webhooks": (10, 1)})[0], OK)

    def test_backlog_warning_and_critical(self) -> None:
        """size * average above 30 s warns, above 60 s is critical (default limits)."""
        self.write("outgoing_webhooks", stats(average=0.5))
        code, text = self.check({"outgoing_webhooks": (100, 1)})
        self.assertEqual(code, WARNING)
        self.assertIn(
            "queue outgoing_webhooks problem: WARNING:clearing the backlog will take too long: 50.0s, size: 100", text
        )
        code, text = self.check({"outgoing_webhooks": (200, 1)})
        self.assertEqual((code, text.split("|")[2]), (CRITICAL, "CRITICAL"))

    def test_zulip_table_limits(self) -> None:
        """email_senders gets Zulip's 90 / 300 s: 100 s of backlog only warns."""
        self.write("email_senders", stats(average=1.0))
        self.assertEqual(self.check({"email_senders": (80, 1)})[0], OK)
        self.assertEqual(self.check({"email_senders": (100, 1)})[0], WARNING)
        self.assertEqual(self.check({"email_senders": (301, 1)})[0], CRITICAL)

    def test_limits_overridden_per_queue(self) -> None:
        """A mapping overrides the table for one queue."""
        self.write("email_senders", stats(average=1.0))
        self.assertEqual(self.check({"email_senders": (100, 1)}, {"email_senders": (500, 600)})[0], OK)
        self.assertEqual(self.check({"email_senders": (20, 1)}, {"email_senders": (10, 15)})[0], CRITICAL)

    def test_missing_stats_is_unknown(self) -> None:
        """A queue with consumers and no stats file is UNKNOWN, exit 3."""
        code, text = self.check({"email_senders": (0, 1)})
        self.assertEqual(code, UNKNOWN)
        self.assertEqual(text, f"{NOW}|3|UNKNOWN|queue email_senders problem: UNKNOWN:invalid or no stats data")

    def test_invalid_stats_is_unknown(self) -> None:
        """Invalid JSON or missing keys in the stats file are UNKNOWN."""
        self.write("email_senders", "{not json")
        self.assertEqual(self.check({"email_senders": (0, 1)})[0], UNKNOWN)
        self.write("email_senders", {"update_time": NOW})
        self.assertEqual(self.check({"email_senders": (0, 1)})[0], UNKNOWN)

    def test_no_consumers_not_checked_by_stats(self) -> None:
        """A stats queue without consumers is skipped, as Zulip does."""
        self.assertEqual(self.check({"email_senders": (500, 0)})[0], OK)

    def test_just_started_is_ok(self) -> None:
        """No average yet (null) means nothing to estimate: OK."""
        self.write("deferred_work", stats(average=None))
        self.assertEqual(self.check({"deferred_work": (5000, 1)})[0], OK)

    def test_other_queues_by_count(self) -> None:
        """Queues without stats files: more than 10 warns, more than 50 is critical."""
        self.assertEqual(self.check({"foreign": (10, 0)})[0], OK)
        self.assertEqual(
            self.check({"foreign": (11, 0)}),
            (WARNING, f"{NOW}|1|WARNING|queue foreign problem: WARNING:count warning: 11"),
        )
        self.assertEqual(
            self.check({"foreign": (51, 3)})[1], f"{NOW}|2|CRITICAL|queue foreign problem: CRITICAL:count critical: 51"
        )

    def test_dead_letter_queues_skipped(self) -> None:
        """Names that are not \\w+ (email_senders.failed) are not checked."""
        self.assertEqual(self.check({"email_senders.failed": (1000, 0)})[0], OK)

    def test_worst_status_wins_and_messages_join(self) -> None:
        """The exit code is the worst state; problems are joined with '; '."""
        self.write("email_senders", stats(average=1.0))
        code, text = self.check({"email_senders": (100, 1), "foreign": (60, 0), "outgoing_webhooks": (0, 1)})
        self.assertEqual(code, UNKNOWN)
        self.assertEqual(
            text.split("|", 3)[3],
            "queue email_senders problem: WARNING:clearing the backlog will take too long: 100.0s, size: 100; "
            "queue foreign problem: CRITICAL:count critical: 60; "
            "queue outgoing_webhooks problem: UNKNOWN:invalid or no stats data",
        )

    def test_shard_uses_its_queue_limits(self) -> None:
        """missedmessage_mobile_notifications_shard2 gets the 120 / 180 s of its queue."""
        self.write("missedmessage_mobile_notifications_shard2", stats(average=1.0))
        self.assertEqual(self.check({"missedmessage_mobile_notifications_shard2": (100, 1)})[0], OK)
        self.assertEqual(limits_for("missedmessage_mobile_notifications_shard2"), (120, 180))

    def test_stats_queues_need_stats_files(self) -> None:
        """The queues named in stats_queues (zqctl passes every known one) need stats files."""
        code, text = run_check({"noop": (0, 1)}, self.dir, NOW, stats_queues=["noop"])
        self.assertEqual(code, UNKNOWN)
        self.assertIn("queue noop problem", text)
        self.assertEqual(run_check({"noop": (0, 1)}, self.dir, NOW)[0], OK)


class PureTests(TestCase):
    def test_analyze_uses_integer_now(self) -> None:
        """Exactly 180 s old is not yet stuck (Zulip compares > 180)."""
        self.assertEqual(analyze_queue_stats("q", stats(update=NOW - 180, average=1.0), 50, NOW).status, WARNING)

    def test_parse_stats_rejects_wrong_types(self) -> None:
        """A stats file whose values are not numbers is invalid."""
        self.assertEqual(parse_stats(json.dumps(stats(average="slow"))), {})  # type: ignore[arg-type]
        self.assertEqual(parse_stats(None), {})
        self.assertEqual(parse_stats("[]"), {})


class ConsumersCheckTests(TestCase):
    def test_all_queues_have_consumers(self) -> None:
        """Every enabled queue with a consumer: 0."""
        code, text = check_consumers({"a": (0, 1), "b": (3, 2)}, ["a", "b"], NOW)
        self.assertEqual(code, OK)
        self.assertEqual(text, f"{NOW}|0|OK|queue a has 1 consumers, needs 1; queue b has 2 consumers, needs 1")

    def test_missing_consumer_is_critical(self) -> None:
        """A queue without consumers (or not declared at all) is CRITICAL."""
        code, text = check_consumers({"a": (0, 1), "b": (3, 0)}, ["a", "b", "c"], NOW)
        self.assertEqual(code, CRITICAL)
        self.assertEqual(text, f"{NOW}|2|CRITICAL|queue b has 0 consumers, needs 1; queue c has 0 consumers, needs 1")


class SettingsTests(TestCase):
    def test_limits_from_config(self) -> None:
        """[check] limits = {queue = [warning, critical]} parses into a limits mapping."""
        config = parse_config({"check": {"limits": {"email_senders": [10, 20]}}}, SECTIONS)
        self.assertEqual(config.section("check", CheckSettings).as_limits(), {"email_senders": (10.0, 20.0)})

    def test_bad_limits_rejected(self) -> None:
        """A limit that is not [warning <= critical] names the key."""
        with self.assertRaises(ConfigError) as e:
            parse_config({"check": {"limits": {"email_senders": [30, 20]}}}, SECTIONS)
        self.assertIn("check.limits.email_senders", str(e.exception))
        with self.assertRaises(ConfigError):
            parse_config({"check": {"limits": {"email_senders": "fast"}}}, SECTIONS)


class ZeroConsumerStuckTests(RunCheckTests):
    def test_frozen_worker_dropped_by_heartbeats_is_stuck(self) -> None:
        """A stats queue with 0 consumers (heartbeats dropped the frozen worker) and stale stats is CRITICAL 'stuck'."""
        self.write("outgoing_webhooks", stats(update=NOW - 200))
        code, text = self.check({"outgoing_webhooks": (30, 0)})
        self.assertEqual(code, CRITICAL)
        self.assertIn("queue appears to be stuck, last update", text)
        self.assertEqual(self.check({"outgoing_webhooks": (10, 0)})[0], OK, "10 waiting: idle, not stuck")

    def test_stuck_seconds_parameter(self) -> None:
        """The 180 s threshold is a parameter."""
        self.write("outgoing_webhooks", stats(update=NOW - 20))
        counts = {"outgoing_webhooks": (30, 1)}
        self.assertEqual(run_check(counts, self.dir, NOW, stats_queues=QUEUES)[0], OK)
        self.assertEqual(run_check(counts, self.dir, NOW, stats_queues=QUEUES, stuck_seconds=10)[0], CRITICAL)

    def test_zulip_normal_queues_use_stats_rules(self) -> None:
        """Zulip's normal_queues (user_activity) write stats even when zqtwisted does not serve them."""
        code, _ = run_check({"user_activity": (0, 1)}, self.dir, NOW, stats_queues=())
        self.assertEqual(code, UNKNOWN)

    def test_dotted_and_tornado_names(self) -> None:
        """Dotted names are skipped; notify_tornado queues are never judged by stats."""
        self.assertEqual(self.check({"outgoing_webhooks.failed": (500, 0), "notify_tornado": (3, 1)})[0], OK)


class FailedCheckTests(TestCase):
    def test_limits(self) -> None:
        """Dead letters above warning warn, above critical are critical, per queue; other queues are ignored."""
        limits = {"email_senders": (10, 20)}.get
        counts = {"email_senders.failed": (15, 0), "noop.failed": (0, 0), "noop": (100, 0), ".failed": (9, 0)}
        code, text = check_failed(counts, NOW, lambda q: limits(q) or (0, 100))
        self.assertEqual(
            (code, text),
            (WARNING, f"{NOW}|1|WARNING|queue email_senders.failed problem: WARNING:dead letters warning: 15"),
        )
        code, text = check_failed({"x.failed": (101, 0)}, NOW)
        self.assertEqual(code, CRITICAL)
        self.assertEqual(check_failed({}, NOW), (OK, f"{NOW}|0|OK|dead letters normal"))

    def test_settings(self) -> None:
        """[check] failed limits and stuck_seconds are validated; failed_limits_for falls back to the defaults."""
        settings = CheckSettings(failed_warning=1, failed_critical=5, failed_limits={"q": [2, 3]})
        self.assertEqual((settings.failed_limits_for("q"), settings.failed_limits_for("r")), ((2, 3), (1, 5)))
        for raw, key in [
            ({"failed_warning": 9, "failed_critical": 1}, "failed_warning"),
            ({"failed_limits": {"q": [1.5, 3]}}, "failed_limits.q"),
            ({"stuck_seconds": 0}, "stuck_seconds"),
            ({"timeout": 0}, "timeout"),
            ({"rabbitmqctl": ""}, "rabbitmqctl"),
            ({"management_url": "ftp://x"}, "management_url"),
            ({"management_password": "a", "management_password_file": "/x"}, "management_password_file"),
        ]:
            with self.assertRaisesRegex(ConfigError, f"check.{key}"):
                parse_config({"check": raw}, SECTIONS)
