"""FanOut forwards reports to the observers that act on them."""

from __future__ import annotations

from twisted.trial import unittest

from zqtwisted.runtime.observer import FanOut, NullObserver


class Counting(NullObserver):
    def __init__(self) -> None:
        self.consumed_calls: list[tuple[str, int]] = []

    def consumed(self, queue: str, events: int, seconds: float) -> None:
        self.consumed_calls.append((queue, events))


class FanOutTests(unittest.TestCase):
    def test_forwards_to_every_observer_that_overrides(self) -> None:
        """Each observer overriding a method gets the call; no-op methods are skipped."""
        a, b = Counting(), Counting()
        fan = FanOut([a, NullObserver(), b])
        fan.consumed("q", 3, 0.1)
        fan.idle("q")
        self.assertEqual(a.consumed_calls, [("q", 3)])
        self.assertEqual(b.consumed_calls, [("q", 3)])
        self.assertEqual(len(fan._consumed), 2)
        self.assertEqual(fan._idle, [])
