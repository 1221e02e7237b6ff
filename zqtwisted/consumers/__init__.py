"""The shipped consumers; importing this package registers their queues."""

from zqtwisted.consumers import (  # noqa: F401
    email_senders,
    missedmessage_emails,
    outgoing_webhooks,
    push_notifications,
    test_queues,
)
