"""Several broker nodes: their order, the node tried next, the waits, and the endpoint that follows the rotation."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from zqtwisted.runtime.failover import (
    ROUND_ROBIN,
    SHUFFLE,
    BrokerNode,
    FailoverEndpoint,
    NodeRotation,
    failover_delay,
    node_order,
)
from zqtwisted.runtime.retry import BackoffPolicy

BACKOFF = BackoffPolicy(1.0, 8.0, floor=0.5)
NODES = [BrokerNode.from_url(f"amqp://u:p@10.0.0.{i}:5672/%2F") for i in (1, 2, 3)]


def top(_: object = None) -> float:
    return 1.0


class NodeTests(unittest.TestCase):
    def test_from_url(self) -> None:
        """Host, port (5672, or 5671 for amqps://) and TLS come from the URL; the label has no credentials."""
        plain = BrokerNode.from_url("amqp://zulip:secret@mq1/%2F")
        self.assertEqual((plain.host, plain.port, plain.tls, plain.label), ("mq1", 5672, False, "mq1:5672"))
        tls = BrokerNode.from_url("amqps://zulip:secret@mq2:5999/zulip")
        self.assertEqual((tls.host, tls.port, tls.tls), ("mq2", 5999, True))
        self.assertEqual(BrokerNode.from_url("amqps://u:p@mq3/%2F").port, 5671)
        self.assertNotIn("secret", plain.label)

    def test_ipv6_label(self) -> None:
        """An IPv6 host is bracketed in the label."""
        self.assertEqual(BrokerNode.from_url("amqp://u:p@[::1]:5682/%2F").label, "[::1]:5682")


class OrderTests(unittest.TestCase):
    def test_round_robin_keeps_the_listed_order(self) -> None:
        """round-robin tries the nodes as listed."""
        self.assertEqual(node_order(3, ROUND_ROBIN, top), [0, 1, 2])

    def test_shuffle_is_a_permutation_driven_by_rand(self) -> None:
        """shuffle gives each process its own order (a permutation, from its random numbers)."""
        self.assertEqual(node_order(3, SHUFFLE, lambda: 0.0), [1, 2, 0])
        self.assertEqual(node_order(3, SHUFFLE, lambda: 0.999), [0, 1, 2])
        orders = {tuple(node_order(3, SHUFFLE, iter([a, b]).__next__)) for a in (0.0, 0.5, 0.9) for b in (0.0, 0.9)}
        self.assertEqual(len(orders), 6)
        self.assertTrue(all(sorted(o) == [0, 1, 2] for o in orders))

    def test_one_node(self) -> None:
        """One node is its own order."""
        self.assertEqual(node_order(1, SHUFFLE, top), [0])


class DelayTests(unittest.TestCase):
    def test_one_node_is_the_plain_backoff(self) -> None:
        """With one node every attempt waits the backoff of its number, as before there were several."""
        delays = [failover_delay(n, 1, False, BACKOFF, top) for n in range(1, 6)]
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 8.0])
        self.assertEqual([failover_delay(n, 1, True, BACKOFF, top) for n in (1, 2, 3)], [1.0, 2.0, 4.0])

    def test_untried_nodes_are_tried_at_once(self) -> None:
        """Within a round the next node is tried at once; after a whole round failed, the backoff grows by round."""
        delays = [failover_delay(n, 3, False, BACKOFF, top) for n in range(1, 10)]
        self.assertEqual(delays, [0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 4.0])

    def test_after_a_lost_connection(self) -> None:
        """A lost connection waits the first backoff delay, then the other nodes are tried at once."""
        delays = [failover_delay(n, 3, True, BACKOFF, top) for n in range(1, 8)]
        self.assertEqual(delays, [1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 4.0])

    def test_jitter(self) -> None:
        """The waits carry the backoff's jitter (at least half the ceiling)."""
        self.assertEqual(failover_delay(3, 3, False, BACKOFF, lambda: 0.0), 0.5)


class RotationTests(unittest.TestCase):
    def test_moves_on_after_each_failure_and_wraps(self) -> None:
        """Each failure moves on to the next node in the process's order, back to the first after the last."""
        rotation = NodeRotation(NODES, [2, 0, 1], BACKOFF)
        seen = [rotation.current.label]
        for attempt in range(1, 4):
            rotation.next_delay(attempt, top)
            seen.append(rotation.current.label)
        self.assertEqual(seen, ["10.0.0.3:5672", "10.0.0.1:5672", "10.0.0.2:5672", "10.0.0.3:5672"])
        self.assertEqual(rotation.number, 3)

    def test_loss_and_connection_change_the_waits(self) -> None:
        """After a lost connection the first wait is the backoff's; a new connection resets that."""
        rotation = NodeRotation(NODES, [0, 1, 2], BACKOFF)
        rotation.lost()
        self.assertEqual(rotation.next_delay(1, top), 1.0)
        self.assertEqual(rotation.current, NODES[1])
        rotation.connected()
        self.assertEqual(rotation.next_delay(1, top), 0.0)
        self.assertEqual(rotation.current, NODES[2])

    def test_order_must_be_a_permutation(self) -> None:
        """An order that is not a permutation of the nodes is refused."""
        with self.assertRaises(ValueError):
            NodeRotation(NODES, [0, 0, 1], BACKOFF)
        with self.assertRaises(ValueError):
            NodeRotation([], [], BACKOFF)


class FakeEndpoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.factories: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return Deferred()


class EndpointTests(unittest.TestCase):
    def test_connects_to_the_current_node(self) -> None:
        """The endpoint connects through the current node's own endpoint, and follows the rotation."""
        rotation = NodeRotation(NODES, [0, 1, 2], BACKOFF)
        fakes = {node: FakeEndpoint(node.label) for node in NODES}
        endpoint = FailoverEndpoint(rotation, lambda node: fakes[node])  # type: ignore[arg-type, return-value]
        self.assertTrue(verifyObject(IStreamClientEndpoint, endpoint))
        factory = object()
        endpoint.connect(factory)  # type: ignore[arg-type]
        rotation.next_delay(1, top)
        endpoint.connect(factory)  # type: ignore[arg-type]
        self.assertEqual([len(fakes[n].factories) for n in NODES], [1, 1, 0])
        self.assertEqual(repr(endpoint), "<FailoverEndpoint to 10.0.0.2:5672>")
