"""Zulip's queue check (``check-rabbitmq-queue``) as pure functions, plus consumers and dead letters.

Inputs are values: per queue ``(messages, consumers)`` for **every queue of the vhost**,
as ``rabbitmqctl list_queues name messages consumers`` reports them
(:mod:`zqtwisted.ops.queues`; ``messages`` = ready + unacknowledged), the parsed stats
files (:mod:`zqtwisted.ops.stats`), and ``now``.  Output is a Nagios status and Zulip's
one-line text ``{now}|{status}|{STATE}|{message}``.

The rules are Zulip's (``scripts/lib/check_rabbitmq_queue.py``):

- a queue whose workers write stats files (Zulip's ``normal_queues``, every queue
  zqtwisted serves, and their ``_shardN``) is checked only while it has consumers:
  a missing or invalid stats file is UNKNOWN ("invalid or no stats data");
  stats older than 180 s while more than 10 messages wait is CRITICAL ("queue
  appears to be stuck"); otherwise ``size * recent_average_consume_time`` above the
  queue's limits is WARNING / CRITICAL ("clearing the backlog will take too long");
- any other queue, with or without consumers: more than 10 messages is WARNING,
  more than 50 CRITICAL;
- queue names that are not ``\\w+`` (the ``{queue}.failed`` dead-letter queues) are
  skipped, as Zulip's regular expression skips them.

Differences, on purpose: the exit code is the worst state, so UNKNOWN exits 3
(Zulip maps it to WARNING); a sharded queue ``x_shardN`` gets the limits of ``x``;
and a stats queue **without** consumers whose stats file exists is judged by the
"stuck" rule too: with AMQP heartbeats on, RabbitMQ drops the consumer of a frozen
worker (and returns its unacked events to the queue), which Zulip's check would
then skip.  ``stuck_seconds`` (Zulip's 180) is a parameter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from zqtwisted.ops.stats import stats_path
from zqtwisted.runtime.deadletter import FAILED_SUFFIX
from zqtwisted.runtime.shards import base_queue

OK = 0
WARNING = 1
CRITICAL = 2
UNKNOWN = 3

STATES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

# Zulip's MAX_SECONDS_TO_CLEAR / CRITICAL_SECONDS_TO_CLEAR: (warning, critical).
DEFAULT_LIMITS: tuple[float, float] = (30, 60)
ZULIP_LIMITS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "deferred_work": (600, 900),
        "digest_emails": (1200, 1800),
        "missedmessage_mobile_notifications": (120, 180),
        "embed_links": (60, 90),
        "email_senders": (90, 300),
        "deferred_email_senders": (3600, 4500),
    }
)

STUCK_SECONDS = 180.0
STUCK_MIN_SIZE = 10
WARN_COUNT_THRESHOLD_DEFAULT = 10
CRITICAL_COUNT_THRESHOLD_DEFAULT = 50

# Zulip's normal_queues (scripts/lib/check_rabbitmq_queue.py): their workers write stats files.
ZULIP_NORMAL_QUEUES = (
    "deferred_work",
    "deferred_email_senders",
    "digest_emails",
    "email_mirror",
    "email_senders",
    "embed_links",
    "embedded_bots",
    "missedmessage_emails",
    "missedmessage_mobile_notifications",
    "outgoing_webhooks",
    "thumbnail",
    "user_activity",
    "user_activity_interval",
)
_QUEUE_NAME = re.compile(r"\w+")
STATS_KEYS = ("update_time", "recent_average_consume_time", "queue_last_emptied_timestamp")


@dataclass(frozen=True)
class Result:
    status: int
    name: str
    message: str = ""


def limits_for(queue: str, limits: Mapping[str, tuple[float, float]] | None = None) -> tuple[float, float]:
    """(warning, critical) seconds for ``queue``: the override, else Zulip's table."""
    for name in (queue, base_queue(queue)):
        if limits and name in limits:
            return limits[name]
        if name in ZULIP_LIMITS:
            return ZULIP_LIMITS[name]
    return DEFAULT_LIMITS


