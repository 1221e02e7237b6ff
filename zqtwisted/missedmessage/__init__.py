"""Missed-message emails: durable per-user batching with one timer per batch.

- :mod:`~zqtwisted.missedmessage.settings`: the ``[missedmessage]`` section;
- :mod:`~zqtwisted.missedmessage.events`: the event's validation, shard routing;
- :mod:`~zqtwisted.missedmessage.store`: the store interface, :class:`MemoryStore`;
- :mod:`~zqtwisted.missedmessage.sqlstore`: the SQLite and PostgreSQL stores;
- :mod:`~zqtwisted.missedmessage.grouping`: notifications -> email events (pure);
- :mod:`~zqtwisted.missedmessage.unread`: the optional "still unread?" check;
- :mod:`~zqtwisted.missedmessage.scheduler`: the timers and the sending.

The queue's consumer is :mod:`zqtwisted.consumers.missedmessage_emails`; see
``docs/missedmessage.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from zqtwisted.missedmessage.events import QUEUE, queue_for_user, shard_of, validate_event
from zqtwisted.missedmessage.settings import MissedMessageSettings


class _Publisher(Protocol):
    def publish_json(self, queue: str, event: Mapping[str, Any]) -> Deferred[None]: ...


def publish_missedmessage(publisher: _Publisher, event: Mapping[str, Any], shards: int = 1) -> Deferred[None]:
    """Publish a notification to the queue of its user's shard; fires when confirmed.

    ``shards`` is ``[missedmessage] shards``.  Publishing to ``missedmessage_emails``
    directly works too: a worker started without ``--worker-num`` then routes
    each event to its shard.
    """
    return publisher.publish_json(queue_for_user(int(event["user_profile_id"]), shards), event)


__all__ = [
    "QUEUE",
    "MissedMessageSettings",
    "publish_missedmessage",
    "queue_for_user",
    "shard_of",
    "validate_event",
]
