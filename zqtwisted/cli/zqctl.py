"""``zqctl``: publish, purge, inspect queues, list and replay dead letters.

    zqctl publish QUEUE '{"a": 1}'     # or one JSON event per line on stdin
    zqctl purge QUEUE | zqctl purge --all
    zqctl queues
    zqctl failed QUEUE [--limit N] [--purge]
    zqctl replay QUEUE [--limit N]

A composition root like ``tap``: it runs the reactor with ``task.react``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.logger import LogLevel

from zqtwisted.catalog import get_spec, import_consumer_modules, known_queues
from zqtwisted.config import Config, ConfigError, load_config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.check import UNKNOWN, check_consumers, run_check
from zqtwisted.ops.health import DEFAULT_HTTP_ENDPOINT
from zqtwisted.ops.logs import register_config_secrets, setup_logging
from zqtwisted.ops.settings import CheckSettings
from zqtwisted.ops.top import metrics_url_for, run_top
from zqtwisted.runtime.broker import Broker, BrokerSession, BrokerUnavailable, Delivery
from zqtwisted.runtime.deadletter import describe, failed_queue
from zqtwisted.runtime.publisher import encode_event
from zqtwisted.sections import SECTIONS

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# Beyond the connect deadline, time for one reconnect attempt.
CONNECT_GRACE = 2.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zqctl", description="Inspect and operate zqtwisted's queues.")
    p.add_argument("--config", help="TOML configuration file (default: $ZQ_CONFIG)")
    p.add_argument("--broker", help="broker URL, overriding the configuration")
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="publish one event, or one per line from stdin")
    pub.add_argument("queue")
    pub.add_argument("event", nargs="?", help="a JSON object; read lines from stdin when absent")
    purge = sub.add_parser("purge", help="delete every event of a known queue")
    purge.add_argument("queue", nargs="?")
    purge.add_argument("--all", action="store_true", help="purge every known queue")
    sub.add_parser("queues", help="depth and consumer count of each queue")
    failed = sub.add_parser("failed", help="list the dead letters of a queue")
    failed.add_argument("queue")
    failed.add_argument("--limit", type=int, default=100)
    failed.add_argument("--purge", action="store_true", help="delete them instead")
    replay = sub.add_parser("replay", help="re-publish dead letters to their queue, failed_tries reset")
    replay.add_argument("queue")
    replay.add_argument("--limit", type=int, default=None)
    check = sub.add_parser("check", help="Zulip's queue check (Nagios exit codes 0/1/2/3)")
    check.add_argument("--consumers", action="store_true", help="check that every enabled queue has a consumer")
    top = sub.add_parser("top", help="live view of the queues, refreshed every second")
    top.add_argument("--http", help="the workers' HTTP endpoint, for rates and consume times ([workers] http)")
    top.add_argument("--interval", type=float, default=1.0)
    return p


def enabled_queues(config: Config) -> list[str]:
    return [q for q in known_queues() if config.queue(q).enabled]


async def all_counts(session: BrokerSession, queues: Sequence[str]) -> Mapping[str, tuple[int, int]]:
    return {queue: await session.queue_counts(queue) for queue in queues}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        config = load_config(args.config, sections=SECTIONS)
        if args.broker:
            config = config.with_broker_url(args.broker)
    except ConfigError as e:
        sys.stderr.write(f"zqctl: configuration: {e}\n")
        raise SystemExit(EXIT_USAGE) from None
    try:
        import_consumer_modules(config.workers.consumer_modules)
    except WorkerDeclarationError as e:
        sys.stderr.write(f"zqctl: {e}\n")
        raise SystemExit(EXIT_USAGE) from None
    command = COMMANDS[args.command]
    args.config_obj = config
    register_config_secrets(config)
    setup_logging(sys.stderr, level=LogLevel.warn)
    react(lambda reactor: ensureDeferred(_run(reactor, config, command, args)))


async def _run(reactor: Any, config: Config, command: Command, args: argparse.Namespace) -> None:
    from zqtwisted.runtime.amqp import AMQPBroker

    broker = AMQPBroker(reactor, config.broker)
    args.clock = reactor
    broker.startService()
    try:
        session = await broker.session(config.broker.connect_timeout + CONNECT_GRACE)
        code = await command(broker, session, args, sys.stdout)
    except BrokerUnavailable as e:
        if command is cmd_check:
            sys.stdout.write(f"{int(reactor.seconds())}|{UNKNOWN}|UNKNOWN|cannot reach RabbitMQ: {e}\n")
            code = UNKNOWN
        else:
            sys.stderr.write(f"zqctl: cannot reach RabbitMQ: {e}\n")
            code = EXIT_ERROR
    except (WorkerDeclarationError, ValueError) as e:
        sys.stderr.write(f"zqctl: {e}\n")
        code = EXIT_USAGE
    finally:
        await broker.stopService()
    if code:
        raise SystemExit(code)


Command = Callable[[Broker, BrokerSession, argparse.Namespace, TextIO], "Deferred[int] | Any"]


async def cmd_publish(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    lines = [args.event] if args.event is not None else sys.stdin
    count = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = encode_event(json.loads(line))
        except (ValueError, TypeError) as e:
            sys.stderr.write(f"zqctl: line {n}: not a JSON object: {e}\n")
            return EXIT_USAGE
        await session.publish(args.queue, body)
        count += 1
    out.write(f"published {count} event(s) to {args.queue}\n")
    return EXIT_OK


async def cmd_purge(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    if args.all == bool(args.queue):
        raise ValueError("give a queue name or --all")
    names = known_queues() if args.all else [args.queue]
    for name in names:
        get_spec(name)  # unknown names are an error, as in Zulip
        count = await session.purge(name)
        out.write(f"purged {count} event(s) from {name}\n")
    return EXIT_OK


async def cmd_queues(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    out.write(f"{'queue':40} {'messages':>10} {'consumers':>10} {'failed':>8}\n")
    for name in known_queues():
        messages, consumers = await session.queue_counts(name)
        dead, _ = await session.queue_counts(failed_queue(name))
        out.write(f"{name:40} {messages:>10} {consumers:>10} {dead:>8}\n")
    return EXIT_OK


async def cmd_failed(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    name = failed_queue(args.queue)
    if args.purge:
        count = await session.purge(name)
        out.write(f"purged {count} dead letter(s) of {args.queue}\n")
        return EXIT_OK
    held: list[Delivery] = []
    while len(held) < args.limit:
        delivery = await session.get(name)
        if delivery is None:
            break
        held.append(delivery)
        info = describe(delivery.headers)
        body = delivery.body.decode("utf-8", "replace")
        out.write(json.dumps({**info, "body": body[:2000]}, sort_keys=True) + "\n")
    for delivery in reversed(held):
        delivery.nack(requeue=True)
    out.write(f"{len(held)} dead letter(s) listed for {args.queue}\n")
    return EXIT_OK


async def cmd_replay(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    name = failed_queue(args.queue)
    count = 0
    while args.limit is None or count < args.limit:
        delivery = await session.get(name)
        if delivery is None:
            break
        body = replay_body(delivery.body)
        await session.publish(args.queue, body)
        delivery.ack()
        count += 1
    out.write(f"replayed {count} event(s) to {args.queue}\n")
    return EXIT_OK


async def cmd_check(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    config: Config = args.config_obj
    counts = await all_counts(session, enabled_queues(config))
    now = args.clock.seconds()
    if args.consumers:
        code, text = check_consumers(counts, counts.keys(), now)
    else:
        limits = config.section("check", CheckSettings).as_limits()
        code, text = run_check(counts, config.paths.stats_dir, now, limits, stats_queues=known_queues())
    out.write(text + "\n")
    return code


async def cmd_top(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    config: Config = args.config_obj
    queues = enabled_queues(config)

    def sample() -> Deferred[Mapping[str, tuple[int, int]]]:
        return Deferred.fromCoroutine(all_counts(session, queues))

    await run_top(
        args.clock,
        sample,
        metrics_url_for(args.http or config.workers.http or DEFAULT_HTTP_ENDPOINT),
        interval=args.interval,
        out=out,
        stats_dir=config.paths.stats_dir,
    )
    return EXIT_OK


def replay_body(body: bytes) -> bytes:
    """The event to re-publish: ``failed_tries`` removed; a malformed body as it was."""
    try:
        event = json.loads(body)
    except ValueError:
        return body
    if isinstance(event, dict):
        event.pop("failed_tries", None)
        return encode_event(event)
    return body


COMMANDS: dict[str, Command] = {
    "publish": cmd_publish,
    "purge": cmd_purge,
    "queues": cmd_queues,
    "failed": cmd_failed,
    "replay": cmd_replay,
    "check": cmd_check,
    "top": cmd_top,
}
