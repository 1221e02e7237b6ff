"""Shard naming and the shard rule, in one place (pure).

A sharded queue ``x`` is consumed as ``x_shard1`` .. ``x_shardN``, one worker each
(``--worker-num N``).  Zulip routes a user's events to shard ``user_id % shards + 1``;
with a single shard, the plain queue is used.
"""

from __future__ import annotations

import re

__all__ = ["base_queue", "queue_for_user", "shard_of", "shard_queue_name"]

_SUFFIX = re.compile(r"_shard\d+$")


def shard_queue_name(queue: str, worker_num: int) -> str:
    """``("x", 2)`` -> ``"x_shard2"``."""
    return f"{queue}_shard{worker_num}"


def base_queue(name: str) -> str:
    """``"x_shard2"`` -> ``"x"``; a name without a shard suffix is returned as is."""
    return _SUFFIX.sub("", name)


def shard_of(user_id: int, shards: int) -> int:
    """The shard (1..shards) that owns ``user_id``: Zulip's ``user_id % shards + 1``."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return user_id % shards + 1


def queue_for_user(queue: str, user_id: int, shards: int) -> str:
    """The queue of ``user_id``'s events among ``shards`` shards (the plain queue when ``shards == 1``)."""
    shard = shard_of(user_id, shards)
    return queue if shards == 1 else shard_queue_name(queue, shard)