def parse_stats(text: str | None) -> dict[str, Any]:
    """A stats file's content, or ``{}`` when missing or invalid."""
    if text is None:
        return {}
    try:
        stats = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(stats, dict) or any(key not in stats for key in STATS_KEYS):
        return {}
    number = (int, float)
    if not isinstance(stats["update_time"], number) or not isinstance(stats["queue_last_emptied_timestamp"], number):
        return {}
    if stats["recent_average_consume_time"] is not None and not isinstance(
        stats["recent_average_consume_time"], number
    ):
        return {}
    return stats


def read_stats(stats_dir: str, queue: str) -> dict[str, Any]:
    """Read and parse ``{stats_dir}/{queue}.stats`` (``{}`` when missing or invalid)."""
    try:
        with open(stats_path(stats_dir, queue), encoding="utf-8") as f:
            return parse_stats(f.read())
    except (OSError, UnicodeDecodeError):
        return {}


def analyze_queue_stats(
    queue: str,
    stats: Mapping[str, Any],
    size: int,
    now: int,
    limits: Mapping[str, tuple[float, float]] | None = None,
    stuck_seconds: float = STUCK_SECONDS,
) -> Result:
    """Zulip's ``analyze_queue_stats``: one queue that writes stats files."""
    if not stats:
        return Result(UNKNOWN, queue, "invalid or no stats data")
    stuck = stuck_result(queue, stats, size, now, stuck_seconds)
    if stuck is not None:
        return stuck
    average = stats["recent_average_consume_time"]
    if average is None:
        return Result(OK, queue)  # just started: nothing to estimate with
    expected = size * average
    warning, critical = limits_for(queue, limits)
    if expected > warning:
        status = CRITICAL if expected > critical else WARNING
        return Result(status, queue, f"clearing the backlog will take too long: {expected}s, size: {size}")
    return Result(OK, queue)


def stuck_result(queue: str, stats: Mapping[str, Any], size: int, now: int, stuck_seconds: float) -> Result | None:
    """Zulip's "stuck" rule: no stats update for ``stuck_seconds`` while more than 10 messages wait."""
    if now - stats["update_time"] > stuck_seconds and size > STUCK_MIN_SIZE:
        return Result(
            CRITICAL,
            queue,
            "queue appears to be stuck, last update {}, queue size {}".format(stats["update_time"], size),
        )
    return None


def is_stats_queue(queue: str, stats_queues: Collection[str]) -> bool:
    """Whether ``queue`` (or the queue it is a shard of) has workers that write stats files."""
    return queue in stats_queues or base_queue(queue) in stats_queues


def check_other_queue(queue: str, count: int) -> Result:
    """Zulip's ``check_other_queues``: a queue without stats files, by size alone."""
    if count > CRITICAL_COUNT_THRESHOLD_DEFAULT:
        return Result(CRITICAL, queue, f"count critical: {count}")
    if count > WARN_COUNT_THRESHOLD_DEFAULT:
        return Result(WARNING, queue, f"count warning: {count}")
    return Result(OK, queue)


def check_queues(
    counts: Mapping[str, tuple[int, int]],
    stats: Mapping[str, Mapping[str, Any]],
    stats_queues: Collection[str],
    now: int,
    limits: Mapping[str, tuple[float, float]] | None = None,
    stuck_seconds: float = STUCK_SECONDS,
) -> list[Result]:
    """Every queue's result.  ``stats_queues``: (base) names whose workers write stats.

    A stats queue without consumers is judged only by the stuck rule, and only when
    its stats file exists (a worker ran it): see the module docstring.
    """
    results = []
    for queue, (messages, consumers) in sorted(counts.items()):
        if not _QUEUE_NAME.fullmatch(queue):
            continue
        if is_stats_queue(queue, stats_queues):
            queue_stats = stats.get(queue, {})
            if consumers > 0 and not queue.startswith("notify_tornado"):
                results.append(analyze_queue_stats(queue, queue_stats, messages, now, limits, stuck_seconds))
            elif queue_stats:
                stuck = stuck_result(queue, queue_stats, messages, now, stuck_seconds)
                if stuck is not None:
                    results.append(stuck)
        else:
            results.append(check_other_queue(queue, messages))
    return results


