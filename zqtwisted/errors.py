"""Exceptions a consumer raises to tell the runtime what to do with an event."""

from __future__ import annotations


class WorkerDeclarationError(Exception):
    """A worker class was declared without a usable queue name."""


class ConsumeError(Exception):
    """Base of the errors a consumer raises on purpose."""


class TransientError(ConsumeError):
    """The event may succeed later: retry it with backoff."""


class PermanentError(ConsumeError):
    """The event will never succeed: dead-letter it without retrying."""


class InterruptConsumeError(ConsumeError):
    """Stop handling this event silently: ack it, no log line, no error file.

    Zulip's ``InterruptConsumeError``: the consumer has decided the event needs no
    further work.
    """


class MalformedEventError(PermanentError):
    """The event body is not what the queue expects (bad JSON, wrong fields)."""
