"""The blocking publisher's broker comes from the configuration and the environment (no connection made)."""

from __future__ import annotations

import os
import tempfile

from twisted.trial import unittest

from zqtwisted.blocking import configured_publisher
from zqtwisted.config import ConfigError


class ConfiguredPublisherTests(unittest.TestCase):
    def test_environment_url(self) -> None:
        """Defect 7: $ZQ_BROKER_URL is the broker; one publisher per configuration."""
        env = {"ZQ_BROKER_URL": "amqp://zulip:pw@10.1.2.3:5673/zulip"}
        publisher = configured_publisher(env)
        self.assertEqual(publisher.url, "amqp://zulip:pw@10.1.2.3:5673/zulip")
        self.assertIs(configured_publisher(env), publisher)

    def test_config_file(self) -> None:
        """$ZQ_CONFIG's [broker] url and heartbeat are used; a bad file is a ConfigError naming the key."""
        root = tempfile.mkdtemp()
        path = os.path.join(root, "zq.toml")
        with open(path, "w") as f:
            f.write('[broker]\nurl = "amqp://a:b@10.9.9.9:5674/v"\nheartbeat = 0\n')
        publisher = configured_publisher({"ZQ_CONFIG": path})
        self.assertEqual((publisher.url, publisher.heartbeat), ("amqp://a:b@10.9.9.9:5674/v", 0))
        with open(path, "w") as f:
            f.write("[broker]\nheartbeat = -1\n")
        with self.assertRaisesRegex(ConfigError, "broker.heartbeat"):
            configured_publisher({"ZQ_CONFIG": path, "ZQ_BROKER_URL": "amqp://x/"})
