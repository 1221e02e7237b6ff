"""Latency from publish to consume at a steady rate (default 1,000 events/s for 5 s).

The publisher (this process, a ``BlockingConnection`` like Zulip's
``queue_json_publish``, persistent messages, no confirms) stamps every event with
``"sent": time.time()`` just before publishing it, at a fixed schedule.  The
consumer notes ``time.time() - sent`` as each event reaches its consume function
(zqtwisted: ``BenchLatencyWorker.consume`` in a ``twistd -n zqworkers --queue
bench_latency`` child; the baselines: right after ``json.loads``).  The first
``--warmup`` seconds of events are left out.  Publisher and consumer are
different processes on the same machine, so the clocks agree.

    python bench/latency.py [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pika
from benchlib import BENCH, Broker, Twistd, broker, child_env, event, percentile, stop, twistd, wait_for

QUEUE = "bench_latency"
CONSUMERS = ("zqtwisted", "twisted", "blocking")


def publish_paced(b: Broker, count: int, rate: float) -> float:
    """Publish ``count`` events at ``rate`` per second on an absolute schedule; the rate achieved."""
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    channel = b.channel
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        channel.basic_publish("", QUEUE, json.dumps(event(i, sent=time.time())).encode(), props)
    return count / (time.perf_counter() - start)


def run_one(b: Broker, consumer: str, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    warm = int(rate * warmup)
    total = warm + int(rate * seconds)
    b.purge(QUEUE)
    with ExitStack() as stack:
        child: Twistd | None = None
        if consumer == "zqtwisted":
            child = stack.enter_context(twistd(["--queue", QUEUE], ZQ_BENCH_COUNT=str(total)))
            out, process = child.workdir / f"{QUEUE}.json", child.process
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zqbench-")))
            out = tmp / "result.json"
            command = [sys.executable, str(BENCH / "baselines.py"), consumer, "--queue", QUEUE, "--mode", "latency"]
            process = subprocess.Popen([*command, "--count", str(total), "--out", str(out)], env=child_env())
            stack.callback(stop, process)
        details = child.log_tail if child is not None else str
        deadline = time.monotonic() + 60
        while not b.consumers(QUEUE):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"latency {consumer}: the consumer did not start\n{details()}")
            time.sleep(0.05)
        achieved = publish_paced(b, total, rate)
        result = wait_for(out, process, 60, f"latency {consumer}", details)
    latencies = [x * 1000 for x in result["latencies"][warm:]]
    return {
        "events": len(latencies),
        "rate": round(achieved),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def run(
    rate: float = 1000, seconds: float = 5, warmup: float = 0.5, consumers: tuple[str, ...] = CONSUMERS
) -> dict[str, dict[str, Any]]:
    with broker() as b:
        results = {c: run_one(b, c, rate, seconds, warmup) for c in consumers}
        b.purge(QUEUE)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000, help="events per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of events left out first (default 0.5)")
    parser.add_argument("--only", choices=CONSUMERS, action="append", help="run only these consumers")
    args = parser.parse_args()
    results = run(args.rate, args.seconds, args.warmup, tuple(args.only or CONSUMERS))
    for consumer, r in results.items():
        print(
            f"{consumer:<10} {r['events']} events at {r['rate']}/s: p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
