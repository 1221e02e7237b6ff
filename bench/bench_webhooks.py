"""Benchmark: outgoing webhook events per second, one process, against a local 50 ms endpoint.

Runs the outgoing_webhooks consumer logic (decode, validate, POST, classify, reply)
for ``--count`` events against a twisted.web endpoint on 127.0.0.1 that answers
after ``--delay`` seconds.  The endpoint runs in a separate process, so that its
CPU does not count against the consumer.  Two runs:

* ``--concurrency`` events in flight (default 100) with the same per-host cap, or
  ``--per-host`` (``[outgoing_webhooks] per_host_concurrency``: with 25, its default, at
  most 25 of the 100 are in flight to this one endpoint);
* one event at a time, like Zulip's serial worker.  At 50 ms per event that run
  takes 20 events/s, so it uses ``--serial-count`` events (default 200) and says
  so; events/s does not depend on the count once connections are warm.

Replies go to a publisher that only counts them.  Usage::

    python bench/bench_webhooks.py [--count 2000] [--delay 0.05] [--concurrency 100] [--per-host 25]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from typing import Any, cast

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults, succeed


def serve(delay: float) -> None:
    """The endpoint: answers every POST with a reply after ``delay`` seconds."""
    from twisted.web.resource import Resource
    from twisted.web.server import NOT_DONE_YET, Request, Site

    class Hook(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> Any:
            def answer() -> None:
                if not request.finished and not request._disconnected:
                    request.setHeader(b"content-type", b"application/json")
                    request.write(b'{"content": "ok"}')
                    request.finish()

            reactor.callLater(delay, answer)
            return NOT_DONE_YET

    class QuietSite(Site):
        def log(self, request: Any) -> None:
            pass  # no access log

    port = reactor.listenTCP(0, QuietSite(Hook()), interface="127.0.0.1", backlog=1024)  # type: ignore[arg-type]
    print(port.getHost().port, flush=True)  # type: ignore[attr-defined]
    reactor.run()


class CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    def publish_json(
        self, queue: str, event: Mapping[str, Any], headers: Mapping[str, Any] | None = None
    ) -> Deferred[None]:
        self.count += 1
        return succeed(None)


def event_body(url: str, n: int) -> bytes:
    return json.dumps(
        {
            "trigger": "mention",
            "user_profile_id": 7,
            "bot_email": "helper-bot@example.com",
            "bot_full_name": "Helper Bot",
            "message": {
                "id": n,
                "type": "stream",
                "content": "@**Helper Bot** ping",
                "sender_id": 3,
                "sender_email": "iago@example.com",
                "sender_full_name": "Iago",
                "stream_id": 4,
                "display_recipient": "devel",
                "subject": "builds",
                "timestamp": 1700000000,
            },
            "services": [{"name": "ci", "base_url": url, "token": "s3cret", "interface": "generic"}],
        }
    ).encode()


async def run(url: str, count: int, concurrency: int, per_host: int | None = None) -> dict[str, float]:
    from zqtwisted.catalog import get_worker
    from zqtwisted.config import Config
    from zqtwisted.consumers.outgoing_webhooks import OutgoingWebhookWorker
    from zqtwisted.resources import Resources
    from zqtwisted.runtime.consumer import WorkerContext
    from zqtwisted.runtime.reactor import IConnectingReactor
    from zqtwisted.webhooks.settings import OutgoingWebhookSettings

    per_host = concurrency if per_host is None else per_host
    settings = OutgoingWebhookSettings(per_host_concurrency=per_host, allow_networks=("127.0.0.1/32",))
    publisher = CountingPublisher()
    config = Config(sections=types.MappingProxyType({"outgoing_webhooks": settings}))
    resources = Resources(cast(IConnectingReactor, reactor), config, publisher)
    context = WorkerContext(queue="outgoing_webhooks", clock=cast(IConnectingReactor, reactor), publisher=publisher)
    worker = get_worker("outgoing_webhooks", context, resources)
    assert isinstance(worker, OutgoingWebhookWorker)
    worker.start()
    slots = DeferredSemaphore(concurrency)
    latencies: list[float] = []

    async def one(body: bytes) -> None:
        started = time.perf_counter()
        await worker.consume(worker.validate(json.loads(body)))
        latencies.append(time.perf_counter() - started)

    bodies = [event_body(url, n) for n in range(count)]
    warmup = [event_body(url, n) for n in range(min(concurrency, 100))]
    await gatherResults([slots.run(one, b) for b in warmup])
    latencies.clear()
    started = time.perf_counter()
    await gatherResults([slots.run(one, b) for b in bodies])
    elapsed = time.perf_counter() - started
    stopped = worker.stop()
    if stopped is not None:
        await stopped
    await resources.close()
    latencies.sort()
    return {
        "events": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "replies": publisher.count,
    }


def report(label: str, result: dict[str, float], note: str = "") -> None:
    print(
        f"{label}: {int(result['events'])} events in {result['seconds']:.2f} s = {result['rate']:.0f} events/s; "
        f"latency p50 {result['p50'] * 1000:.0f} ms, p99 {result['p99'] * 1000:.0f} ms{note}",
        flush=True,
    )


async def main(options: argparse.Namespace) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--delay", str(options.delay)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/hook"
        print(f"endpoint {url} answers after {options.delay * 1000:.0f} ms (separate process)", flush=True)
        per_host = options.concurrency if options.per_host is None else options.per_host
        concurrent = await run(url, options.count, options.concurrency, per_host)
        report(f"concurrency {options.concurrency}, per-host cap {per_host}", concurrent)
        serial_count = min(options.count, options.serial_count)
        serial = await run(url, serial_count, 1)
        note = (
            f" (ran {serial_count} of {options.count} events; {options.count} would take "
            f"{options.count / serial['rate']:.0f} s at this rate)"
            if serial_count < options.count
            else ""
        )
        report("concurrency 1", serial, note)
        print(f"speed-up: {concurrent['rate'] / serial['rate']:.0f}x", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="events for the concurrent run (default 2000)")
    parser.add_argument("--serial-count", type=int, default=200, help="events for the serial run (default 200)")
    parser.add_argument("--concurrency", type=int, default=100, help="events in flight and per-host cap (default 100)")
    parser.add_argument("--per-host", type=int, help="per-host cap of the concurrent run (default: --concurrency)")
    parser.add_argument("--delay", type=float, default=0.05, help="endpoint answer delay in seconds (default 0.05)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.delay)
    else:
        task.react(lambda _reactor: Deferred.fromCoroutine(main(args)))
