"""Tests for zqtwisted.zulip.settings: the [zulip] section, its checks and secrets."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.config import ConfigError, build_dataclass
from zqtwisted.zulip.settings import ZulipSettings


def parse(**values: object) -> ZulipSettings:
    return build_dataclass(ZulipSettings, values, "zulip")


class SettingsTests(TestCase):
    def secret_file(self, text: str) -> str:
        fd, path = tempfile.mkstemp()
        os.write(fd, text.encode())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        return path

    def test_standalone_by_default(self) -> None:
        """Without a database the section is valid and Zulip mode is off."""
        self.assertFalse(parse().enabled)

    def test_database_needs_external_host(self) -> None:
        """Zulip mode needs Zulip's EXTERNAL_HOST to build realm URLs."""
        with self.assertRaisesRegex(ConfigError, "external_host"):
            parse(database="dbname=zulip")
        self.assertTrue(parse(database="dbname=zulip", external_host="chat.example.com").enabled)

    def test_password_never_in_the_connection_string(self) -> None:
        """A password in the DSN (key=value or URL) is refused: it goes in password_file."""
        for dsn in ("dbname=zulip password=x", "postgresql://zulip:x@db/zulip"):
            with self.assertRaisesRegex(ConfigError, "password_file"):
                parse(database=dsn, external_host="h.example.com")

    def test_dsn_with_password_file(self) -> None:
        """The password from the file is added to a key=value string (quoted) or a URL (escaped)."""
        path = self.secret_file("s3'cr@t\n")
        kv = parse(database="dbname=zulip user=zulip", external_host="h.example.com", password_file=path)
        self.assertEqual(kv.dsn(), "dbname=zulip user=zulip password='s3\\'cr@t'")
        self.assertEqual(kv.described_database(), "dbname=zulip user=zulip")
        url = parse(database="postgresql://zulip@db:5432/zulip", external_host="h.example.com", password_file=path)
        self.assertEqual(url.dsn(), "postgresql://zulip:s3%27cr%40t@db:5432/zulip")

    def test_bad_values_name_the_key(self) -> None:
        """Bad schema, scheme, host, pool bounds, timeouts and api_url each stop start-up naming the key."""
        cases: dict[str, dict[str, Any]] = {
            "schema": {"schema": "Bad Name"},
            "uri_scheme": {"uri_scheme": "ftp://"},
            "pool_min": {"pool_min": 3, "pool_max": 2},
            "query_timeout": {"query_timeout": 0},
            "api_url": {"api_url": "127.0.0.1:9991"},
            "external_host": {"external_host": "bad host"},
            "realm_hosts": {"realm_hosts": {"lear": "a b"}},
            "avatar_salt_file": {"avatar_salt": "x", "avatar_salt_file": "/nowhere"},
            "password_file": {"password_file": "/nowhere/password"},
        }
        for key, values in cases.items():
            with self.assertRaisesRegex(ConfigError, key):
                parse(**values)

    def test_avatar_salt_from_a_file(self) -> None:
        """The avatar salt is read from avatar_salt_file when given."""
        path = self.secret_file("pepper\n")
        self.assertEqual(parse(avatar_salt_file=path).salt(), "pepper")
        self.assertEqual(parse(avatar_salt="inline").salt(), "inline")


class SecretTests(TestCase):
    def test_secrets_are_registered_for_masking(self) -> None:
        """The database password (from its file) and the avatar salt are masked in every log line."""
        from zqtwisted.config import Config
        from zqtwisted.ops.logs import SecretMasker, register_config_secrets

        fd, path = tempfile.mkstemp()
        os.write(fd, b"db-password-123\n")
        os.close(fd)
        self.addCleanup(os.unlink, path)
        zulip = parse(
            database="dbname=zulip", external_host="h.example.com", password_file=path, avatar_salt="salty-456"
        )
        masker = SecretMasker()
        register_config_secrets(Config(sections={"zulip": zulip}), masker)
        self.assertNotIn("db-password-123", masker.mask("connect failed: db-password-123"))
        self.assertNotIn("salty-456", masker.mask("salt salty-456"))
