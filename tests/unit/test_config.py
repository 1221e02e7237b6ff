"""Configuration: TOML parsing, validation naming the key, environment overrides."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Any

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


class ClusterConfigTests(unittest.TestCase):
    URLS = ["amqp://u:p@mq1/%2F", "amqp://u:p@mq2/%2F"]

    def test_urls_replace_url(self) -> None:
        """[broker] urls lists a cluster's nodes and replaces url; without it the one url is the node."""
        config = parse_config({"broker": {"urls": self.URLS, "failover_strategy": "round-robin"}})
        self.assertEqual(config.broker.node_urls(), tuple(self.URLS))
        self.assertEqual(config.broker.failover_strategy, "round-robin")
        self.assertEqual(parse_config({}).broker.node_urls(), ("amqp://guest:guest@127.0.0.1:5672/%2F",))

    def test_bad_urls_strategy_and_duplicates(self) -> None:
        """A node URL that is not amqp(s), a node listed twice or an unknown strategy names the key."""
        with self.assertRaisesRegex(ConfigError, r"broker\.urls: expected amqp://"):
            parse_config({"broker": {"urls": ["http://mq1/"]}})
        with self.assertRaisesRegex(ConfigError, r"broker\.urls: a node is listed twice"):
            parse_config({"broker": {"urls": [self.URLS[0], self.URLS[0]]}})
        with self.assertRaisesRegex(ConfigError, r"broker\.failover_strategy: expected one of shuffle, round-robin"):
            parse_config({"broker": {"failover_strategy": "random"}})

    def test_environment_and_command_line(self) -> None:
        """ZQ_BROKER_URLS sets the nodes; ZQ_BROKER_URL or --broker alone name the one node instead."""
        path = Path(self.mktemp())
        path.write_text(f"[broker]\nurls = {self.URLS!r}\n".replace("'", '"'))
        from_env = load_config(str(path), environ={"ZQ_BROKER_URLS": "amqp://a@x/%2F, amqp://a@y/%2F"})
        self.assertEqual(from_env.broker.node_urls(), ("amqp://a@x/%2F", "amqp://a@y/%2F"))
        one = load_config(str(path), environ={"ZQ_BROKER_URL": "amqp://a@z/%2F"})
        self.assertEqual(one.broker.node_urls(), ("amqp://a@z/%2F",))
        both = load_config(str(path), environ={"ZQ_BROKER_URL": "amqp://a@z/%2F", "ZQ_BROKER_URLS": "amqp://a@x/%2F"})
        self.assertEqual(both.broker.node_urls(), ("amqp://a@x/%2F",))
        cli = load_config(str(path), environ={}).with_broker_url("amqp://a@w/%2F")
        self.assertEqual(cli.broker.node_urls(), ("amqp://a@w/%2F",))

    def test_password_file_applies_to_every_node(self) -> None:
        """password_file supplies the password of each node's URL."""
        secret = Path(self.mktemp())
        secret.write_text("s3cret\n")
        config = parse_config(
            {"broker": {"urls": ["amqp://zulip@mq1/%2F", "amqp://zulip@mq2/%2F"], "password_file": str(secret)}}
        )
        self.assertEqual(config.broker.connection_url("amqp://zulip@mq2/%2F"), "amqp://zulip:s3cret@mq2/%2F")

    def test_queue_types(self) -> None:
        """queue_type is classic or quorum, in [workers] (the default) and per queue."""
        config = parse_config({"workers": {"queue_type": "quorum"}, "queues": {"a": {"queue_type": "classic"}}})
        self.assertEqual((config.workers.queue_type, config.queue("a").queue_type), ("quorum", "classic"))
        self.assertIsNone(config.queue("b").queue_type)
        with self.assertRaisesRegex(ConfigError, r"workers\.queue_type: expected one of classic, quorum, got 'stream'"):
            parse_config({"workers": {"queue_type": "stream"}})
        with self.assertRaisesRegex(ConfigError, r"queues\.a\.queue_type: expected one of classic, quorum"):
            parse_config({"queues": {"a": {"queue_type": "lazy"}}})

    def test_delivery_limit_needs_a_quorum_queue(self) -> None:
        """delivery_limit is refused on a classic queue, accepted on a quorum one (its own type or the default)."""
        with self.assertRaisesRegex(ConfigError, r"queues\.a\.delivery_limit: only quorum queues have one"):
            parse_config({"queues": {"a": {"delivery_limit": 5}}})
        with self.assertRaisesRegex(ConfigError, r"queues\.a\.delivery_limit: must be > 0"):
            parse_config({"queues": {"a": {"queue_type": "quorum", "delivery_limit": 0}}})
        config = parse_config({"workers": {"queue_type": "quorum"}, "queues": {"a": {"delivery_limit": 5}}})
        self.assertEqual(config.queue("a").delivery_limit, 5)


