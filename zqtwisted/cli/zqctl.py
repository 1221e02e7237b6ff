"""``zqctl``: publish, purge, inspect queues, list and replay dead letters.

    zqctl publish QUEUE '{"a": 1}'     # or one JSON event per line on stdin
    zqctl purge QUEUE | zqctl purge --all
    zqctl queues
    zqctl failed QUEUE [--limit N] [--purge]
    zqctl replay QUEUE [--limit N]
    zqctl check [--consumers | --failed] [--stuck-seconds S]
    zqctl top

A composition root like ``tap``: it runs the reactor with ``task.react``.  The
commands that only look (``queues``, ``check``, ``top``) read the queues through
``rabbitmqctl`` or the management API (:mod:`zqtwisted.ops.queues`) and never
connect over AMQP; ``failed`` reads dead letters with ``basic.get`` and returns them.
None of them declares a queue or attaches a consumer: monitoring never changes the broker.

Every broker operation has a deadline (``--timeout``, default ``[broker] publish_timeout``):
a broker that refuses the credentials, blocks publishing (a memory or disk alarm) or does
not answer ends the command with one line saying so and exit status 1, never a hang.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from zqtwisted.catalog import get_spec, import_consumer_modules, known_queues
from zqtwisted.config import Config, ConfigError, load_config
from zqtwisted.errors import WorkerDeclarationError
from zqtwisted.ops.check import UNKNOWN, check_consumers, check_failed, run_check
from zqtwisted.ops.health import DEFAULT_HTTP_ENDPOINT
from zqtwisted.ops.logs import register_config_secrets, setup_logging
from zqtwisted.ops.queues import QueueReader, QueueReadError, counts_of, reader_for
from zqtwisted.ops.settings import CheckSettings
from zqtwisted.ops.top import metrics_url_for, run_top
from zqtwisted.runtime.broker import Broker, BrokerRefused, BrokerSession, BrokerUnavailable, Delivery, PublishFailed
from zqtwisted.runtime.deadletter import FAILED_SUFFIX, describe, failed_queue, replay_body, replayable
from zqtwisted.runtime.declarations import QueueDeclarations, QueueMismatch
from zqtwisted.runtime.publisher import encode_event
from zqtwisted.sections import SECTIONS

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# Beyond the connect deadline, time for one reconnect attempt.
CONNECT_GRACE = 2.0
NOT_FOUND = 404
# The connection's own log lines (and pika's): zqctl says in one line what became of the command.
QUIET = {
    "zqtwisted.runtime.amqp": LogLevel.critical,
    "zqtwisted.runtime.amqp_session": LogLevel.critical,
    "pika": LogLevel.critical,
}
T = TypeVar("T")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zqctl", description="Inspect and operate zqtwisted's queues.")
    p.add_argument("--config", help="TOML configuration file (default: $ZQ_CONFIG)")
    p.add_argument("--broker", help="broker URL, overriding the configuration")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each broker operation may take, publishes included ([broker] publish_timeout, 30)",
    )
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
    check.add_argument("--failed", action="store_true", help="check the dead letters held in the .failed queues")
    check.add_argument(
        "--stuck-seconds", type=float, default=None, help="stats age that makes a backlog stuck ([check], 180)"
    )
    top = sub.add_parser("top", help="live view of the queues, refreshed every second")
    top.add_argument("--http", help="the workers' HTTP endpoint, for rates and consume times ([workers] http)")
    top.add_argument("--interval", type=float, default=1.0)
    return p


def enabled_queues(config: Config) -> list[str]:
    """The queues ``--all`` would run under ``config`` (Zulip mode's only with ``[zulip] database``)."""
    return [q for q in known_queues() if config.queue(q).enabled and get_spec(q).unavailable(config) is None]


async def read_counts(reader: QueueReader, queues: Sequence[str] | None = None) -> Mapping[str, tuple[int, int]]:
    """(messages, consumers) of every queue of the vhost; with ``queues``, of those (absent ones: 0, 0)."""
    counts = counts_of(await reader.read())
    if queues is None:
        return counts
    return {queue: counts.get(queue, (0, 0)) for queue in queues}


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
    args.config_obj = config
    if args.timeout is None:
        args.timeout = config.broker.publish_timeout
    register_config_secrets(config)
    setup_logging(sys.stderr, level=LogLevel.warn, levels=QUIET)
    if args.command in READERS:
        looker = READERS[args.command]
        react(lambda reactor: ensureDeferred(_look(reactor, config, looker, args)))
        return
    command = COMMANDS[args.command]
    react(lambda reactor: ensureDeferred(_run(reactor, config, command, args)))


async def _look(reactor: Any, config: Config, command: ReadCommand, args: argparse.Namespace) -> None:
    """Run a command that only reads the queues: no AMQP connection at all."""
    args.clock = reactor
    try:
        reader = reader_for(config, reactor)
        code = await command(reader, args, sys.stdout)
    except (QueueReadError, ConfigError) as e:
        if command is cmd_check:
            sys.stdout.write(f"{int(reactor.seconds())}|{UNKNOWN}|UNKNOWN|cannot read the queues: {e}\n")
            code = UNKNOWN
        else:
            sys.stderr.write(f"zqctl: cannot read the queues: {e}\n")
            code = EXIT_ERROR
    if code:
        raise SystemExit(code)


async def _run(reactor: Any, config: Config, command: Command, args: argparse.Namespace) -> None:
    from zqtwisted.runtime.amqp import AMQPBroker

    broker = AMQPBroker(
        reactor, config.broker, declarations=QueueDeclarations.from_config(config), give_up_when_refused=True
    )
    args.clock = reactor
    broker.startService()
    try:
        session = await broker.session(config.broker.connect_timeout + CONNECT_GRACE)
        code = await command(broker, session, args, sys.stdout)
    except BrokerRefused as e:
        sys.stderr.write(f"zqctl: {e}\n")
        code = EXIT_ERROR
    except BrokerUnavailable as e:
        problem = f" ({broker.problem})" if broker.problem else ""
        sys.stderr.write(f"zqctl: cannot reach RabbitMQ: {e}{problem}\n")
        code = EXIT_ERROR
    except PublishFailed as e:  # its message says when the broker blocks publishing (a resource alarm)
        sys.stderr.write(f"zqctl: {e}\n")
        code = EXIT_ERROR
    except (WorkerDeclarationError, ValueError) as e:
        sys.stderr.write(f"zqctl: {e}\n")
        code = EXIT_USAGE
    except QueueMismatch as e:
        sys.stderr.write(f"zqctl: {e}\n")
        code = EXIT_ERROR
    finally:
        await broker.stopService()  # bounded: a broker that does not answer the close is dropped
    if code:
        raise SystemExit(code)


def within(d: Deferred[T], args: argparse.Namespace, what: str) -> Deferred[T]:
    """``d``, failing with BrokerUnavailable when the broker does not answer within ``--timeout`` (None: no limit)."""

    def too_slow(result: T | Failure, timeout: float) -> T:
        raise BrokerUnavailable(f"RabbitMQ did not answer within {timeout:g}s ({what})")

    if args.timeout is None:  # main() always sets one
        return d
    clock: IReactorTime = args.clock
    return d.addTimeout(args.timeout, clock, onTimeoutCancel=too_slow)


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
        try:
            await broker.publish(args.queue, body, timeout=args.timeout)
        except PublishFailed as e:
            raise PublishFailed(f"gave up on event {n}: {e} ({count} event(s) published to {args.queue})") from None
        count += 1
    out.write(f"published {count} event(s) to {args.queue}\n")
    return EXIT_OK


async def cmd_purge(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    if args.all == bool(args.queue):
        raise ValueError("give a queue name or --all")
    names = known_queues() if args.all else [args.queue]
    for name in names:
        get_spec(name)  # unknown names are an error, as in Zulip
        count = await within(session.purge(name), args, f"purging {name}")
        out.write(f"purged {count} event(s) from {name}\n")
    return EXIT_OK


async def cmd_queues(reader: QueueReader, args: argparse.Namespace, out: TextIO) -> int:
    """Every known queue and every other queue of the vhost: messages (ready + unacked), consumers, dead letters.

    A known queue that does not exist (yet) shows ``-``.
    """
    rows = {q.name: q for q in await reader.read()}
    names = sorted({*known_queues(), *(n for n in rows if not n.endswith(FAILED_SUFFIX))})
    out.write(f"{'queue':40} {'messages':>9} {'ready':>9} {'unacked':>9} {'consumers':>9} {'failed':>8}\n")
    for name in names:
        q, dead = rows.get(name), rows.get(failed_queue(name))
        figures = (q.messages, q.ready, q.unacked, q.consumers) if q is not None else ("-", "-", "-", "-")
        failed = dead.messages if dead is not None else "-"
        out.write(f"{name:40} {figures[0]:>9} {figures[1]:>9} {figures[2]:>9} {figures[3]:>9} {failed:>8}\n")
    return EXIT_OK


async def cmd_failed(broker: Broker, session: BrokerSession, args: argparse.Namespace, out: TextIO) -> int:
    name = failed_queue(args.queue)
    if args.purge:
        count = await within(session.purge(name), args, f"purging {name}")
        out.write(f"purged {count} dead letter(s) of {args.queue}\n")
        return EXIT_OK
    held: list[Delivery] = []
    while len(held) < args.limit:
        try:
            delivery = await within(session.get(name), args, f"reading {name}")
        except Exception as e:
            if not held and _not_found(e):
                out.write(f"0 dead letter(s) listed for {args.queue} (there is no queue {name})\n")
                return EXIT_OK
            raise
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
    """Re-publish dead letters to their queue; a letter holding only an excerpt (body too large) stays."""
    name = failed_queue(args.queue)
    count = 0
    kept: list[Delivery] = []
    try:
        while args.limit is None or count < args.limit:
            try:
                delivery = await within(session.get(name), args, f"reading {name}")
            except Exception as e:
                if count or kept or not _not_found(e):
                    raise
                out.write(f"replayed 0 event(s) to {args.queue} (there is no queue {name})\n")
                return EXIT_OK
            if delivery is None:
                break
            if not replayable(delivery.headers, delivery.body):
                kept.append(delivery)  # held until the end, so that the next get moves on
                continue
            try:
                await broker.publish(args.queue, replay_body(delivery.body), timeout=args.timeout)
            except PublishFailed as e:
                delivery.nack(requeue=True)
                raise PublishFailed(f"gave up replaying: {e} ({count} event(s) replayed to {args.queue})") from None
            delivery.ack()
            count += 1
    finally:
        for delivery in reversed(kept):
            delivery.nack(requeue=True)
    out.write(f"replayed {count} event(s) to {args.queue}\n")
    if kept:
        out.write(
            f"{len(kept)} dead letter(s) left in {name}: they hold an excerpt of a body too large "
            "(x-zq-original-size), not an event\n"
        )
    return EXIT_OK


def _not_found(error: Exception) -> bool:
    """RabbitMQ closed the channel with 404 NOT_FOUND: the queue does not exist."""
    return getattr(error, "reply_code", None) == NOT_FOUND or "NOT_FOUND" in str(error)


async def cmd_check(reader: QueueReader, args: argparse.Namespace, out: TextIO) -> int:
    """Zulip's check over every queue of the vhost; ``--consumers``: the enabled queues; ``--failed``: dead letters."""
    config: Config = args.config_obj
    settings = config.section("check", CheckSettings)
    counts = await read_counts(reader)
    now = args.clock.seconds()
    if args.consumers:
        queues = enabled_queues(config)
        code, text = check_consumers({q: counts.get(q, (0, 0)) for q in queues}, queues, now)
    elif args.failed:
        code, text = check_failed(counts, now, settings.failed_limits_for)
    else:
        stuck = args.stuck_seconds if args.stuck_seconds is not None else settings.stuck_seconds
        code, text = run_check(
            counts, config.paths.stats_dir, now, settings.as_limits(), stats_queues=known_queues(), stuck_seconds=stuck
        )
    out.write(text + "\n")
    return code


async def cmd_top(reader: QueueReader, args: argparse.Namespace, out: TextIO) -> int:
    config: Config = args.config_obj
    queues = enabled_queues(config)

    def sample() -> Deferred[Mapping[str, tuple[int, int]]]:
        return Deferred.fromCoroutine(read_counts(reader, queues))

    await run_top(
        args.clock,
        sample,
        metrics_url_for(args.http or config.workers.http or DEFAULT_HTTP_ENDPOINT),
        interval=args.interval,
        out=out,
        stats_dir=config.paths.stats_dir,
    )
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "publish": cmd_publish,
    "purge": cmd_purge,
    "failed": cmd_failed,
    "replay": cmd_replay,
}

ReadCommand = Callable[[QueueReader, argparse.Namespace, TextIO], "Deferred[int] | Any"]

# The commands that only look at the queues (no AMQP connection).
READERS: dict[str, ReadCommand] = {
    "queues": cmd_queues,
    "check": cmd_check,
    "top": cmd_top,
}
