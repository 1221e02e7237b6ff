"""Zulip's queue check, transcribed for the tests: the reference ``zqctl check`` is compared with.

Source: zulip/zulip ``scripts/lib/check_rabbitmq_queue.py`` (``normal_queues``,
``MAX_SECONDS_TO_CLEAR``, ``CRITICAL_SECONDS_TO_CLEAR``, ``analyze_queue_stats``,
``check_other_queues``, ``check_rabbitmq_queues``), kept as close to it as a
function of its inputs allows: the text of ``rabbitmqctl list_queues name messages
consumers`` (parsed with Zulip's regular expression), the stats directory and ``now``.
One parameter is added: ``stuck_seconds`` (Zulip's literal ``180``), so that a test can
prove the rule without waiting three minutes.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from typing import Any

normal_queues = [
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
]

OK = 0
WARNING = 1
CRITICAL = 2
UNKNOWN = 3

states = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}

MAX_SECONDS_TO_CLEAR: defaultdict[str, int] = defaultdict(
    lambda: 30,
    deferred_work=600,
    digest_emails=1200,
    missedmessage_mobile_notifications=120,
    embed_links=60,
    email_senders=90,
    deferred_email_senders=3600,
)
CRITICAL_SECONDS_TO_CLEAR: defaultdict[str, int] = defaultdict(
    lambda: 60,
    deferred_work=900,
    missedmessage_mobile_notifications=180,
    digest_emails=1800,
    embed_links=90,
    email_senders=300,
    deferred_email_senders=4500,
)
WARN_COUNT_THRESHOLD_DEFAULT = 10
CRITICAL_COUNT_THRESHOLD_DEFAULT = 50


def analyze_queue_stats(
    queue_name: str, stats: dict[str, Any], queue_count_rabbitmqctl: int, now: int, stuck_seconds: float = 180
) -> dict[str, Any]:
    if stats == {}:
        return dict(status=UNKNOWN, name=queue_name, message="invalid or no stats data")
    if now - stats["update_time"] > stuck_seconds and queue_count_rabbitmqctl > 10:
        return dict(
            status=CRITICAL,
            name=queue_name,
            message="queue appears to be stuck, last update {}, queue size {}".format(
                stats["update_time"], queue_count_rabbitmqctl
            ),
        )
    current_size = queue_count_rabbitmqctl
    average_consume_time = stats["recent_average_consume_time"]
    if average_consume_time is None:
        return dict(status=OK, name=queue_name, message="")
    expected_time_to_clear_backlog = current_size * average_consume_time
    if expected_time_to_clear_backlog > MAX_SECONDS_TO_CLEAR[queue_name]:
        if expected_time_to_clear_backlog > CRITICAL_SECONDS_TO_CLEAR[queue_name]:
            status = CRITICAL
        else:
            status = WARNING
        return dict(
            status=status,
            name=queue_name,
            message=f"clearing the backlog will take too long: {expected_time_to_clear_backlog}s, size: {current_size}",
        )
    return dict(status=OK, name=queue_name, message="")


def check_other_queues(queue_counts_dict: dict[str, int]) -> list[dict[str, Any]]:
    results = []
    for queue, count in queue_counts_dict.items():
        if queue in normal_queues:
            continue
        if count > CRITICAL_COUNT_THRESHOLD_DEFAULT:
            results.append(dict(status=CRITICAL, name=queue, message=f"count critical: {count}"))
        elif count > WARN_COUNT_THRESHOLD_DEFAULT:
            results.append(dict(status=WARNING, name=queue, message=f"count warning: {count}"))
        else:
            results.append(dict(status=OK, name=queue, message=""))
    return results


def check_rabbitmq_queues(
    list_queues_output: str, queue_stats_dir: str, now: int, stuck_seconds: float = 180
) -> tuple[int, list[dict[str, Any]]]:
    """Zulip's ``check_rabbitmq_queues`` on the given inputs: (status, the results that are not OK)."""
    pattern = re.compile(r"(\w+)\t(\d+)\t(\d+)")
    queue_counts_rabbitmqctl = {}
    queues_with_consumers = []
    for line in list_queues_output.split("\n"):
        line = line.strip()
        m = pattern.match(line)
        if m:
            queue = m.group(1)
            count = int(m.group(2))
            consumers = int(m.group(3))
            queue_counts_rabbitmqctl[queue] = count
            if consumers > 0 and not queue.startswith("notify_tornado"):
                queues_with_consumers.append(queue)
    queue_stats: dict[str, dict[str, Any]] = {}
    queues_to_check = set(normal_queues).intersection(set(queues_with_consumers))
    for queue in queues_to_check:
        file_path = os.path.join(queue_stats_dir, queue + ".stats")
        if not os.path.exists(file_path):
            queue_stats[queue] = {}
            continue
        with open(file_path) as f:
            try:
                queue_stats[queue] = json.load(f)
            except json.decoder.JSONDecodeError:
                queue_stats[queue] = {}
    results = []
    for queue_name, stats in queue_stats.items():
        results.append(analyze_queue_stats(queue_name, stats, queue_counts_rabbitmqctl[queue_name], now, stuck_seconds))
    results.extend(check_other_queues(queue_counts_rabbitmqctl))
    status = max((result["status"] for result in results), default=OK)
    return status, [r for r in results if r["status"] > 0]
