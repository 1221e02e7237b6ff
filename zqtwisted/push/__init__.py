"""Mobile push notifications: payloads, the push bouncer client, sharding.

The consumer is :mod:`zqtwisted.consumers.push_notifications`; what it needs lives
here, in small modules:

- :mod:`.settings`: the ``[push]`` configuration section;
- :mod:`.payload`: events -> the APNs / FCM payloads Zulip sends (pure);
- :mod:`.bouncer`: the push bouncer client and the log backend;
- :mod:`.sharding`: the publisher's choice of shard queue;
- :mod:`.testing`: a fake push bouncer for tests.
"""

from zqtwisted.push.bouncer import BouncerBackend, BouncerRefused, BouncerRetryLater, LogBackend, build_backend
from zqtwisted.push.payload import Notification, build_notification, parse_event
from zqtwisted.push.settings import PushSettings
from zqtwisted.push.sharding import publish_push_event, shard_queue, shard_queues

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
