"""The ``[user_activity]`` configuration section (Zulip mode's ``user_activity`` queue).

::

    [user_activity]
    shards = 1      # Zulip's USER_ACTIVITY_SHARDS (user_activity_shards in /etc/zulip/zulip.conf)

Zulip's publisher (``update_user_activity``) puts a user's events on
``user_activity_shard{user_id % shards + 1}`` when ``shards > 1``; run one
``twistd zqworkers --queue user_activity --worker-num N`` per shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from zqtwisted.config import ConfigError


@dataclass(frozen=True)
class UserActivitySettings:
    """How Zulip's server spreads ``user_activity`` events (for the start-up checks)."""

    # Zulip's USER_ACTIVITY_SHARDS: how many shard queues the publisher spreads events
    # over (1: no sharding, one queue).
    shards: int = 1

    def validate(self, path: str) -> None:
        if self.shards < 1:
            raise ConfigError(f"{path}.shards: must be >= 1, got {self.shards}")
