"""user_activity into PostgreSQL: events/s of zqtwisted's worker next to a Zulip-style blocking consumer.

A throwaway database gets Zulip's tables (the schema fixture of tests/fixtures/zulip_schema/),
50 users and 3 clients.  ``bench_user_activity`` is filled with ``--count`` events built as
Zulip's ``update_user_activity`` builds them, over 50 users, 3 clients and 20 queries (so
with many duplicates per batch), before each consumer starts.  The consumers:

* **zqtwisted**: a ``twistd -n zqworkers --queue bench_user_activity`` child in Zulip mode
  running the shipped ``UserActivityWorker`` (bench/activity_workers.py): batches of 100,
  de-duplicated, one UPSERT per batch through the thread pool; up to 4 batches in flight
  (prefetch 400), so that the next batch is gathered while one is written;
* **zqtwisted, one batch at a time**: the same with ``prefetch = 100, concurrency = 1``
  (Zulip's stop-and-wait shape), to show what the overlap is worth;
* **Zulip-style (blocking)**: this script's ``blocking`` mode, built like Zulip's
  ``LoopQueueProcessingWorker`` over ``SimpleQueueClient.start_json_consumer``: a
  ``BlockingConnection``, prefetch 100, batches of up to 100 events or 1 s, then
  ``UserActivityWorker.consume_batch``'s de-duplication and its single UPSERT (the same
  SQL, built with ``psycopg2.sql.Literal``) on an autocommit psycopg2 connection (Django's
  default), then one multiple-ack.

The clock is the parent's: it polls ``sum(count)`` of ``zerver_useractivity`` every 20 ms;
the figure is the events written between the first poll that sees any and the poll that
sees them all, over that time (start-up and the first batch are not counted).  Each run
then checks every key's count and latest time.

    python bench/bench_user_activity.py [--count 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
from benchlib import BENCH, REPO, Broker, broker, child_env, stop

QUEUE = "bench_user_activity"
BATCH = 100
POLL = 0.02
CONSUMERS = ("zqtwisted", "zqtwisted_serial", "zulip")
LABELS = {
    "zqtwisted": "zqtwisted",
    "zqtwisted_serial": "zqtwisted, one batch at a time",
    "zulip": "Zulip-style (blocking)",
}
Key = tuple[int, int, str]

# Zulip's UserActivityWorker.consume_batch statement (zerver/worker/user_activity.py).
ZULIP_UPSERT = """
    INSERT INTO zerver_useractivity(user_profile_id, client_id, query, count, last_visit)
    VALUES {rows}
    ON CONFLICT (user_profile_id, client_id, query) DO UPDATE SET
        count = zerver_useractivity.count + excluded.count,
        last_visit = greatest(zerver_useractivity.last_visit, excluded.last_visit)
"""


@dataclass(frozen=True)
class Workload:
    events: list[dict[str, Any]]
    counts: Counter[Key]
    latest: dict[Key, int]


def workload(count: int, users: Sequence[int], clients: Sequence[int], seed: int = 14) -> Workload:
    """``count`` events as update_user_activity builds them: 50 users, 3 clients, 20 queries, times shuffled."""
    sys.path.insert(0, str(REPO))
    from tests.zulip_activity_events import user_activity_event

    rng = random.Random(seed)
    queries = [f"/json/endpoint{i}" for i in range(20)]
    start = datetime(2025, 11, 20, tzinfo=UTC)
    events = []
    for _ in range(count):
        now = start + timedelta(seconds=rng.randrange(86400))
        event = user_activity_event(rng.choice(users), rng.choice(clients), rng.choice(queries), now)
        assert event is not None
        events.append(event)
    counts: Counter[Key] = Counter((e["user_profile_id"], e["client_id"], e["query"]) for e in events)
    latest: dict[Key, int] = {}
    for e in events:
        key = (e["user_profile_id"], e["client_id"], e["query"])
        latest[key] = max(latest.get(key, 0), e["time"])
    return Workload(events, counts, latest)


@contextmanager
def zulip_database() -> Iterator[tuple[Any, list[int], list[int]]]:
    """A throwaway database with Zulip's tables, 50 users, 3 clients: (it, user ids, client ids); dropped after."""
    sys.path.insert(0, str(REPO))
    from tests.zulip_db import ZulipTestDatabase

    db = ZulipTestDatabase()
    try:
        realm = db.realm("zulip", "Bench")
        users = [db.user(realm, f"user{i}@zulip.example.com", f"User {i}") for i in range(50)]
        clients = [db.client_id] + [db.insert("zerver_client", name=n) for n in ("ZulipMobile", "API")]
        yield db, users, clients
    finally:
        db.drop()


