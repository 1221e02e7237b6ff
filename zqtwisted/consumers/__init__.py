"""The shipped consumers; importing this package registers their queues."""

from zqtwisted.consumers import email_senders, outgoing_webhooks, test_queues  # noqa: F401
