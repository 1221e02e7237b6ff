"""Three cases of issue 15's adversarial run, measured against a real ``twistd zqworkers`` child.

    python bench/adversarial.py huge [--sizes 20,25,30,35,40,45,50,50]
    python bench/adversarial.py alarm [--events 300] [--alarm 8]
    python bench/adversarial.py credentials

- ``huge``: bodies of 20-50 MB to a queue whose limit is 1 MiB, among small events: published /
  processed / dead-lettered / lost, the size of each dead letter, the child's ``VmRSS`` before and
  after (and its peak, ``VmHWM``).
- ``alarm``: events that succeed, fail for good or fail for now (each after 0.5 s) while RabbitMQ
  holds a memory alarm; ``/ready`` during it; ``zqctl publish`` during it; then SIGTERM during a
  second alarm: how long the stop takes (``drain_timeout`` 5 s); and, once clear, published /
  processed / dead-lettered / lost.  The alarm goes to node 3 of the local test cluster
  (``tools/rabbitmq-cluster start``), never to the machine's default node.
- ``credentials``: a wrong password for the service (its log over 5 s) and for ``zqctl``.

The children load ``tests.integration.workers`` (queue ``zq_itest_trouble``) from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika

REPO = Path(__file__).resolve().parents[1]
QUEUE = "zq_itest_trouble"
FAILED = QUEUE + ".failed"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CLUSTER_NODE = 3
ZQCTL = "import sys; sys.argv[0] = 'zqctl'; from zqtwisted.cli.zqctl import main; main()"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("ZQ_BROKER_URL", "ZQ_BROKER_URLS", "ZQ_CONFIG")}
    return {**base, "PYTHONPATH": str(REPO), **extra}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Child:
    def __init__(self, url: str, extra: str = "", drain: float = 10.0) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="zqadversarial-"))
        self.port = free_port()
        self.out = self.tmp / "processed.txt"
        config = self.tmp / "zq.toml"
        config.write_text(
            f'[broker]\nurl = "{url}"\npublish_timeout = 2\nreconnect_initial_delay = 0.2\n{extra}'
            f'[workers]\nconsumer_modules = ["tests.integration.workers"]\ndrain_timeout = {drain}\n'
            f'http = "tcp:{self.port}:interface=127.0.0.1"\n'
            f"[queues.{QUEUE}]\nretry_base = 0.1\nretry_cap = 0.2\n"
            f'[paths]\nstats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\ntest_queue_file = "{self.tmp}/t"\n'
        )
        self.log_path = self.tmp / "twistd.log"
        self._log = open(self.log_path, "wb")  # closed in close()
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        self.process = subprocess.Popen(
            [*command, "zqworkers", "--queue", QUEUE],
            env=env(ZQ_CONFIG=str(config), ZQ_ITEST_OUT=str(self.out)),
            cwd=self.tmp,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60) -> None:
        wait(lambda: self.get("/ready")[0] == 200, timeout, "the child ready")

    def processed(self) -> list[str]:
        return self.out.read_text().split() if self.out.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> float:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def child(url: str, extra: str = "", drain: float = 10.0) -> Iterator[Child]:
    c = Child(url, extra, drain)
    try:
        yield c
    finally:
        c.close()


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def channel(url: str) -> Any:
    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def reset(ch: Any) -> None:
    for name in (QUEUE, FAILED):
        ch.queue_declare(name, durable=True)
        ch.queue_purge(name)


def take(ch: Any, name: str) -> list[tuple[bytes, dict[str, Any]]]:
    taken: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        method, properties, body = ch.basic_get(name, auto_ack=True)
        if method is None:
            return taken
        taken.append((body, dict(properties.headers or {})))


def huge(sizes: list[int]) -> None:
    ch = channel(DEFAULT_URL)
    reset(ch)
    with child(DEFAULT_URL) as c:
        c.wait_ready()
        for i in range(200):
            ch.basic_publish("", QUEUE, json.dumps({"id": i}).encode())
        wait(lambda: len(c.processed()) == 200, 60, "warm-up")
        time.sleep(1)
        base = status(c.process.pid, "VmRSS")
        started = time.monotonic()
        for n, size in enumerate(sizes):
            body = b'{"id": "huge-%d", "pad": "' % n + b"x" * (size * 1024 * 1024) + b'"}'
            ch.basic_publish("", QUEUE, body)
            ch.basic_publish("", QUEUE, json.dumps({"id": 1000 + n}).encode())
            del body
        letters: list[tuple[bytes, dict[str, Any]]] = []

        def done() -> bool:
            letters.extend(take(ch, FAILED))
            return len(letters) >= len(sizes) and len(c.processed()) == 200 + len(sizes)

        wait(done, 300, "the huge bodies dead-lettered")
        elapsed = time.monotonic() - started
        time.sleep(1)
        after, peak = status(c.process.pid, "VmRSS"), status(c.process.pid, "VmHWM")
        left = ch.queue_declare(QUEUE, durable=True).method.message_count
        total = sum(sizes)
        published = len(sizes) + len(sizes)
        processed = len(c.processed()) - 200
        print(f"huge: {len(sizes)} bodies of {min(sizes)}-{max(sizes)} MB ({total} MB) among {len(sizes)} small events")
        print(f"  published {published} / processed {processed} / dead-lettered {len(letters)} / lost {left}")
        print(
            f"  dead letters: {sorted({len(b) for b, _ in letters})} bytes each, x-zq-original-size present: "
            f"{all('x-zq-original-size' in h for _, h in letters)}"
        )
        print(
            f"  RSS {base:.1f} MB before, {after:.1f} MB after (+{after - base:.1f}), "
            f"peak {peak:.1f} MB; {elapsed:.1f}s"
        )


def ctl(*args: str) -> str:
    tool = REPO / "tools" / "rabbitmq-cluster"
    done = subprocess.run([sys.executable, str(tool), "ctl", str(CLUSTER_NODE), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return done.stdout.strip()


@contextmanager
def memory_alarm() -> Iterator[None]:
    value = ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").splitlines()[-1]
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", value)
    restore = ["absolute", absolute.group(1)] if absolute else [value]
    ctl("set_vm_memory_high_watermark", "0")
    try:
        yield
    finally:
        ctl("set_vm_memory_high_watermark", *restore)


def alarm(count: int, seconds: float) -> None:
    url = json.loads(
        subprocess.run([sys.executable, str(REPO / "tools" / "rabbitmq-cluster"), "layout"], capture_output=True).stdout
    )["nodes"][CLUSTER_NODE - 1]["url"]
    faults = ("permanent", "retry", None)
    events: list[dict[str, Any]] = [
        {"id": i, "delay": 0.5, **({"fault": f} if (f := faults[i % 3]) else {})} for i in range(count)
    ]
    failing = {int(e["id"]) for e in events if "fault" in e}
    ch = channel(url)
    reset(ch)
    with child(url, drain=5.0) as c:
        c.wait_ready()
        for e in events:
            ch.basic_publish("", QUEUE, json.dumps(e).encode())
        ch.connection.close()
        with memory_alarm():
            wait(lambda: c.get("/ready")[0] == 503, 30, "/ready 503")
            ready = c.get("/ready")[1].strip()
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", ZQCTL, "--broker", url, "--timeout", "3", "publish", QUEUE, '{"id": -1}'],
                env=env(),
                capture_output=True,
                text=True,
            )
            zqctl_seconds = time.monotonic() - started
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        print(
            f"alarm: {count} events (1/3 succeed, 1/3 fail for good, 1/3 fail for now; 0.5 s each); {seconds:g}s alarm"
        )
        print(f"  /ready during it: {ready}")
        print(f"  zqctl publish during it: exit {done.returncode} after {zqctl_seconds:.1f}s: {done.stderr.strip()}")
        ch = channel(url)
        dead: set[int] = set()

        def settled() -> bool:
            dead.update(json.loads(b)["id"] for b, _ in take(ch, FAILED))
            return dead >= failing and len(set(c.processed())) >= count - len(failing)

        wait(settled, 300, "every event processed or dead-lettered")
        processed = {int(i) for i in c.processed()}
        lost = {e["id"] for e in events} - processed - dead
        print(
            f"  after it: published {count} / processed {len(processed)} / dead-lettered {len(dead)} / lost {len(lost)}"
        )
        for e in events:
            ch.basic_publish("", QUEUE, json.dumps({**e, "id": e["id"] + 10_000}).encode())
        ch.connection.close()
        time.sleep(1)
        with memory_alarm():
            wait(lambda: c.get("/ready")[0] == 503, 30, "/ready 503")
            stop_seconds = c.stop()
        code = c.process.returncode
        ch = channel(url)
        time.sleep(1)
        back = {json.loads(b)["id"] for b, _ in take(ch, QUEUE)} | {json.loads(b)["id"] for b, _ in take(ch, FAILED)}
        second = {e["id"] + 10_000 for e in events}
        done_ids = {int(i) for i in c.processed()}
        print(
            f"  SIGTERM during a second alarm (drain_timeout 5 s): stopped in {stop_seconds:.1f}s, exit {code}; "
            f"of {count} more events: {len(second & done_ids)} processed, {len(second & back)} back in RabbitMQ, "
            f"lost {len(second - done_ids - back)}"
        )


def credentials() -> None:
    wrong = "amqp://guest:wr0ng@127.0.0.1:5672/%2F"
    with child(wrong, extra="reconnect_max_delay = 1.0\n") as c:
        time.sleep(5)
        log = c.log()
        refused = [line for line in log.splitlines() if "refused the credentials" in line]
        ready = c.get("/ready")
        print(
            f"credentials: service over 5 s: {len(refused)} refused tries logged, {log.count('Traceback')} tracebacks"
        )
        print(f"  line: {refused[0].split('] ', 1)[1] if refused else '-'}")
        print(f"  /ready: {ready[0]} {ready[1].strip()}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", ZQCTL, "--broker", wrong, "publish", "noop", "{}"],
        env=env(),
        capture_output=True,
        text=True,
    )
    lines = done.stderr.strip().splitlines()
    print(
        f"  zqctl publish: exit {done.returncode} after {time.monotonic() - started:.1f}s, {len(lines)} line(s): "
        f"{lines[0] if lines else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="case", required=True)
    h = sub.add_parser("huge")
    h.add_argument("--sizes", default="20,25,30,35,40,45,50,50", help="MB per body, comma-separated")
    a = sub.add_parser("alarm")
    a.add_argument("--events", type=int, default=300)
    a.add_argument("--alarm", type=float, default=8.0, help="seconds the first alarm lasts")
    sub.add_parser("credentials")
    args = parser.parse_args()
    if args.case == "huge":
        huge([int(s) for s in args.sizes.split(",")])
    elif args.case == "alarm":
        alarm(args.events, args.alarm)
    else:
        credentials()


if __name__ == "__main__":
    main()
