"""queue_json_publish for Twisted code: confirmed publishes, bounded waits, loud failures."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from zqtwisted.runtime.broker import BrokerUnavailable
from zqtwisted.runtime.publisher import Publisher, encode_event
from zqtwisted.testing import MemoryBroker


class PublisherTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(self.clock)
        self.publisher = Publisher(self.broker, timeout=10)

    def test_publish_json_fires_when_confirmed(self) -> None:
        """publish_json fires once the broker has the message, as compact UTF-8 JSON."""
        self.broker.startService()
        self.successResultOf(self.publisher.publish_json("q", {"text": "é"}))
        self.assertEqual(self.broker.messages("q"), [b'{"text":"\\u00e9"}'])

    def test_waits_for_reconnect_then_publishes(self) -> None:
        """During a reconnect the publish waits instead of failing at once."""
        d = self.publisher.publish_json("q", {"a": 1})
        self.assertNoResult(d)
        self.clock.advance(5)
        self.broker.startService()
        self.successResultOf(d)

    def test_fails_loudly_after_the_timeout(self) -> None:
        """With no connection within the timeout the publish fails with BrokerUnavailable."""
        d = self.publisher.publish_json("q", {"a": 1})
        self.clock.advance(10)
        self.failureResultOf(d, BrokerUnavailable)

    def test_non_object_events_are_refused(self) -> None:
        """An event must be a JSON object."""
        self.failureResultOf(self.publisher.publish_json("q", [1, 2]), TypeError)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            encode_event("x")  # type: ignore[arg-type]

    def test_queue_json_publish_is_zulips_name_for_publish_json(self) -> None:
        """Publisher.queue_json_publish publishes the event and fires when confirmed."""
        self.broker.startService()
        self.successResultOf(self.publisher.queue_json_publish("q", {"b": 2}))
        self.assertEqual(self.broker.messages("q"), [b'{"b":2}'])
