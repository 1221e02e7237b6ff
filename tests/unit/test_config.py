"""Configuration: TOML parsing, validation naming the key, environment overrides."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

from twisted.trial import unittest

from zqtwisted.config import ConfigError, ConsumeLimit, load_config, parse_config, redact_url
from zqtwisted.runtime.consumer import QueueWorker
from zqtwisted.runtime.runner_settings import RunnerSettings
from zqtwisted.sections import SECTIONS

REPO = Path(__file__).resolve().parents[2]


class ConfigTests(unittest.TestCase):
    def test_defaults_work_against_local_rabbitmq(self) -> None:
        """With no file at all the broker is the local RabbitMQ with guest/guest."""
        config = load_config(None, environ={})
        self.assertEqual(config.broker.url, "amqp://guest:guest@127.0.0.1:5672/%2F")
        self.assertGreater(config.broker.heartbeat, 0)

    def test_values_are_immutable(self) -> None:
        """The parsed configuration cannot be changed."""
        config = parse_config({"broker": {"heartbeat": 10}})
        with self.assertRaises(FrozenInstanceError):
            config.broker.heartbeat = 5  # type: ignore[misc]
        with self.assertRaises(TypeError):
            config.queues["x"] = None  # type: ignore[index]

    def test_unknown_key_names_the_key(self) -> None:
        """An unknown key stops start-up with a message naming it."""
        with self.assertRaisesRegex(ConfigError, r"unknown key queues\.noop\.prefetsh"):
            parse_config({"queues": {"noop": {"prefetsh": 5}}})
        with self.assertRaisesRegex(ConfigError, r"unknown section \[brokr\] \(known: broker, check, mail, "):
            parse_config({"brokr": {}}, SECTIONS)

    def test_sections_come_from_the_table_given(self) -> None:
        """parse_config knows the core sections plus those of the table it is given, and no others."""

        @dataclass(frozen=True)
        class Extra:
            size: int = 1

        config = parse_config({"extra": {"size": 3}}, {"extra": Extra})
        self.assertEqual(config.section("extra", Extra), Extra(3))
        with self.assertRaisesRegex(
            ConfigError, r"unknown section \[extra\] \(known: broker, paths, queues, workers\)"
        ):
            parse_config({"extra": {}})

    def test_bad_value_names_the_key(self) -> None:
        """A mistyped or out-of-range value names its key."""
        with self.assertRaisesRegex(ConfigError, r"queues\.noop\.concurrency: expected an integer"):
            parse_config({"queues": {"noop": {"concurrency": "lots"}}})
        with self.assertRaisesRegex(ConfigError, r"queues\.noop\.prefetch: must be > 0"):
            parse_config({"queues": {"noop": {"prefetch": 0}}})
        with self.assertRaisesRegex(ConfigError, r"broker\.url"):
            parse_config({"broker": {"url": "http://x"}})

    def test_backoff_cap_near_consumer_timeout_is_rejected(self) -> None:
        """A retry cap that comes near RabbitMQ's consumer_timeout is refused at start-up."""
        with self.assertRaisesRegex(ConfigError, r"retry_cap.*consumer_timeout"):
            parse_config({"queues": {"email_senders": {"retry_cap": 1500}}})

    def test_max_consume_seconds_is_typed_when_parsed(self) -> None:
        """A number is a limit, "none" no limit, absent the worker's default; other values name the key."""
        queues = parse_config(
            {"queues": {"a": {"max_consume_seconds": 5}, "b": {"max_consume_seconds": "none"}, "c": {}}}
        ).queues
        self.assertEqual(queues["a"].max_consume_seconds, ConsumeLimit(5.0))
        self.assertEqual(queues["b"].max_consume_seconds, ConsumeLimit(None))
        self.assertIsNone(queues["c"].max_consume_seconds)
        with self.assertRaisesRegex(ConfigError, r'max_consume_seconds: expected a number or "none", got \'never\''):
            parse_config({"queues": {"push": {"max_consume_seconds": "never"}}})
        with self.assertRaisesRegex(ConfigError, r"max_consume_seconds: must be > 0"):
            parse_config({"queues": {"push": {"max_consume_seconds": 0}}})

    def test_max_consume_seconds_resolves_against_the_worker(self) -> None:
        """RunnerSettings.resolve takes the configured limit, no limit, or the worker class's own."""

        class Slow(QueueWorker):
            max_consume_seconds = 90.0

        queues = parse_config(
            {"queues": {"a": {"max_consume_seconds": "12.5"}, "b": {"max_consume_seconds": "none"}}}
        ).queues
        self.assertEqual(RunnerSettings.resolve(Slow, queues["a"]).timeout, 12.5)
        self.assertIsNone(RunnerSettings.resolve(Slow, queues["b"]).timeout)
        self.assertEqual(RunnerSettings.resolve(Slow, parse_config({}).queue("c")).timeout, 90.0)

    def test_shard_falls_back_to_its_queue(self) -> None:
        """Settings of NAME apply to NAME_shardN unless it has its own."""
        config = parse_config({"queues": {"push": {"concurrency": 7}}})
        self.assertEqual(config.queue("push_shard3").concurrency, 7)
        self.assertEqual(config.queue("other").concurrency, None)

    def test_environment_overrides(self) -> None:
        """ZQ_BROKER_URL and the path variables override the file."""
        path = Path(self.mktemp())
        path.write_text('[broker]\nurl = "amqp://a:b@h1/%2F"\n')
        config = load_config(str(path), environ={"ZQ_BROKER_URL": "amqp://c:d@h2/v", "ZQ_STATS_DIR": "/s"})
        self.assertEqual(config.broker.url, "amqp://c:d@h2/v")
        self.assertEqual(config.paths.stats_dir, "/s")
        config = load_config(None, environ={"ZQ_CONFIG": str(path)})
        self.assertEqual(config.broker.url, "amqp://a:b@h1/%2F")

    def test_invalid_toml_and_missing_file(self) -> None:
        """A missing file or invalid TOML is a ConfigError, not a traceback."""
        with self.assertRaisesRegex(ConfigError, "not found"):
            load_config("/nonexistent/zq.toml", environ={})
        path = Path(self.mktemp())
        path.write_text("[broker\n")
        with self.assertRaisesRegex(ConfigError, "invalid TOML"):
            load_config(str(path), environ={})

    def test_example_config_documents_only_real_options(self) -> None:
        """Uncommenting every option of conf/zqtwisted.toml gives a valid configuration."""
        lines = []
        for line in (REPO / "conf" / "zqtwisted.toml").read_text().splitlines():
            m = re.match(r"^# (\[[\w.]+\]|\w+ = .*)$", line)
            lines.append(m.group(1) if m else line)
        path = Path(self.mktemp())
        path.write_text("\n".join(lines))
        config = load_config(str(path), environ={}, sections=SECTIONS)
        self.assertIn("outgoing_webhooks", config.queues)
        self.assertEqual(set(config.sections), set(SECTIONS) - {"broker", "paths", "workers"})

    def test_parsing_the_shipped_config_imports_no_consumer(self) -> None:
        """Loading conf/zqtwisted.toml with the shipped sections table imports no consumer module."""
        code = (
            "import sys; from zqtwisted.config import load_config; from zqtwisted.sections import SECTIONS; "
            f"load_config({str(REPO / 'conf' / 'zqtwisted.toml')!r}, {{}}, SECTIONS); "
            "print([m for m in sys.modules if m.startswith(('zqtwisted.consumers.', 'zqtwisted.catalog'))])"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
        self.assertEqual(out.stdout.strip(), "[]")

    def test_broker_password_from_file(self) -> None:
        """[broker] password_file supplies the password, kept out of the URL in the file."""
        secret = Path(self.mktemp())
        secret.write_text("p@ss/word\n")
        config = parse_config({"broker": {"url": "amqp://zulip@mq/%2F", "password_file": str(secret)}})
        self.assertEqual(config.broker.connection_url(), "amqp://zulip:p%40ss%2Fword@mq/%2F")
        self.assertEqual(config.broker.url, "amqp://zulip@mq/%2F")

    def test_redact_url(self) -> None:
        """Broker URLs are logged with the password masked."""
        self.assertEqual(redact_url("amqp://zulip:s3cret@mq:5672/%2F"), "amqp://zulip:***@mq:5672/%2F")
        self.assertEqual(redact_url("amqp://mq/%2F"), "amqp://mq/%2F")
