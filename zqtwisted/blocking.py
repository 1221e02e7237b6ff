"""A blocking publisher for programs that are not Twisted (a Django app, a script).

Zulip's behaviour (``queue_json_publish``): one connection per thread, persistent
messages, each queue declared once per connection; on a connection error it logs
``Failed to send to rabbitmq, trying to reconnect and send again``, reconnects and
publishes once more, and a second failure is raised to the caller.  Unlike Zulip it
turns publisher confirms on: a call returns once the broker has the message.

For a cluster and for quorum queues build it from the configuration
(:meth:`BlockingPublisher.from_config`): it then knows every node (``[broker] urls``,
tried in a shuffled order; after a failure the next publish starts from the next
node) and declares each queue with the same arguments as the workers do, without
which RabbitMQ refuses to publish to a quorum queue (PRECONDITION_FAILED).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from zqtwisted.config import DEFAULT_BROKER_URL, Config, load_config, redact_url
from zqtwisted.runtime.declarations import PRECONDITION_FAILED, QueueDeclarations, QueueMismatch, explain_mismatch
from zqtwisted.runtime.failover import SHUFFLE, node_order
from zqtwisted.runtime.publisher import encode_event

logger = logging.getLogger("zqtwisted.blocking")

RETRYABLE = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, ConnectionError, OSError)


class BlockingPublisher:
    """Publishes with confirms over one pika BlockingConnection per thread.

    ``url`` is one node, or the nodes of a cluster: each connection tries them in turn,
    starting from the one after the node whose connection last failed.
    """

    def __init__(
        self,
        url: str | Sequence[str] = DEFAULT_BROKER_URL,
        heartbeat: int = 30,
        connect_timeout: float = 10.0,
        declarations: QueueDeclarations | None = None,
        failover_strategy: str = SHUFFLE,
        rand: Callable[[], float] = random.random,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("no broker URL")
        self.urls = [urls[i] for i in node_order(len(urls), failover_strategy, rand)]
        self.url = self.urls[0]
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.declarations = QueueDeclarations.classic() if declarations is None else declarations
        self._first = 0
        self._local = threading.local()

    @classmethod
    def from_config(cls, config: Config, rand: Callable[[], float] = random.random) -> BlockingPublisher:
        """A publisher for the broker and the queues of a zqtwisted configuration."""
        broker = config.broker
        return cls(
            [broker.connection_url(url) for url in broker.node_urls()],
            broker.heartbeat,
            broker.connect_timeout,
            QueueDeclarations.from_config(config),
            broker.failover_strategy,
            rand,
        )

    def _parameters(self) -> list[pika.URLParameters]:
        """Every node's parameters, from the one after the last failure on."""
        urls = self.urls[self._first :] + self.urls[: self._first]
        parameters = []
        for url in urls:
            params = pika.URLParameters(url)
            params.heartbeat = self.heartbeat
            params.socket_timeout = self.connect_timeout
            params.blocked_connection_timeout = self.connect_timeout
            parameters.append(params)
        return parameters

    def _channel(self) -> BlockingChannel:
        channel: BlockingChannel | None = getattr(self._local, "channel", None)
        if channel is not None and channel.is_open:
            return channel
        connection = pika.BlockingConnection(self._parameters())
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
            declaration = self.declarations(queue)
            try:
                channel.queue_declare(queue=queue, durable=True, arguments=declaration.arguments())
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != PRECONDITION_FAILED:
                    raise
                raise QueueMismatch(explain_mismatch(declaration, str(e.reply_text))) from None
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
            self._first = (self._first + 1) % len(self.urls)  # start from the next node
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


_publishers: dict[Any, BlockingPublisher] = {}
_lock = threading.Lock()
# What chooses the broker when no URL is given: the configuration file and the environment.
CONFIG_ENVIRON = ("ZQ_CONFIG", "ZQ_BROKER_URL", "ZQ_BROKER_URLS")


def configured_publisher(environ: Mapping[str, str] | None = None) -> BlockingPublisher:
    """The shared publisher for the configured broker: ``$ZQ_CONFIG``'s ``[broker]``, ``$ZQ_BROKER_URL`` over it.

    One per configuration (kept while ``$ZQ_CONFIG`` / ``$ZQ_BROKER_URL`` stay the same);
    a bad configuration raises :class:`~zqtwisted.config.ConfigError` naming the key.
    """
    env = os.environ if environ is None else environ
    key = tuple(env.get(name, "") for name in CONFIG_ENVIRON)
    with _lock:
        publisher = _publishers.get(key)
        if publisher is None:
            from zqtwisted.sections import SECTIONS

            publisher = _publishers[key] = BlockingPublisher.from_config(load_config(environ=env, sections=SECTIONS))
    return publisher


def queue_json_publish_blocking(queue: str, event: Mapping[str, Any], url: str | None = None) -> None:
    """Zulip's ``queue_json_publish`` for blocking code, with publisher confirms.

    Without ``url``, the broker (and the queues' declarations) of the configuration:
    ``$ZQ_CONFIG``, with ``$ZQ_BROKER_URL`` overriding its URL, as the workers read them.
    """
    if url is None:
        publisher = configured_publisher()
    else:
        with _lock:
            publisher = _publishers.setdefault(url, BlockingPublisher(url))
    publisher.publish_json(queue, event)