class DashboardTokenTests(unittest.TestCase):
    def test_token_inline_or_from_a_file(self) -> None:
        """[workers] http_token, or http_token_file (preferred, stripped); none makes the dashboard read-only."""
        self.assertIsNone(parse_config({}).workers.http_secret())
        inline = parse_config({"workers": {"http_token": "t" * 16}})
        self.assertEqual(inline.workers.http_secret(), "t" * 16)
        path = Path(self.mktemp())
        path.write_text("from-a-file-0123456789\n")
        config = parse_config({"workers": {"http_token": "t" * 16, "http_token_file": str(path)}})
        self.assertEqual(config.workers.http_secret(), "from-a-file-0123456789")

    def test_short_or_unreadable_tokens_are_errors(self) -> None:
        """A token shorter than 16 characters, or a token file that cannot be read, is a ConfigError naming the key."""
        with self.assertRaisesRegex(ConfigError, r"workers\.http_token: too short"):
            parse_config({"workers": {"http_token": "short"}})
        path = Path(self.mktemp())
        path.write_text("short\n")
        with self.assertRaisesRegex(ConfigError, r"workers\.http_token: too short"):
            parse_config({"workers": {"http_token_file": str(path)}}).workers.http_secret()
        with self.assertRaisesRegex(ConfigError, r"workers\.http_token_file: cannot read"):
            parse_config({"workers": {"http_token_file": str(path) + ".missing"}}).workers.http_secret()

    def test_token_is_never_shown_in_errors(self) -> None:
        """A mistyped token is reported without its value."""
        with self.assertRaises(ConfigError) as caught:
            parse_config({"workers": {"http_token": 12345678901234567}})
        self.assertNotIn("12345678901234567", str(caught.exception))


class BoundsTests(unittest.TestCase):
    def test_heartbeat_zero_and_short_limits(self) -> None:
        """heartbeat 0 (Zulip's) is allowed; heartbeat, prefetch and batch_size stop at AMQP's 65535."""
        self.assertEqual(parse_config({"broker": {"heartbeat": 0}}).broker.heartbeat, 0)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"broker": {"heartbeat": 70000}}, "broker.heartbeat"),
            ({"queues": {"noop": {"prefetch": 65536}}}, "queues.noop.prefetch"),
            ({"queues": {"noop": {"batch_size": 100000}}}, "queues.noop.batch_size"),
        ]
        for raw, key in cases:
            with self.assertRaisesRegex(ConfigError, key):
                parse_config(raw)

    def test_secret_files_are_read_at_load(self) -> None:
        """A secret *_file that cannot be read stops loading with one line naming the key."""
        path = Path(self.mktemp())
        path.write_text('[broker]\npassword_file = "/nonexistent/zq-pw"\n')
        with self.assertRaisesRegex(ConfigError, r"^broker.password_file: cannot read /nonexistent/zq-pw"):
            load_config(str(path), environ={})
