"""Publishing events from Twisted code (public API; see :mod:`zqtwisted.runtime.publisher`)."""

from zqtwisted.runtime.publisher import Publisher, encode_event

__all__ = ["Publisher", "encode_event"]
