"""Noop throughput (events/s) with 1 and 2 worker processes consuming one queue.

For each number of processes the queue ``bench_noop`` is purged and filled with
``--count`` persistent events; then that many ``twistd -n zqworkers --queue bench_noop``
children start, each a competing consumer (prefetch 100).  Every child holds its first
event until all of them are attached (``$ZQ_BENCH_GO``, bench/bench_workers.py), so that
they start together; each notes the wall-clock time of its first and last event and its
count.  The figure is ``count / (last event of any child - first event of any child)``;
the counts per process show how the work was shared.

    python bench/processes.py [--count 20000] [--processes 1 --processes 2]
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchlib import Broker, Twistd, broker, twistd

QUEUE = "bench_noop"
PROCESSES = (1, 2)


def _results(children: list[Twistd]) -> list[dict[str, Any]]:
    found = []
    for child in children:
        path = child.workdir / f"{QUEUE}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    return found


def _wait_consumers(b: Broker, children: list[Twistd], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while b.consumers(QUEUE) < len(children):
        for child in children:
            child.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(children)} processes did not all consume {QUEUE} within {timeout:.0f}s")
        time.sleep(0.05)


def run_one(b: Broker, processes: int, count: int) -> dict[str, Any]:
    """Fill the queue with ``count`` events, then time ``processes`` children draining it together."""
    b.fill(QUEUE, count)
    with ExitStack() as stack:
        gate = Path(stack.enter_context(_tempdir())) / "go"
        env = {"ZQ_BENCH_SHARED": "1", "ZQ_BENCH_GO": str(gate)}
        children = [stack.enter_context(twistd(["--queue", QUEUE], **env)) for _ in range(processes)]
        _wait_consumers(b, children, 60)
        time.sleep(0.5)  # let every consumer receive its prefetch
        gate.touch()
        deadline = time.monotonic() + 60 + count / 500
        while sum(r["count"] for r in _results(children)) < count:
            for child in children:
                child.check_alive()
            if time.monotonic() > deadline:
                tails = "\n".join(child.log_tail(10) for child in children)
                raise RuntimeError(f"processes {processes}: {_results(children)} of {count} within the time\n{tails}")
            time.sleep(0.05)
        results = _results(children)
    first = min(r["first"] for r in results)
    last = max(r["last"] for r in results)
    counts = sorted((r["count"] for r in results), reverse=True)
    return {
        "processes": processes,
        "events": count,
        "rate": round(count / (last - first)),
        "seconds": round(last - first, 3),
        "counts": counts,
        "cpu_us": round(sum(r["cpu"] for r in results) / count * 1e6, 1),
    }


class _tempdir:
    """A temporary directory (a context manager returning its path)."""

    def __enter__(self) -> str:
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="zqbench-go-")
        return self._dir.name

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()


def run(count: int, processes: tuple[int, ...] = PROCESSES, log: Any = print) -> dict[str, dict[str, Any]]:
    """``{"1": {...}, "2": {...}}``: rate, seconds, events per process, CPU per event, in one run."""
    results: dict[str, dict[str, Any]] = {}
    with broker() as b:
        for n in processes:
            one = run_one(b, n, count)
            results[str(n)] = one
            shares = " + ".join(f"{c:,}" for c in one["counts"])
            rate = f"{one['rate']:>9,} events/s"
            log(f"  noop, {n} process(es) on one queue: {rate} ({shares}), {one['cpu_us']} us CPU/event")
        b.purge(QUEUE)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="events per run (default 20000)")
    parser.add_argument("--processes", type=int, action="append", help="processes per run (default: 1, then 2)")
    args = parser.parse_args()
    run(args.count, tuple(args.processes or PROCESSES))


if __name__ == "__main__":
    main()
