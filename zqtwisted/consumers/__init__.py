"""The shipped consumers; importing this package registers their queues."""

from zqtwisted.consumers import test_queues  # noqa: F401
