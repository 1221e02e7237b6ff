"""Which queue a push event goes to: the publisher's side of sharding.

Zulip spreads push events over ``MOBILE_NOTIFICATIONS_SHARDS`` queues by user, so
that one user's notifications stay in order on one worker::

    missedmessage_mobile_notifications_shard{user_id % shards + 1}

and, with a single shard, uses the plain queue.  The worker started with
``--worker-num N`` consumes ``missedmessage_mobile_notifications_shardN``; run
workers 1..shards, or, with ``shards = 1``, one worker without ``--worker-num``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred

from zqtwisted.runtime.consumer import JsonPublisher
from zqtwisted.runtime.shards import queue_for_user, shard_queue_name

QUEUE = "missedmessage_mobile_notifications"


def shard_queue(user_id: int, shards: int = 1, queue: str = QUEUE) -> str:
    """The queue of ``user_id``'s push events among ``shards`` shards."""
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise TypeError(f"user_id must be an integer, not {type(user_id).__name__}")
    return queue_for_user(queue, user_id, shards)


def shard_queues(shards: int = 1, queue: str = QUEUE) -> list[str]:
    """Every queue that :func:`shard_queue` can choose (one per worker to run)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return [queue]
    return [shard_queue_name(queue, n) for n in range(1, shards + 1)]


def publish_push_event(publisher: JsonPublisher, event: Mapping[str, Any], shards: int = 1) -> Deferred[None]:
    """Publish ``event`` to its user's shard; fires when the broker has confirmed it.

    ``publisher`` is a :class:`zqtwisted.runtime.publisher.Publisher` (anything with
    ``publish_json(queue, event)``).
    """
    return publisher.publish_json(shard_queue(event["user_profile_id"], shards), event)