def fill(b: Broker, events: Sequence[dict[str, Any]]) -> None:
    """Purge the queue, publish the events (persistent), wait until all are ready."""
    b.purge(QUEUE)
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    channel = b.channel
    for event in events:
        channel.basic_publish("", QUEUE, json.dumps(event).encode(), props)
    deadline = time.monotonic() + 60
    while b.declare(QUEUE) < len(events):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{QUEUE}: only {b.declare(QUEUE)} of {len(events)} events arrived")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(db: Any, application: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving ``application`` on the benchmark's database."""
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s", (db.name, application)
    )
    return {pid: cpu_seconds(pid) for (pid,) in rows}


def watch(
    db: Any, expected: int, child: subprocess.Popen[bytes], application: str, timeout: float, log: Path
) -> dict[str, Any]:
    """Poll sum(count) until it reaches ``expected``: events/s between the first poll seeing rows and the last.

    Also the CPU time per event, over the same span, of the consumer process (all its threads)
    and of the PostgreSQL backends it uses.
    """
    first_at = 0.0
    first = 0
    cpu_start = 0.0
    pg_start: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        written = int(db.execute("SELECT coalesce(sum(count), 0) FROM zerver_useractivity")[0][0])
        now = time.perf_counter()
        if written and not first_at:
            first_at, first = now, written
            cpu_start, pg_start = cpu_seconds(child.pid), backends(db, application)
        if written >= expected:
            seconds = now - first_at
            cpu = cpu_seconds(child.pid) - cpu_start
            pg_end = backends(db, application)
            pg = sum(end - pg_start.get(pid, 0.0) for pid, end in pg_end.items())
            n = written - first
            return {
                "events": expected,
                "seconds": round(seconds, 3),
                "rate": round(n / seconds) if seconds > 0 else 0,
                "cpu_us": round(cpu / n * 1e6, 1) if n else 0.0,
                "db_cpu_us": round(pg / n * 1e6, 1) if n else 0.0,
            }
        if child.poll() is not None:
            raise RuntimeError(f"the consumer exited with {child.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {written} of {expected} events written within {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(POLL)


def check(db: Any, work: Workload) -> None:
    """Every key's count and latest time, as Zulip's worker would have written them."""
    rows = db.execute(
        "SELECT user_profile_id, client_id, query, count, extract(epoch from last_visit)::bigint "
        "FROM zerver_useractivity"
    )
    counts = {(u, c, q): n for u, c, q, n, _ in rows}
    latest = {(u, c, q): t for u, c, q, _, t in rows}
    if counts != dict(work.counts) or latest != work.latest:
        raise RuntimeError("zerver_useractivity does not hold the expected counts and times")


def run_one(db: Any, b: Broker, work: Workload, consumer: str) -> dict[str, Any]:
    """Fill the queue, start ``consumer``, time it writing every event, check the rows, stop it."""
    db.execute("TRUNCATE zerver_useractivity")
    fill(b, work.events)
    workdir = Path(tempfile.mkdtemp(prefix="zqbench-activity-"))
    log = workdir / "consumer.log"
    try:
        with open(log, "wb") as out:
            child = _start(db, consumer, len(work.events), workdir, out)
            try:
                application = "zulip-style" if consumer == "zulip" else "zqtwisted"
                result = watch(db, len(work.events), child, application, 60 + len(work.events) / 200, log)
            finally:
                stop(child)
        check(db, work)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start(db: Any, consumer: str, count: int, workdir: Path, out: Any) -> subprocess.Popen[bytes]:
    dsn = f"host=127.0.0.1 port=5432 dbname={db.name} user=postgres"
    if consumer == "zulip":
        command = [sys.executable, str(BENCH / "bench_user_activity.py"), "blocking", "--dsn", dsn]
        command += ["--count", str(count)]
        return subprocess.Popen(command, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    config = workdir / "zqtwisted.toml"
    serial = f"[queues.{QUEUE}]\nprefetch = {BATCH}\nconcurrency = 1\n" if consumer == "zqtwisted_serial" else ""
    config.write_text(
        '[workers]\nconsumer_modules = ["activity_workers"]\nhttp = "tcp:0:interface=127.0.0.1"\ndrain_timeout = 5\n'
        f'[paths]\nstats_dir = "{workdir}"\nerror_dir = "{workdir}"\ntest_queue_file = "{workdir}/t"\n'
        f'[zulip]\ndatabase = "{dsn}"\nexternal_host = "zulip.example.com"\n{serial}'
    )
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
    return subprocess.Popen(
        [*command, "zqworkers", "--queue", QUEUE],
        env=child_env(ZQ_CONFIG=str(config)),
        cwd=workdir,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def postgres_missing() -> str:
    """Why PostgreSQL cannot be used here ("" when it can)."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
        import psycopg2  # noqa: F401
    except (OSError, ImportError) as e:
        return f"PostgreSQL is not usable on 127.0.0.1:5432 ({e})"
    return ""


def run(count: int = 20_000, repeat: int = 1, log: Any = print) -> dict[str, Any]:
    """Each consumer ``repeat`` times (order rotated), the median run of each; skipped without PostgreSQL (not CI)."""
    missing = postgres_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(missing)
        log(f"   user_activity: skipped, {missing}")
        return {"skipped": missing}
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in CONSUMERS}
    with zulip_database() as (db, users, clients), broker() as b:
        work = workload(count, users, clients)
        for n in range(repeat):
            order = CONSUMERS[n % len(CONSUMERS) :] + CONSUMERS[: n % len(CONSUMERS)]
            for consumer in order:
                r = run_one(db, b, work, consumer)
                results[consumer].append(r)
                log(
                    f"   user_activity {LABELS[consumer]}: {r['events']} events in {r['seconds']} s = {r['rate']}/s; "
                    f"CPU per event {r['cpu_us']} us, PostgreSQL {r['db_cpu_us']} us"
                )
        b.purge(QUEUE)
    out: dict[str, Any] = {"events": count, "keys": len(work.counts), "batch": BATCH}
    for consumer, runs in results.items():
        out[consumer] = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    return out


# -- the Zulip-style consumer (a process of its own) ------------------------------------------


def zulip_consume_batch(connection: Any, events: Sequence[dict[str, Any]]) -> None:
    """Zulip's UserActivityWorker.consume_batch: de-duplicate, then one UPSERT of literal rows."""
    from psycopg2.sql import SQL, Literal

    uncommitted: dict[Key, tuple[int, float]] = {}
    for event in events:
        key = (event["user_profile_id"], event["client_id"], event["query"])
        if key not in uncommitted:
            uncommitted[key] = (1, event["time"])
        else:
            count, event_time = uncommitted[key]
            uncommitted[key] = (count + 1, max(event_time, event["time"]))
    rows = [
        SQL("({},{},{},{},to_timestamp({}))").format(Literal(u), Literal(c), Literal(q), Literal(n), Literal(t))
        for (u, c, q), (n, t) in uncommitted.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(SQL(ZULIP_UPSERT).format(rows=SQL(", ").join(rows)))


def blocking(dsn: str, count: int) -> None:
    """LoopQueueProcessingWorker over start_json_consumer: batches of 100 or 1 s, one multiple-ack per batch.

    ``count``: the events to expect, so that the last batch is written at once, not after 1 s.
    """
    import psycopg2
    from benchlib import broker_url

    database = psycopg2.connect(dsn, options="-c search_path=zulip", application_name="zulip-style")
    database.autocommit = True  # Django's default: each statement commits
    connection = pika.BlockingConnection(pika.URLParameters(broker_url()))
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=True)
    channel.basic_qos(prefetch_count=BATCH)
    events: list[dict[str, Any]] = []
    last_process = time.time()
    max_processed = 0
    done = 0
    for method, _properties, body in channel.consume(QUEUE, inactivity_timeout=1.0):
        if body is not None:
            events.append(json.loads(body))
            max_processed = method.delivery_tag
        now = time.time()
        if len(events) >= BATCH or (now >= last_process + 1.0 and events) or done + len(events) >= count:
            zulip_consume_batch(database, events)
            channel.basic_ack(max_processed, multiple=True)
            done += len(events)
            events = []
            last_process = now
    # Runs until the benchmark stops it (SIGTERM), as a worker does; the parent measures meanwhile.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    blocking_mode = sub.add_parser("blocking", help="the Zulip-style consumer (started by the benchmark)")
    blocking_mode.add_argument("--dsn", required=True)
    blocking_mode.add_argument("--count", type=int, required=True)
    parser.add_argument("--count", type=int, default=20_000, help="events per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per consumer (median)")
    args = parser.parse_args()
    if args.mode == "blocking":
        blocking(args.dsn, args.count)
        return
    r = run(args.count, args.repeat)
    if "skipped" in r:
        return
    for consumer in CONSUMERS:
        v = r[consumer]
        print(
            f"{LABELS[consumer]}: {v['events']} events in {v['seconds']} s = {v['rate']} events/s; "
            f"CPU per event: consumer {v['cpu_us']} us, PostgreSQL {v['db_cpu_us']} us"
        )


if __name__ == "__main__":
    main()
