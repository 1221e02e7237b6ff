"""Logs: text and JSON-lines output, level filtering, the stdlib bridge, and no secret ever written."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from zqtwisted.config import parse_config
from zqtwisted.ops.logs import (
    SecretMasker,
    bridge_stdlib_logging,
    make_observer,
    register_config_secrets,
)
from zqtwisted.sections import SECTIONS

BROKER_PASSWORD = "brok3r-Pa55"
SMTP_PASSWORD = "smtp-s3cret/with:odd@chars"
API_KEY = "push-api-key-0123456789"
WEBHOOK_TOKEN = "whtok-abcdef987654"
SECRETS = (BROKER_PASSWORD, SMTP_PASSWORD, API_KEY, WEBHOOK_TOKEN)


def temp_path(case: TestCase) -> str:
    """A fresh path in a temporary directory removed after the test (not under the cwd)."""
    root = tempfile.mkdtemp(prefix="zqtwisted-test-")
    case.addCleanup(shutil.rmtree, root, True)
    return os.path.join(root, "path")


def log_everything(log: Logger) -> None:
    """Every way a secret could slip into a log line."""
    log.info("Connecting to {url}", url=f"amqp://zulip:{BROKER_PASSWORD}@rabbit:5672/%2F")
    log.info("SMTP settings {settings!r}", settings={"host": "smtp", "user": "z", "password": SMTP_PASSWORD})
    log.warn("Bouncer refused key {key}", key=API_KEY)
    log.info(
        "Outgoing webhook event {event}",
        event={"message": {"content": "hi"}, "services": [{"base_url": "https://bot.example", "token": WEBHOOK_TOKEN}]},
    )
    log.info("Calling https://bot.example/hook?token={t}&x=1", t=WEBHOOK_TOKEN)
    log.info("Header Authorization: Bearer {k}", k=API_KEY)
    try:
        raise ConnectionError(f"535 authentication failed for password {SMTP_PASSWORD}")
    except ConnectionError:
        log.failure("Problem handling data on queue {queue}", Failure(), queue="email_senders")


class SecretsTests(TestCase):
    """The secrets test: none of them appears in a text or a JSON log line."""

    def masker(self) -> SecretMasker:
        masker = SecretMasker()
        masker.register(SMTP_PASSWORD, API_KEY)  # what the composition root registers at start
        return masker

    def emit(self, json_lines: bool) -> str:
        out = io.StringIO()
        log = Logger(namespace="zq", observer=make_observer(out, json_lines=json_lines, masker=self.masker()))
        log_everything(log)
        return out.getvalue()

    def assert_clean(self, output: str) -> None:
        for secret in SECRETS:
            self.assertNotIn(secret, output)
        self.assertNotIn("brok3r", output)

    def test_text_output(self) -> None:
        """Text lines (tracebacks included) hold no broker password, SMTP password, API key or webhook token."""
        output = self.emit(json_lines=False)
        self.assert_clean(output)
        self.assertIn("amqp://zulip:***@rabbit", output)
        self.assertIn("Problem handling data on queue email_senders", output)
        self.assertIn("ConnectionError", output)

    def test_json_output(self) -> None:
        """JSON lines hold none of the secrets, and every line is valid JSON with its text."""
        output = self.emit(json_lines=True)
        self.assert_clean(output)
        lines = output.splitlines()
        self.assertEqual(len(lines), 7)
        records = [json.loads(line) for line in lines]
        self.assertEqual(records[0]["log_text"], "Connecting to amqp://zulip:***@rabbit:5672/%2F")
        self.assertEqual(records[2]["log_level_name"], "warn")
        self.assertIn("ConnectionError", records[-1]["log_traceback"])

    def test_stdlib_records_bridged_and_masked(self) -> None:
        """pika's stdlib WARNING records reach twisted.logger, masked; INFO does not."""
        out = io.StringIO()
        publisher = LogPublisher(make_observer(out, masker=self.masker()))
        logger = logging.getLogger("pika.test-bridge")
        logger.propagate = False
        handler = bridge_stdlib_logging(logger=logger, observer=publisher)
        self.addCleanup(logger.removeHandler, handler)
        logger.info("noise")
        logger.warning("Connection to amqp://u:%s@h failed", BROKER_PASSWORD)
        try:
            raise OSError(f"key {API_KEY}")
        except OSError:
            logger.exception("boom")
        text = out.getvalue()
        self.assertNotIn("noise", text)
        self.assertIn("[pika.test-bridge#warn] Connection to amqp://u:***@h failed", text)
        self.assertIn("[pika.test-bridge#error] boom", text)
        self.assert_clean(text)

    def test_config_secrets_registered(self) -> None:
        """register_config_secrets masks the broker password and secrets kept in files."""
        from zqtwisted.ops.sentry import SentrySettings  # noqa: F401 - registers [sentry]

        dsn_file = temp_path(self)
        with open(dsn_file, "w") as f:
            f.write("https://dsnkey-5555@sentry.invalid/1\n")
        config = parse_config(
            {"broker": {"url": f"amqp://zulip:{BROKER_PASSWORD}@rabbit/"}, "sentry": {"dsn_file": dsn_file}},
            SECTIONS,
        )
        masker = SecretMasker()
        register_config_secrets(config, masker)
        self.assertEqual(masker.mask(f"pw {BROKER_PASSWORD} dsn https://dsnkey-5555@x"), "pw *** dsn https://***@x")

    def test_every_node_password_registered(self) -> None:
        """The password of each node in [broker] urls is masked too."""
        config = parse_config({"broker": {"urls": ["amqp://a:node1-pw@mq1/", "amqp://a:node2-pw@mq2/"]}}, SECTIONS)
        masker = SecretMasker()
        register_config_secrets(config, masker)
        self.assertEqual(masker.mask("node1-pw node2-pw"), "*** ***")


class OutputTests(TestCase):
    def test_level_filter(self) -> None:
        """Events below the configured level are dropped."""
        out = io.StringIO()
        log = Logger(observer=make_observer(out, level=LogLevel.warn, masker=SecretMasker()))
        log.info("quiet")
        log.warn("loud {n}", n=1)
        self.assertNotIn("quiet", out.getvalue())
        self.assertIn("loud 1", out.getvalue())

    def test_short_values_not_registered(self) -> None:
        """Secrets shorter than 4 characters are ignored rather than masking common text."""
        masker = SecretMasker()
        masker.register("ab", "")
        self.assertEqual(masker.mask("abc"), "abc")

    def test_plain_words_untouched(self) -> None:
        """Ordinary text that mentions 'basic' or 'token' is not mangled."""
        masker = SecretMasker()
        text = "basic configuration loaded; token bucket refilled"
        self.assertEqual(masker.mask(text), text)
