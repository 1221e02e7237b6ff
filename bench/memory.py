"""Memory of ``twistd -n zqworkers --all``: idle, and at its peak during a noop run.

One child consumes every registered queue (the shipped ones, the test queues and
the bench queues) with the metrics endpoint on a free port.  Figures come from
``/proc/PID/status``: ``VmRSS`` (resident now) and ``VmHWM`` (the peak resident
size since start).  "idle" is read ``--idle`` seconds after every queue has a
consumer; then ``--count`` events are published to ``bench_noop`` while it
consumes, and the peak is read once the last one is consumed.

One queue: ``VmRSS`` of ``twistd -n zqworkers --queue bench_noop`` and of the bare pika
consumer (bench/baselines.py ``twisted``), each read ``--idle`` seconds after it is
attached to the (empty) queue.

    python bench/memory.py [--count 20000] [--idle 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pika
from benchlib import BENCH, broker, child_env, event, memory, stop, twistd, wait_consuming, wait_for

QUEUE = "bench_noop"


def run(count: int = 20_000, idle: float = 2.0) -> dict[str, Any]:
    with broker() as b:
        b.purge(QUEUE)
        with twistd(["--all"], ZQ_BENCH_COUNT=str(count)) as child:
            wait_consuming(b, [QUEUE], child)
            queues = _queues(child.log_path.read_text(errors="replace"))
            wait_consuming(b, queues, child)
            time.sleep(idle)
            at_idle = memory(child.pid)
            props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            channel = b.channel
            for i in range(count):
                channel.basic_publish("", QUEUE, json.dumps(event(i)).encode(), props)
            wait_for(
                child.workdir / f"{QUEUE}.json", child.process, 60 + count / 500, "memory noop run", child.log_tail
            )
            after = memory(child.pid)
            child.check_alive()
        b.purge(QUEUE)
    return {
        "queues": len(queues),
        "idle_rss_mb": at_idle["rss_mb"],
        "idle_peak_mb": at_idle["peak_mb"],
        "noop_rss_mb": after["rss_mb"],
        "noop_peak_mb": after["peak_mb"],
        "events": count,
        "one_queue": one_queue(idle),
    }


def one_queue(idle: float = 2.0) -> dict[str, float]:
    """Idle ``VmRSS`` (MB) of ``twistd --queue bench_noop`` and of the bare consumer on the same queue."""
    with broker() as b:
        b.purge(QUEUE)
        with twistd(["--queue", QUEUE]) as child:
            wait_consuming(b, [QUEUE], child)
            time.sleep(idle)
            zq = memory(child.pid)["rss_mb"]
            child.check_alive()
        with tempfile.TemporaryDirectory(prefix="zqbench-") as tmp:
            command = [sys.executable, str(BENCH / "baselines.py"), "twisted", "--queue", QUEUE]
            out = str(Path(tmp) / "result.json")
            args = [*command, "--count", str(10**9), "--out", out]
            # Stopped while connected: its pika Deferreds fail as the reactor stops, which it would print.
            process = subprocess.Popen(args, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 60
                while not b.consumers(QUEUE):
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("memory: the bare consumer did not start")
                    time.sleep(0.05)
                time.sleep(idle)
                bare = memory(process.pid)["rss_mb"]
            finally:
                stop(process)
    return {"zqtwisted_rss_mb": zq, "bare_rss_mb": bare, "over_mb": round(zq - bare, 1)}


def _queues(log: str) -> list[str]:
    """The queues twistd said it starts (``Starting workers for a, b, c``)."""
    found = re.search(r"Starting workers for (.+)", log)
    return [q.strip() for q in found.group(1).split(",")] if found else [QUEUE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="noop events (default 20000)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds to wait before the idle reading")
    args = parser.parse_args()
    r = run(args.count, args.idle)
    print(
        f"--all ({r['queues']} queues): idle {r['idle_rss_mb']} MB RSS (peak {r['idle_peak_mb']} MB); "
        f"after {r['events']} noop events {r['noop_rss_mb']} MB RSS, peak {r['noop_peak_mb']} MB"
    )
    one = r["one_queue"]
    print(
        f"one queue, idle: zqtwisted {one['zqtwisted_rss_mb']} MB RSS, bare pika consumer {one['bare_rss_mb']} MB "
        f"({one['over_mb']:+} MB)"
    )


if __name__ == "__main__":
    main()
