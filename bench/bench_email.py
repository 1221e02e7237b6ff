"""Emails per second into a local SMTP server: one reused connection vs one per message.

    python bench/bench_email.py              # 2,000 emails each way
    python bench/bench_email.py --count 200  # a few seconds
    python bench/bench_email.py --in-process # server on the same reactor

The server is Twisted's ESMTP server (zqtwisted.mail.testing.LocalSMTPServer) on
127.0.0.1, in a child process by default.  The emails use the shipped
missed-message template with non-ASCII names.  Printed: the rate of rendering
alone; of sending the rendered emails one after another over the SMTP transport
the email workers use, once with connection reuse and once with
max_messages_per_connection = 1 (QUIT and reconnect for every message); and of
rendering + sending with reuse, as the email worker does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, stdio
from twisted.internet.protocol import Protocol

from zqtwisted.mail.backends import SMTPMailer, endpoint_connector
from zqtwisted.mail.render import Envelope, Renderer, envelope_of, to_bytes
from zqtwisted.mail.settings import shipped_template_dir
from zqtwisted.mail.smtp import SMTPOptions, SMTPTransport


def event(i: int) -> dict[str, Any]:
    """A missed-message email event, as the missedmessage_emails consumer publishes."""
    return {
        "template_prefix": "zqtwisted/emails/missed_message",
        "to_emails": [f"Üser {i} <user{i}@example.com>"],
        "context": {
            "user_name": f"Üser {i}",
            "realm_name": "Bench",
            "realm_url": "https://bench.example.com",
            "conversations": [
                {
                    "name": "#general > benchmarks",
                    "url": "https://bench.example.com/#narrow/1",
                    "messages": [
                        {"sender": "Othello", "content": f"message {i} with some text ✓"},
                        {"sender": "Iago", "rendered_content": "<p>a <strong>rendered</strong> one</p>"},
                    ],
                }
            ],
        },
    }


def transport(reactor: Any, port: int, reuse: bool) -> SMTPTransport:
    options = SMTPOptions(
        host="127.0.0.1",
        port=port,
        tls="none",
        max_messages_per_connection=1_000_000 if reuse else 1,
        noop_after_idle=1.0,
    )
    return SMTPTransport(reactor, endpoint_connector(reactor, options), options)


async def send_rendered(reactor: Any, port: int, wire: list[tuple[Envelope, bytes]], reuse: bool) -> float:
    """Send pre-rendered messages one after another: the transport alone."""
    smtp = transport(reactor, port, reuse)
    started = time.perf_counter()
    for envelope, data in wire:
        await smtp.send(envelope, data)
    elapsed = time.perf_counter() - started
    await smtp.close()
    return elapsed


async def render_and_send(reactor: Any, port: int, renderer: Renderer, count: int) -> float:
    """Render and send, one email after another, as the email worker does (connection reused)."""
    mailer = SMTPMailer(transport(reactor, port, True))
    started = time.perf_counter()
    for i in range(count):
        await mailer.send(renderer.render(event(i), reactor.seconds()))
    elapsed = time.perf_counter() - started
    await mailer.close()
    return elapsed


def rate(label: str, count: int, elapsed: float) -> None:
    print(f"{label:<52} {count} emails in {elapsed:5.2f}s: {count / elapsed:7,.0f} emails/s")


async def bench(reactor: Any, port: int, count: int, server: Any = None) -> None:
    renderer = Renderer(shipped_template_dir(), from_address="noreply@example.com")
    started = time.perf_counter()
    wire = []
    for i in range(count):
        message = renderer.render(event(i), reactor.seconds())
        wire.append((envelope_of(message), to_bytes(message)))
    rate("render only (template -> wire bytes)", count, time.perf_counter() - started)
    rate("send, one reused connection", count, await send_rendered(reactor, port, wire, True))
    rate("send, one connection per message", count, await send_rendered(reactor, port, wire, False))
    rate("render + send, one reused connection", count, await render_and_send(reactor, port, renderer, count))
    if server is not None:
        print(f"server received {len(server.messages)} emails over {server.connections} connections")


def serve() -> None:
    """Child process: run the SMTP server, print its port, report totals when stdin closes."""
    from twisted.internet import reactor

    from zqtwisted.mail.testing import LocalSMTPServer

    server = LocalSMTPServer(reactor)
    port = server.start()
    print(f"PORT {port}", flush=True)

    class Control(Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            print(f"server received {len(server.messages)} emails over {server.connections} connections", flush=True)
            server.stop().addBoth(lambda _: reactor.stop())

    stdio.StandardIO(Control())
    reactor.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="emails per run (default 2000)")
    parser.add_argument("--in-process", action="store_true", help="run the SMTP server on the same reactor")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return

    from twisted.internet import reactor

    child = None
    server = None
    if args.in_process:
        from zqtwisted.mail.testing import LocalSMTPServer

        server = LocalSMTPServer(reactor)
        port = server.start()
    else:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        port = int(child.stdout.readline().split()[1])
    print(f"SMTP server on 127.0.0.1:{port} ({'same process' if args.in_process else 'child process'})")

    failures: list[Any] = []

    async def run() -> None:
        try:
            await bench(reactor, port, args.count, server)
        finally:
            if server is not None:
                await server.stop()

    d = defer.ensureDeferred(run())
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if child is not None:
        out, _ = child.communicate(timeout=30)
        print(out.strip())
    if failures:
        failures[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
