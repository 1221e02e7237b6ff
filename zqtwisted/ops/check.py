"""Zulip's queue check (``check-rabbitmq-queue``) as pure functions, plus a consumers check.

Inputs are values: per queue ``(messages, consumers)`` as the broker reports them,
the parsed stats files (:mod:`zqtwisted.ops.stats`), and ``now``.  Output is a Nagios
status and Zulip's one-line text ``{now}|{status}|{STATE}|{message}``.

The rules are Zulip's (``scripts/lib/check_rabbitmq_queue.py``):

- a queue whose workers write stats files is checked only while it has consumers:
  a missing or invalid stats file is UNKNOWN ("invalid or no stats data");
  stats older than 180 s while more than 10 messages wait is CRITICAL ("queue
  appears to be stuck"); otherwise ``size * recent_average_consume_time`` above the
  queue's limits is WARNING / CRITICAL ("clearing the backlog will take too long");
- any other queue: more than 10 messages is WARNING, more than 50 CRITICAL;
- queue names that are not ``\\w+`` (the ``{queue}.failed`` dead-letter queues) are
  skipped, as Zulip's ``rabbitmqctl`` parser skips them.

Differences, on purpose: the exit code is the worst state, so UNKNOWN exits 3
(Zulip maps it to WARNING); a sharded queue ``x_shardN`` gets the limits of ``x``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from zqtwisted.ops.stats import stats_path
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

STUCK_SECONDS = 180
STUCK_MIN_SIZE = 10
WARN_COUNT_THRESHOLD_DEFAULT = 10
CRITICAL_COUNT_THRESHOLD_DEFAULT = 50

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
) -> Result:
    """Zulip's ``analyze_queue_stats``: one queue that writes stats files."""
    if not stats:
        return Result(UNKNOWN, queue, "invalid or no stats data")
    if now - stats["update_time"] > STUCK_SECONDS and size > STUCK_MIN_SIZE:
        return Result(
            CRITICAL,
            queue,
            "queue appears to be stuck, last update {}, queue size {}".format(stats["update_time"], size),
        )
    average = stats["recent_average_consume_time"]
    if average is None:
        return Result(OK, queue)  # just started: nothing to estimate with
    expected = size * average
    warning, critical = limits_for(queue, limits)
    if expected > warning:
        status = CRITICAL if expected > critical else WARNING
        return Result(status, queue, f"clearing the backlog will take too long: {expected}s, size: {size}")
    return Result(OK, queue)


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
) -> list[Result]:
    """Every queue's result.  ``stats_queues``: (base) names whose workers write stats."""
    results = []
    for queue, (messages, consumers) in sorted(counts.items()):
        if not _QUEUE_NAME.fullmatch(queue):
            continue
        if queue in stats_queues or base_queue(queue) in stats_queues:
            if consumers > 0:
                results.append(analyze_queue_stats(queue, stats.get(queue, {}), messages, now, limits))
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
) -> tuple[int, str]:
    """``zqctl check``: read the stats files of the queues that need them and judge.

    ``stats_queues``: the known queues (every zqtwisted worker writes stats files).
    """
    names = set(stats_queues)
    needed = [q for q, (_, consumers) in counts.items() if consumers > 0 and (q in names or base_queue(q) in names)]
    stats = {q: read_stats(stats_dir, q) for q in needed}
    moment = int(now)
    return summarize(check_queues(counts, stats, names, moment, limits), moment)


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
