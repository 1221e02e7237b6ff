"""Tests for zqtwisted.push.settings: the [push] section."""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.trial.unittest import TestCase

from zqtwisted.config import ConfigError, parse_config
from zqtwisted.push.settings import PushSettings
from zqtwisted.sections import SECTIONS

BOUNCER = {"bouncer_url": "https://push.example.com", "server_uuid": "uuid-1", "api_key": "k"}


def push(**values: object) -> PushSettings:
    return parse_config({"push": values}, SECTIONS).section("push", PushSettings)


class PushSettingsTests(TestCase):
    def test_defaults(self) -> None:
        """Without [push]: the log backend, a 15 s deadline, one shard."""
        settings = parse_config({}, SECTIONS).section("push", PushSettings)
        self.assertEqual((settings.effective_backend, settings.timeout, settings.shards), ("log", 15.0, 1))

    def test_bouncer_url_chooses_the_bouncer(self) -> None:
        """With bouncer_url and no backend the bouncer is used; backend = "log" overrides it."""
        self.assertEqual(push(**BOUNCER).effective_backend, "bouncer")
        self.assertEqual(push(backend="log", **BOUNCER).effective_backend, "log")

    def test_bouncer_requirements(self) -> None:
        """The bouncer backend needs bouncer_url, server_uuid and an API key; errors name the key."""
        cases: list[tuple[dict[str, object], str]] = [
            ({"backend": "bouncer"}, "push.bouncer_url: required"),
            ({"bouncer_url": "https://push.example.com", "api_key": "k"}, "push.server_uuid: required"),
            ({"bouncer_url": "https://push.example.com", "server_uuid": "u"}, "push.api_key: required"),
            ({**BOUNCER, "bouncer_url": "push.example.com"}, "push.bouncer_url: expected an http(s):// URL"),
            ({"backend": "apns"}, "push.backend: expected one of log, bouncer"),
            ({"timeout": 0}, "push.timeout: must be > 0"),
            ({"shards": 0}, "push.shards: must be >= 1"),
            ({"realm_url": "chat"}, "push.realm_url: expected an http(s):// URL"),
            ({**BOUNCER, "api_key_file": "/x"}, "push.api_key_file: give api_key or api_key_file, not both"),
        ]
        for values, message in cases:
            with self.assertRaises(ConfigError) as caught:
                push(**values)
            self.assertIn(message, str(caught.exception))

    def test_api_key_file(self) -> None:
        """The API key may come from a file; an unreadable or empty file is an error naming the key."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "key")
        with open(path, "w") as f:
            f.write("s3cret\n")
        values = {k: v for k, v in BOUNCER.items() if k != "api_key"}
        self.assertEqual(push(api_key_file=path, **values).secret(), "s3cret")
        with self.assertRaises(ConfigError) as caught:
            push(api_key_file=os.path.join(directory, "missing"), **values)
        self.assertIn("push.api_key_file: cannot read", str(caught.exception))
        open(path, "w").close()
        with self.assertRaises(ConfigError) as caught:
            push(api_key_file=path, **values)
        self.assertIn("the file is empty", str(caught.exception))

    def test_api_key_not_shown_in_errors(self) -> None:
        """A mistyped api_key is reported without its value."""
        with self.assertRaises(ConfigError) as caught:
            push(api_key=12345)
        self.assertNotIn("12345", str(caught.exception))
