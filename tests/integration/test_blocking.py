"""The blocking publisher (for non-Twisted programs) on the real RabbitMQ."""

from __future__ import annotations

import json
import shutil
import subprocess

import pika
from twisted.trial import unittest

from tests.helpers import environ, require_rabbitmq, unique_queue
from tests.integration.vhost import fresh_vhost, rabbitmqctl, require_rabbitmqctl, vhost_url
from zqtwisted.blocking import BlockingPublisher, configured_publisher, queue_json_publish_blocking


class BlockingPublisherTests(unittest.TestCase):
    def setUp(self) -> None:
        require_rabbitmq(self)
        self.queue = unique_queue()
        self.connect()
        self.addCleanup(lambda: self.connection.close())
        self.addCleanup(lambda: self.channel.queue_delete(self.queue))

    def connect(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
        self.channel = self.connection.channel()

    def bodies(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        while True:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return out
            out.append(json.loads(body))

    def test_publish_is_confirmed_and_persistent(self) -> None:
        """A published event is in the durable queue when the call returns."""
        publisher = BlockingPublisher()
        self.addCleanup(publisher.close)
        publisher.publish_json(self.queue, {"a": 1})
        declared = self.channel.queue_declare(self.queue, durable=True, passive=True)
        self.assertEqual(declared.method.message_count, 1)
        self.assertEqual(self.bodies(), [{"a": 1}])

    def test_reconnects_once_after_a_dropped_connection(self) -> None:
        """After its connection died, the next publish reconnects and succeeds (Zulip's retry)."""
        publisher = BlockingPublisher()
        self.addCleanup(publisher.close)
        publisher.publish_json(self.queue, {"n": 1})
        rabbitmqctl = shutil.which("rabbitmqctl")
        if rabbitmqctl is None:
            self.fail("rabbitmqctl is not installed")
        subprocess.run([rabbitmqctl, "-q", "close_all_connections", "zqtwisted test"], check=True, timeout=60)
        with self.assertLogs("zqtwisted.blocking", "WARNING") as logs:
            publisher.publish_json(self.queue, {"n": 2})
        self.connect()
        self.assertIn("Failed to send to rabbitmq, trying to reconnect and send again", logs.output[0])
        self.assertEqual(self.bodies(), [{"n": 1}, {"n": 2}])

    def test_module_function(self) -> None:
        """queue_json_publish_blocking publishes through a shared publisher."""
        queue_json_publish_blocking(self.queue, {"b": 2})
        self.assertEqual(self.bodies(), [{"b": 2}])


class ConfiguredBrokerTests(unittest.TestCase):
    def setUp(self) -> None:
        require_rabbitmq(self)
        require_rabbitmqctl(self)

    def test_environment_chooses_the_broker(self) -> None:
        """Defect 7: without a URL, queue_json_publish_blocking publishes to $ZQ_BROKER_URL (not the default)."""
        vhost = fresh_vhost(self)
        with environ(ZQ_BROKER_URL=vhost_url(vhost), ZQ_CONFIG=""):
            queue_json_publish_blocking("zq_blocking_env", {"a": 1})
            configured_publisher().close()
        rows = rabbitmqctl("-q", "list_queues", "-p", vhost, "name", "messages").split()
        self.assertEqual(rows[-2:], ["zq_blocking_env", "1"])
