"""Latency from publish to consume at a steady rate (default 1,000 events/s for 5 s).

The publisher (this process, a ``BlockingConnection`` like Zulip's
``queue_json_publish``, persistent messages, no confirms) stamps every event with
``"sent": time.time()`` just before publishing it, at a fixed schedule.  The
consumer notes ``time.time() - sent`` as each event reaches its consume function
(zqtwisted: ``BenchLatencyWorker.consume`` in a ``twistd -n zqworkers --queue
bench_latency`` child; the baselines: right after ``json.loads``).  The first
``--warmup`` seconds of events are left out.  Publisher and consumer are
different processes on the same machine, so the clocks agree.

With ``--repeat N`` each consumer is measured N times, the order of the consumers
rotated between rounds; each figure is the median over the rounds, and zqtwisted's p99
is also given as a ratio to the bare consumer's: per round, and their median.

    python bench/latency.py [--rate 1000] [--seconds 5] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    rate: float = 1000,
    seconds: float = 5,
    warmup: float = 0.5,
    consumers: tuple[str, ...] = CONSUMERS,
    repeat: int = 1,
    log: Any = None,
) -> dict[str, dict[str, Any]]:
    """``{consumer: {"p50_ms", "p99_ms" (medians over the rounds), "max_ms", "rounds": [...]}}``.

    With the bare consumer among ``consumers``, zqtwisted's entry also has ``p99_ratios``
    (its p99 over the bare consumer's, per round) and their median ``p99_ratio``.
    """
    rounds: dict[str, list[dict[str, Any]]] = {c: [] for c in consumers}
    with broker() as b:
        for r in range(repeat):
            shift = r % len(consumers)
            for consumer in consumers[shift:] + consumers[:shift]:
                one = run_one(b, consumer, rate, seconds, warmup)
                rounds[consumer].append(one)
                if log is not None:
                    log(f"  latency {consumer:<10} p50 {one['p50_ms']:6.2f} ms, p99 {one['p99_ms']:6.2f} ms")
        b.purge(QUEUE)
    results: dict[str, dict[str, Any]] = {}
    for consumer, runs in rounds.items():
        results[consumer] = {
            "events": runs[0]["events"],
            "rate": round(statistics.median(x["rate"] for x in runs)),
            "p50_ms": round(statistics.median(x["p50_ms"] for x in runs), 2),
            "p99_ms": round(statistics.median(x["p99_ms"] for x in runs), 2),
            "max_ms": max(x["max_ms"] for x in runs),
            "rounds": runs,
        }
    if "zqtwisted" in rounds and "twisted" in rounds:
        ratios = [
            round(z["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else 0.0
            for z, b in zip(rounds["zqtwisted"], rounds["twisted"], strict=True)
        ]
        results["zqtwisted"]["p99_ratios"] = ratios
        results["zqtwisted"]["p99_ratio"] = statistics.median(ratios)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000, help="events per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds of events left out first (default 0.5)")
    parser.add_argument("--only", choices=CONSUMERS, action="append", help="run only these consumers")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, the order rotated; medians (default 1)")
    args = parser.parse_args()
    results = run(args.rate, args.seconds, args.warmup, tuple(args.only or CONSUMERS), args.repeat)
    for consumer, r in results.items():
        print(
            f"{consumer:<10} {r['events']} events at {r['rate']}/s: p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms"
        )
        if "p99_ratio" in r:
            print(f"{'':<10} p99 {r['p99_ratio']:.2f}x the bare consumer's (rounds: {r['p99_ratios']})")


if __name__ == "__main__":
    main()
