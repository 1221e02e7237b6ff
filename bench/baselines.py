"""The two consumers zqtwisted is measured against, each run as its own process.

``blocking``: built like Zulip's worker loop (``SimpleQueueClient.start_json_consumer``):
a ``BlockingConnection``, ``basic_qos(prefetch)``, the ``channel.consume()``
generator, ``json.loads`` of every body, then ``basic_ack(last_tag, multiple=True)``
after each event, or after each batch of ``--batch`` events (with Zulip's 1 s
``inactivity_timeout`` for batches).  It leaves out what Zulip's worker adds per
event (stats bookkeeping, Sentry scope, the SIGALRM timeout), so the real Zulip
worker is somewhat slower than this baseline.

``twisted``: a bare pika ``TwistedProtocolConnection`` consumer, the floor of any
framework on top of it: the same prefetch, ``json.loads`` of every body, an ack per
event or one multiple-ack per batch, and nothing else.  It takes every message
already buffered in one go before waiting for the next, as zqtwisted does.

Both stop after ``--count`` events and write ``--out`` (JSON): in ``noop`` mode the
time from the first event to the last; in ``latency`` mode, for each event,
``time.time() - event["sent"]``.

    python bench/baselines.py blocking --queue bench_noop --count 20000 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pika
from benchlib import PREFETCH, broker_url, write_result


class Recorder:
    """What every consumer does per event, identical across consumers."""

    def __init__(self, mode: str, count: int, out: str) -> None:
        self.mode = mode
        self.count = count
        self.out = out
        self.seen = 0
        self.first = 0.0
        self.first_cpu = 0.0
        self.latencies: list[float] = []

    def event(self, body: bytes) -> bool:
        """Decode one body; True once ``count`` events have been seen."""
        decoded = json.loads(body)
        if self.seen == 0:
            self.first = time.perf_counter()
            self.first_cpu = time.process_time()
        if self.mode == "latency":
            self.latencies.append(time.time() - decoded["sent"])
        self.seen += 1
        return self.seen >= self.count

    def finish(self) -> None:
        if self.mode == "latency":
            write_result(self.out, {"count": self.seen, "latencies": self.latencies})
        else:
            seconds = time.perf_counter() - self.first
            write_result(
                self.out, {"count": self.seen, "seconds": seconds, "cpu": time.process_time() - self.first_cpu}
            )


def zulip_blocking(queue: str, batch: int, recorder: Recorder) -> None:
    """Zulip's loop: collect up to ``batch`` events, handle them, one multiple-ack."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url()))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_qos(prefetch_count=max(PREFETCH, batch))
    timeout = 1.0 if batch > 1 else None
    events: list[Any] = []
    last_process = time.time()
    max_processed = 0
    done = False
    for method, _properties, body in channel.consume(queue, inactivity_timeout=timeout):
        if body is not None:
            assert method is not None
            done = recorder.event(body) or done
            events.append(body)
            max_processed = method.delivery_tag
        now = time.time()
        if len(events) >= batch or (timeout and now >= last_process + timeout) or (done and events):
            if events:
                channel.basic_ack(max_processed, multiple=True)
                events = []
            last_process = now
        if done:
            break
    recorder.finish()
    channel.cancel()
    connection.close()


def bare_twisted(queue: str, batch: int, recorder: Recorder) -> None:
    """The bare Twisted consumer: the least any framework on pika's Twisted adapter can do."""
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    parts = urlsplit(broker_url())
    params = pika.URLParameters(broker_url())

    async def main() -> None:
        endpoint = TCP4ClientEndpoint(reactor, parts.hostname or "127.0.0.1", parts.port or 5672)
        connection = await connectProtocol(endpoint, TwistedProtocolConnection(params, custom_reactor=reactor))
        await connection.ready
        channel = await connection.channel()
        await channel.queue_declare(queue=queue, durable=True)
        await channel.basic_qos(prefetch_count=max(PREFETCH, batch))
        queue_object, _tag = await channel.basic_consume(queue=queue, auto_ack=False)
        finished: Deferred[None] = Deferred()
        held = 0

        def received(message: Any) -> None:
            nonlocal held
            while True:
                done = recorder.event(message.body)
                held += 1
                if held >= batch or done:
                    channel.basic_ack(delivery_tag=message.method.delivery_tag, multiple=batch > 1)
                    held = 0
                if done:
                    finished.callback(None)
                    return
                if not queue_object.pending:
                    break
                message = queue_object.pending.pop(0)
            queue_object.get().addCallback(received)

        queue_object.get().addCallback(received)
        await finished
        recorder.finish()
        await connection.close()

    failures: list[Any] = []
    d = Deferred.fromCoroutine(main())
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["blocking", "twisted"])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1, help="events per ack (1: ack each event)")
    parser.add_argument("--mode", choices=["noop", "latency"], default="noop")
    parser.add_argument("--out", required=True, help="result file (JSON)")
    args = parser.parse_args()
    recorder = Recorder(args.mode, args.count, args.out)
    (zulip_blocking if args.kind == "blocking" else bare_twisted)(args.queue, args.batch, recorder)


if __name__ == "__main__":
    main()
