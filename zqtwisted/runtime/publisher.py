"""Publishing events from Twisted code, with publisher confirms.

``Publisher.queue_json_publish(queue, event)`` is Zulip's name: it returns a
Deferred that fires once the broker has confirmed the message.  During a reconnect
the publish waits for the next connection, up to ``[broker] publish_timeout``, then
fails loudly with :class:`~zqtwisted.runtime.broker.BrokerUnavailable`; it never vanishes.

There is no default publisher: the composition root builds one and hands it to
the workers (``context.publisher``); other Twisted programs build their own over a
broker.  Programs that are not Twisted use :mod:`zqtwisted.blocking`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail

from zqtwisted.runtime.broker import Broker


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The wire form of an event: one JSON object, UTF-8."""
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a JSON object (a dict), not {type(event).__name__}")
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


class Publisher:
    """Publishes JSON events through a :class:`~zqtwisted.runtime.broker.Broker`."""

    def __init__(self, broker: Broker, timeout: float = 30.0) -> None:
        self.broker = broker
        self.timeout = timeout

    def publish_json(
        self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None
    ) -> Deferred[None]:
        """Publish ``event`` to ``queue``; fires when the broker has confirmed it."""
        try:
            body = encode_event(event)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self.publish(queue, body, headers)

    def queue_json_publish(self, queue: str, event: Mapping[str, Any]) -> Deferred[None]:
        """Zulip's ``queue_json_publish`` for Twisted code; fires when confirmed."""
        return self.publish_json(queue, event)

    def publish(self, queue: str, body: bytes, headers: Mapping[str, Any] | None = None) -> Deferred[None]:
        return self.broker.publish(queue, body, headers, timeout=self.timeout)
