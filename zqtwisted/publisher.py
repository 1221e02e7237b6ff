"""Publishing events from Twisted code (public API; see :mod:`zqtwisted.runtime.publisher`)."""

from zqtwisted.runtime.publisher import Publisher, encode_event, queue_json_publish, set_default_publisher

__all__ = ["Publisher", "encode_event", "queue_json_publish", "set_default_publisher"]
