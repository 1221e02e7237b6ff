"""Noop throughput (events/s): zqtwisted against a bare pika Twisted consumer and a Zulip-style one.

For each variant (single events on ``bench_noop``, batches of 100 on
``bench_noop_batch``) and each consumer, the queue is purged and filled with
``--count`` persistent events *before* the consumer starts; the consumer then
drains it.  The clock runs inside the consumer, from its first event to its last,
so start-up (imports, connecting) is not counted.  Prefetch is 100 everywhere.

* zqtwisted: a real ``twistd -n zqworkers --queue bench_noop`` child (the whole
  production service: runner, acks, stats files, Prometheus metrics, the /metrics
  HTTP endpoint, the reactor-lag probe), running a worker that counts events, as
  Zulip's ``noop`` does (bench/bench_workers.py);
* twisted: bench/baselines.py ``twisted`` (bare ``TwistedProtocolConnection``);
* blocking: bench/baselines.py ``blocking`` (Zulip's ``BlockingConnection`` loop).

With ``--repeat N`` every figure is the median of N runs; the order of the
consumers rotates between runs.  zqtwisted's figures are also given as ratios to the
bare consumer's: the ratio of each round (the two measured minutes apart at most, on
the same broker and the same machine load), and their median, which moves much less
between runs than the figures themselves on a shared machine.

    python bench/noop.py [--count 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import BENCH, Broker, broker, child_env, memory, stop, twistd, wait_for

CONSUMERS = ("zqtwisted", "twisted", "blocking")
LABELS = {"zqtwisted": "zqtwisted", "twisted": "bare pika (Twisted)", "blocking": "Zulip-style (blocking)"}
VARIANTS = {"single": ("bench_noop", 1), "batch": ("bench_noop_batch", 100)}


def run_one(b: Broker, consumer: str, variant: str, count: int) -> dict[str, Any]:
    """Fill the variant's queue with ``count`` events, then time ``consumer`` draining it."""
    queue, batch = VARIANTS[variant]
    b.fill(queue, count)
    timeout = 60 + count / 500
    what = f"noop {variant} {consumer}"
    if consumer == "zqtwisted":
        with twistd(["--queue", queue], ZQ_BENCH_COUNT=str(count)) as child:
            result = wait_for(child.workdir / f"{queue}.json", child.process, timeout, what, child.log_tail)
            result.update(memory(child.pid))
    else:
        with tempfile.TemporaryDirectory(prefix="zqbench-") as tmp:
            out = Path(tmp) / "result.json"
            command = [sys.executable, str(BENCH / "baselines.py"), consumer, "--queue", queue]
            args = ["--count", str(count), "--batch", str(batch), "--out", str(out)]
            process = subprocess.Popen([*command, *args], env=child_env())
            try:
                result = wait_for(out, process, timeout, what)
                if process.wait(30) != 0:
                    raise RuntimeError(f"{what}: the consumer exited with {process.returncode}")
            finally:
                stop(process)
    result["rate"] = result["count"] / result["seconds"]
    return result


def run(
    count: int, repeat: int = 1, consumers: tuple[str, ...] = CONSUMERS, log: Any = print
) -> dict[str, dict[str, Any]]:
    """``{variant: {consumer: {"rate": median events/s, "rates": [...], ...}}}``.

    With the bare consumer among ``consumers``, zqtwisted's entry also has, per round,
    ``rate_ratios`` (its events/s over the bare consumer's) and ``cpu_ratios`` (its CPU
    per event over the bare consumer's), and their medians ``rate_ratio`` and ``cpu_ratio``.
    """
    results: dict[str, dict[str, Any]] = {v: {c: {"rates": [], "cpus": []} for c in consumers} for v in VARIANTS}
    with broker() as b:
        for r in range(repeat):
            shift = r % len(consumers)
            order = consumers[shift:] + consumers[:shift]
            for variant in VARIANTS:
                for consumer in order:
                    one = run_one(b, consumer, variant, count)
                    entry = results[variant][consumer]
                    entry["rates"].append(round(one["rate"]))
                    entry["cpus"].append(round(one["cpu"] / one["count"] * 1e6, 1))
                    if "peak_mb" in one:
                        entry["peak_mb"] = max(entry.get("peak_mb", 0), one["peak_mb"])
                    cpu = one["cpu"] / one["count"] * 1e6
                    rate = f"{one['rate']:>9,.0f} events/s"
                    log(f"  noop {variant:<6} {LABELS[consumer]:<24} {rate}, {cpu:5.1f} us CPU/event")
        for variant in VARIANTS:
            b.purge(VARIANTS[variant][0])
    for per_consumer in results.values():
        for entry in per_consumer.values():
            entry["rate"] = round(statistics.median(entry["rates"]))
            entry["cpu_us"] = statistics.median(entry["cpus"])
            entry["events"] = count
        if "zqtwisted" in per_consumer and "twisted" in per_consumer:
            zq, bare = per_consumer["zqtwisted"], per_consumer["twisted"]
            zq["rate_ratios"] = [round(z / b, 3) for z, b in zip(zq["rates"], bare["rates"], strict=True)]
            zq["cpu_ratios"] = [round(z / b, 3) for z, b in zip(zq["cpus"], bare["cpus"], strict=True)]
            zq["rate_ratio"] = statistics.median(zq["rate_ratios"])
            zq["cpu_ratio"] = statistics.median(zq["cpu_ratios"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="events per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure, median taken (default 1)")
    parser.add_argument("--only", choices=CONSUMERS, action="append", help="run only these consumers")
    args = parser.parse_args()
    results = run(args.count, args.repeat, tuple(args.only or CONSUMERS))
    for variant, per_consumer in results.items():
        for consumer, entry in per_consumer.items():
            print(
                f"{variant:<6} {LABELS[consumer]:<24} {entry['rate']:>9,} events/s, {entry['cpu_us']:5.1f} us CPU/event"
                f"  (runs: {entry['rates']})"
            )
            if "rate_ratio" in entry:
                print(
                    f"{variant:<6} {'zqtwisted / bare':<24} {entry['rate_ratio']:>8.2f}x events/s, "
                    f"{entry['cpu_ratio']:5.2f}x CPU/event  (rounds: {entry['rate_ratios']}, {entry['cpu_ratios']})"
                )


if __name__ == "__main__":
    main()
