"""Mobile push notifications: payloads, the push bouncer client, sharding.

The consumer is :mod:`zqtwisted.consumers.push_notifications`; what it needs lives
here, in small modules:

- :mod:`.settings`: the ``[push]`` configuration section;
- :mod:`.payload`: events -> the APNs / FCM payloads Zulip sends (pure);
- :mod:`.bouncer`: the push bouncer client and the log backend;
- :mod:`.sharding`: the publisher's choice of shard queue;
- :mod:`.testing`: a fake push bouncer for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zqtwisted.push.settings import PushSettings

if TYPE_CHECKING:
    from zqtwisted.push.bouncer import BouncerBackend, BouncerRefused, BouncerRetryLater, LogBackend, build_backend
    from zqtwisted.push.payload import Notification, build_notification, parse_event
    from zqtwisted.push.sharding import publish_push_event, shard_queue, shard_queues

# Imported on first use: the table of configuration sections imports zqtwisted.push.settings,
# which runs this file, and a process without the push queue need not load the HTTP client.
_LAZY = {
    "BouncerBackend": "zqtwisted.push.bouncer",
    "BouncerRefused": "zqtwisted.push.bouncer",
    "BouncerRetryLater": "zqtwisted.push.bouncer",
    "LogBackend": "zqtwisted.push.bouncer",
    "build_backend": "zqtwisted.push.bouncer",
    "Notification": "zqtwisted.push.payload",
    "build_notification": "zqtwisted.push.payload",
    "parse_event": "zqtwisted.push.payload",
    "publish_push_event": "zqtwisted.push.sharding",
    "shard_queue": "zqtwisted.push.sharding",
    "shard_queues": "zqtwisted.push.sharding",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BouncerBackend",
    "BouncerRefused",
    "BouncerRetryLater",
    "LogBackend",
    "Notification",
    "PushSettings",
    "build_backend",
    "build_notification",
    "parse_event",
    "publish_push_event",
    "shard_queue",
    "shard_queues",
]
