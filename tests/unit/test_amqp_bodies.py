"""The bounded content assembler: bodies within the limit as pika builds them, larger ones cut as they arrive."""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
from pika import exceptions
from pika.adapters.twisted_connection import TwistedChannel
from pika.channel import ContentFrameAssembler
from twisted.trial import unittest

from zqtwisted.runtime.amqp_bodies import BoundedAssembler, bound_bodies
from zqtwisted.runtime.broker import ORIGINAL_SIZE

FRAME = 131_072 - 8  # a body frame's payload at RabbitMQ's default frame_max


def frames(body: bytes, headers: dict[str, Any] | None = None, tag: int = 1) -> list[Any]:
    """The frames RabbitMQ sends for one delivery: method, header (announcing the size), body frames."""
    method = pika.frame.Method(1, pika.spec.Basic.Deliver(delivery_tag=tag))
    header = pika.frame.Header(1, len(body), pika.spec.BasicProperties(headers=headers))
    chunks = [pika.frame.Body(1, body[i : i + FRAME]) for i in range(0, len(body), FRAME)]
    return [method, header, *chunks]


def assemble(assembler: Any, message: list[Any]) -> tuple[Any, Any, bytes]:
    """Feed ``message``'s frames; the assembled (method, header, body), handed over at the last frame only."""
    *first, last = message
    for f in first:
        assert assembler.process(f) is None
    result = assembler.process(last)
    assert result is not None
    return result  # type: ignore[no-any-return]


class BoundedAssemblerTests(unittest.TestCase):
    def test_a_body_within_the_limit_is_what_pika_builds(self) -> None:
        """Up to the limit (several frames, or none), the message is exactly pika's own assembly."""
        for body in (b"", b"{}", bytes(range(256)) * 1900, b"x" * 500_000):
            ours = assemble(BoundedAssembler(500_000), frames(body, {"h": 1}))
            pikas = assemble(ContentFrameAssembler(), frames(body, {"h": 1}))
            self.assertEqual(ours[2], pikas[2])
            self.assertEqual(ours[1].properties.headers, {"h": 1})

    def test_a_larger_body_keeps_limit_plus_one_bytes_and_its_size(self) -> None:
        """A body over the limit arrives cut to limit + 1 bytes, its headers kept, its size in x-zq-original-size."""
        body = bytes(range(256)) * 4000  # 1,024,000 bytes in 8 frames
        _, header, kept = assemble(BoundedAssembler(200_000), frames(body, {"x-zq-first-failure": "t"}))
        self.assertEqual(kept, body[:200_001])
        self.assertEqual(header.properties.headers, {"x-zq-first-failure": "t", ORIGINAL_SIZE: len(body)})

    def test_the_cut_falls_at_a_frame_edge_or_inside_one(self) -> None:
        """Limits at, before and just after a frame boundary all keep exactly limit + 1 bytes."""
        body = b"abcdefgh" * 50_000
        for limit in (FRAME - 1, FRAME, FRAME + 1, 1, 0):
            _, header, kept = assemble(BoundedAssembler(limit), frames(body, None))
            self.assertEqual(kept, body[: limit + 1])
            self.assertEqual(header.properties.headers, {ORIGINAL_SIZE: len(body)})

    def test_the_next_message_starts_afresh(self) -> None:
        """After a cut message, a small one (and another large one) assemble from zero."""
        assembler = BoundedAssembler(10)
        assemble(assembler, frames(b"y" * 300_000, tag=1))
        method, _, small = assemble(assembler, frames(b'{"a":1}', tag=2))
        self.assertEqual((method.method.delivery_tag, small), (2, b'{"a":1}'))
        self.assertEqual(assemble(assembler, frames(b"z" * 300_000, tag=3))[2], b"z" * 11)

    def test_a_body_longer_than_announced_is_pikas_error(self) -> None:
        """More body bytes than the header announced is still pika's BodyTooLongError, cut or not."""
        for limit in (10, 1000):
            assembler = BoundedAssembler(limit)
            method, header, _ = frames(b"x" * 20)
            assembler.process(method)
            assembler.process(header)
            with self.assertRaises(exceptions.BodyTooLongError):
                assembler.process(pika.frame.Body(1, b"x" * 30))


class BoundBodiesTests(unittest.TestCase):
    def test_a_channel_gets_the_bounded_assembler(self) -> None:
        """bound_bodies puts a BoundedAssembler on the channel; with no limit, pika's own stays."""

        class Impl:
            channel_number = 1

            def __init__(self) -> None:
                self._content_assembler = ContentFrameAssembler()

            def add_on_close_callback(self, cb: Any) -> None: ...

            def add_on_cancel_callback(self, cb: Any) -> None: ...

            def add_callback(self, *args: Any, **kwargs: Any) -> None: ...

        unbounded, bounded = TwistedChannel(Impl()), TwistedChannel(Impl())
        bound_bodies(unbounded, None)
        bound_bodies(bounded, 4096)
        self.assertIs(type(unbounded._channel._content_assembler), ContentFrameAssembler)
        self.assertEqual(bounded._channel._content_assembler.limit, 4096)
