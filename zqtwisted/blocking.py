"""A blocking publisher for programs that are not Twisted (a Django app, a script).

Zulip's behaviour (``queue_json_publish``): one connection per thread, persistent
messages, each queue declared once per connection; on a connection error it logs
``Failed to send to rabbitmq, trying to reconnect and send again``, reconnects and
publishes once more, and a second failure is raised to the caller.  Unlike Zulip it
turns publisher confirms on: a call returns once the broker has the message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from zqtwisted.config import DEFAULT_BROKER_URL, redact_url
from zqtwisted.runtime.publisher import encode_event

logger = logging.getLogger("zqtwisted.blocking")

RETRYABLE = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, ConnectionError, OSError)


class BlockingPublisher:
    """Publishes with confirms over one pika BlockingConnection per thread."""

    def __init__(self, url: str = DEFAULT_BROKER_URL, heartbeat: int = 30, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self._local = threading.local()

    def _channel(self) -> BlockingChannel:
        channel: BlockingChannel | None = getattr(self._local, "channel", None)
        if channel is not None and channel.is_open:
            return channel
        params = pika.URLParameters(self.url)
        params.heartbeat = self.heartbeat
        params.socket_timeout = self.connect_timeout
        params.blocked_connection_timeout = self.connect_timeout
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.confirm_delivery()
        self._local.connection = connection
        self._local.channel = channel
        self._local.declared = set()
        return channel

    def _publish_once(self, queue: str, body: bytes, headers: Mapping[str, Any] | None) -> None:
        channel = self._channel()
        declared: set[str] = self._local.declared
        if queue not in declared:
            channel.queue_declare(queue=queue, durable=True)
            declared.add(queue)
        properties = pika.BasicProperties(
            delivery_mode=2, content_type="application/json", headers=dict(headers) if headers else None
        )
        # With confirms on, basic_publish returns once the broker acked it and raises
        # NackError / UnroutableError otherwise.
        channel.basic_publish(exchange="", routing_key=queue, body=body, properties=properties, mandatory=True)

    def publish(self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None) -> None:
        try:
            self._publish_once(queue, body, headers)
        except RETRYABLE:
            logger.warning("Failed to send to rabbitmq, trying to reconnect and send again")
            self.close()
            self._publish_once(queue, body, headers)

    def publish_json(self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> None:
        self.publish(queue, encode_event(event), headers)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = self._local.channel = None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except pika.exceptions.AMQPError:
                logger.debug("closing %s failed", redact_url(self.url))


_publishers: dict[str, BlockingPublisher] = {}
_lock = threading.Lock()


def queue_json_publish_blocking(queue: str, event: Mapping[str, Any], url: str = DEFAULT_BROKER_URL) -> None:
    """Zulip's ``queue_json_publish`` for blocking code, with publisher confirms."""
    with _lock:
        publisher = _publishers.setdefault(url, BlockingPublisher(url))
    publisher.publish_json(queue, event)
