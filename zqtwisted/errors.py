"""Exceptions a consumer raises to tell the runtime what to do with an event."""

from __future__ import annotations


class WorkerDeclarationError(Exception):
    """A worker class was declared without a usable queue name."""


class ConsumeError(Exception):
    """Base of the errors a consumer raises on purpose."""


class TransientError(ConsumeError):
    """The event may succeed later: retry it with backoff."""


class DependencyUnavailable(TransientError):
    """Something every event needs (a database) is down: retry, without counting it as a try.

    However long the outage lasts, such events are retried (with backoff) and never
    dead-lettered for it; ``failed_tries`` is left as it was.
    """


class StartupError(Exception):
    """A worker cannot start for a reason its message says in full (logged as one line, no traceback)."""


class PermanentError(ConsumeError):
    """The event will never succeed: dead-letter it without retrying."""


class InterruptConsumeError(ConsumeError):
    """Stop handling this event silently: ack it, no log line, no error file.

    Zulip's ``InterruptConsumeError``: the consumer has decided the event needs no
    further work.
    """


class MalformedEventError(PermanentError):
    """The event body is not what the queue expects (bad JSON, wrong fields)."""


class BodyTooLarge(MalformedEventError):
    """The body is larger than the queue's ``max_body_bytes``: refused unread, dead-lettered as an excerpt."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit
