"""AckTracker: multiple-acks only where they are exact."""

from __future__ import annotations

from twisted.trial import unittest

from zqtwisted.runtime.broker import AckTracker


class AckTrackerTests(unittest.TestCase):
    def tracker(self, *tags: int) -> AckTracker:
        t = AckTracker()
        for tag in tags:
            t.delivered(tag)
        return t

    def test_contiguous_lowest_tags_use_one_multiple_ack(self) -> None:
        """Acking exactly the lowest outstanding tags is one multiple-ack of the highest."""
        t = self.tracker(1, 2, 3, 4)
        self.assertEqual(t.settle([1, 2, 3]), [(3, True)])
        self.assertEqual(len(t), 1)

    def test_gap_held_elsewhere_forces_single_acks(self) -> None:
        """If a lower tag is held elsewhere (a waiting retry), each tag is acked alone."""
        t = self.tracker(1, 2, 3, 4)
        self.assertEqual(t.settle([2, 3]), [(2, False), (3, False)])
        self.assertEqual(t.settle([1]), [(1, False)])
        self.assertEqual(t.settle([4]), [(4, False)])
        self.assertEqual(len(t), 0)

    def test_unknown_tags_are_ignored(self) -> None:
        """Tags not outstanding (already settled) produce no ack."""
        t = self.tracker(5)
        self.assertEqual(t.settle([4, 5]), [(5, False)])
        self.assertEqual(t.settle([5]), [])
        self.assertFalse(t.forget(5))
