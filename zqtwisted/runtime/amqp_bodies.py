"""Bodies too large to hold: a consumer channel keeps at most its limit of any message's body.

Part of the AMQP broker (:mod:`zqtwisted.runtime.amqp`; the ``runtime/amqp*.py`` modules are
the only ones that know pika).  RabbitMQ sends a message as a header frame, which announces
the body's size, then body frames of at most ``frame_max`` bytes (128 KiB).  pika joins them
all into one ``bytes`` before handing the message over, so a 50 MB message costs 50 MB (and
more while it is joined) even when the consumer refuses it at once for its size.

:class:`BoundedAssembler` stands in for pika's assembler on a consumer channel: a body that
fits in ``limit`` is assembled exactly as pika does; a larger one keeps its first
``limit + 1`` bytes (enough for the runner's size check to refuse it, and for an excerpt in
its dead letter) and drops each later frame as it arrives, and the message is handed over
with its announced size in the ``x-zq-original-size`` header.  Memory then stays bounded by
the limit, whatever a publisher sends: the frames are read and let go one by one.
"""

from __future__ import annotations

from typing import Any

from pika import exceptions, frame
from pika.adapters.twisted_connection import TwistedChannel
from pika.channel import ContentFrameAssembler

from zqtwisted.runtime.broker import ORIGINAL_SIZE


class BoundedAssembler(ContentFrameAssembler):  # type: ignore[misc]  # pika ships no types: its classes are Any
    """pika's content assembler, keeping at most ``limit + 1`` bytes of a body (the rest is dropped, frame by frame).

    A body within the limit costs what it costs pika: the same steps, and one comparison.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def _handle_body_frame(self, body_frame: frame.Body) -> tuple[Any, Any, bytes] | None:
        fragment = body_frame.fragment
        size = self._header_frame.body_size
        if size > self.limit:
            kept = min(self._seen_so_far, self.limit + 1)  # what the earlier frames left
            if kept <= self.limit:
                self._body_fragments.append(fragment[: self.limit + 1 - kept])
        else:
            self._body_fragments.append(fragment)
        self._seen_so_far += len(fragment)
        if self._seen_so_far == size:
            if size > self.limit:
                self._mark_cut(size)
            return self._finish()  # type: ignore[no-any-return]
        if self._seen_so_far > size:
            raise exceptions.BodyTooLongError(self._seen_so_far, size)
        return None

    def _mark_cut(self, size: int) -> None:
        """Say in the message's headers that its body was cut, and from which size."""
        properties = self._header_frame.properties
        properties.headers = {**(properties.headers or {}), ORIGINAL_SIZE: size}


def bound_bodies(channel: TwistedChannel, limit: int | None) -> None:
    """Make ``channel`` keep at most ``limit + 1`` bytes of any body (no bound with None)."""
    if limit is not None:
        channel._channel._content_assembler = BoundedAssembler(limit)
