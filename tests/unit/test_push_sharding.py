"""Tests for zqtwisted.push.sharding: the publisher's choice of shard queue."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

import zqtwisted.consumers.push_notifications  # noqa: F401 - registers the queue
from zqtwisted.push.sharding import QUEUE, publish_push_event, shard_queue, shard_queues
from zqtwisted.tap import queue_for
from zqtwisted.testing import RecordingPublisher


class ShardQueueTests(TestCase):
    def test_user_id_modulo_shards_plus_one(self) -> None:
        """With 3 shards user 10 goes to shard 2, user 12 to shard 1, user 11 to shard 3 (Zulip's rule)."""
        self.assertEqual(shard_queue(10, 3), f"{QUEUE}_shard2")
        self.assertEqual(shard_queue(12, 3), f"{QUEUE}_shard1")
        self.assertEqual(shard_queue(11, 3), f"{QUEUE}_shard3")

    def test_one_shard_is_the_plain_queue(self) -> None:
        """Without sharding (1 shard) every user's events go to the plain queue."""
        self.assertEqual(shard_queue(10), QUEUE)
        self.assertEqual(shard_queue(10, 1), QUEUE)
        self.assertEqual(shard_queues(1), [QUEUE])

    def test_every_shard_has_a_worker(self) -> None:
        """Every queue the publisher can choose is one that --worker-num N consumes."""
        shards = 4
        chosen = {shard_queue(user, shards) for user in range(100)}
        self.assertEqual(chosen, set(shard_queues(shards)))
        self.assertEqual(shard_queues(shards), [queue_for(QUEUE, n) for n in range(1, shards + 1)])

    def test_bad_arguments(self) -> None:
        """A non-integer user id or fewer than one shard is refused."""
        self.assertRaises(TypeError, shard_queue, "10", 2)
        self.assertRaises(TypeError, shard_queue, True, 2)
        self.assertRaises(ValueError, shard_queue, 10, 0)
        self.assertRaises(ValueError, shard_queues, 0)

    def test_publish_to_the_users_shard(self) -> None:
        """publish_push_event publishes the event to its user's shard."""
        publisher = RecordingPublisher()
        event = {"type": "remove", "user_profile_id": 7, "message_ids": [1]}
        self.successResultOf(publish_push_event(publisher, event, 2))
        self.assertEqual(publisher.published, [(f"{QUEUE}_shard2", event)])