def summarize(results: Iterable[Result], now: int, ok_message: str = "queues normal") -> tuple[int, str]:
    """The Nagios code and Zulip's line ``{now}|{status}|{STATE}|{message}``."""
    results = list(results)
    status = max((r.status for r in results), default=OK)
    if status == OK:
        return OK, f"{now}|{status}|{STATES[status]}|{ok_message}"
    message = "; ".join(f"queue {r.name} problem: {STATES[r.status]}:{r.message}" for r in results if r.status != OK)
    return status, f"{now}|{status}|{STATES[status]}|{message}"


def run_check(
    counts: Mapping[str, tuple[int, int]],
    stats_dir: str,
    now: float,
    limits: Mapping[str, tuple[float, float]] | None = None,
    stats_queues: Collection[str] = (),
    stuck_seconds: float = STUCK_SECONDS,
) -> tuple[int, str]:
    """``zqctl check``: read the stats files of the queues that need them and judge.

    ``stats_queues``: the queues whose workers write stats files, besides Zulip's
    ``normal_queues`` (every zqtwisted worker writes them: pass the known queues).
    """
    names = {*ZULIP_NORMAL_QUEUES, *stats_queues}
    needed = [q for q in counts if _QUEUE_NAME.fullmatch(q) and is_stats_queue(q, names)]
    stats = {q: read_stats(stats_dir, q) for q in needed}
    moment = int(now)
    return summarize(check_queues(counts, stats, names, moment, limits, stuck_seconds), moment)


def check_failed(
    counts: Mapping[str, tuple[int, int]],
    now: float,
    limits: Callable[[str], tuple[int, int]] = lambda queue: (0, 100),
) -> tuple[int, str]:
    """``zqctl check --failed``: dead letters held in each ``{queue}.failed`` queue.

    More than the warning limit is WARNING (``dead letters warning: n``), more than
    the critical one CRITICAL; ``limits(queue)`` gives (warning, critical) per queue.
    """
    results = []
    for name, (messages, _consumers) in sorted(counts.items()):
        if not name.endswith(FAILED_SUFFIX) or len(name) == len(FAILED_SUFFIX):
            continue
        warning, critical = limits(name[: -len(FAILED_SUFFIX)])
        if messages > critical:
            results.append(Result(CRITICAL, name, f"dead letters critical: {messages}"))
        elif messages > warning:
            results.append(Result(WARNING, name, f"dead letters warning: {messages}"))
        else:
            results.append(Result(OK, name))
    moment = int(now)
    return summarize(results, moment, ok_message="dead letters normal")


def check_consumers(
    counts: Mapping[str, tuple[int, int]],
    queues: Iterable[str],
    now: float,
    min_consumers: int = 1,
) -> tuple[int, str]:
    """``zqctl check --consumers``: every enabled queue has at least ``min_consumers``.

    Zulip's ``check-rabbitmq-consumers`` message per queue: ``queue {q} has {n}
    consumers, needs {target}``; CRITICAL when any queue has too few.
    """
    moment = int(now)
    lines: list[tuple[int, str]] = []
    for queue in sorted(set(queues)):
        consumers = counts.get(queue, (0, 0))[1]
        status = CRITICAL if consumers < min_consumers else OK
        lines.append((status, f"queue {queue} has {consumers} consumers, needs {min_consumers}"))
    status = max((s for s, _ in lines), default=OK)
    shown = [text for s, text in lines if s != OK] if status != OK else [text for _, text in lines]
    message = "; ".join(shown) or "no queues to check"
    return status, f"{moment}|{status}|{STATES[status]}|{message}"
