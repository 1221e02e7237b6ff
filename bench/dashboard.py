"""The dashboard's cost and responsiveness: drain noop events with the page open, closed, and probed.

Each round fills ``bench_dashboard`` with ``--count`` (20,000) persistent events, starts a real
``twistd -n zqworkers --queue bench_dashboard`` (``bench_noop``'s worker: Zulip's noop and the
probe of bench/bench_workers.py, on a queue of its own) with its HTTP endpoint, and lets it
drain the queue; the consumer times the drain from its first event to its last.  Its first
event is held (``$ZQ_BENCH_GO``) until the parent says go, so that the page is loaded (or
the prober under way) before the drain starts.  Three kinds of round, alternated:

* page closed: nobody asks the service anything over HTTP;
* page open: headless Chromium shows the dashboard, which polls ``/api/queues`` every 2 s
  as it does for a person (its own request timings are read from the page);
* API probed: a prober asks ``/api/queues?since=...`` every ``--probe-interval`` s (20 ms:
  as many requests as a hundred open pages) and times each answer.

It prints each round's drain rate and the service's CPU time per event (less noisy than
events/s on a shared machine), the medians and how they compare with the page closed, and
the API's answer times (p50 / p99 / max) measured while the service drained.

    python bench/dashboard.py [--count 20000] [--rounds 5] [--probe-interval 0.02]

``--screenshots DIR`` instead runs a demo load for ``--minutes`` minutes on demo queues
(bench/dashboard_workers.py) and saves the dashboard's
pictures in DIR: ``dashboard-overview.png``, ``dashboard-dead-letters.png`` (1280x800) and
``dashboard-phone.png`` (390x844).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from benchlib import REPO, Broker, Twistd, broker, child_env, percentile, stop, wait_for

if str(REPO) not in sys.path:  # the browser helpers live with the tests (tests/integration/browser.py)
    sys.path.insert(0, str(REPO))

from tests.integration.browser import browser_missing, chromium, console_errors

QUEUE = "bench_dashboard"
DEMO_TOKEN = "dashboard-demo-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def service(queues: Sequence[str], port: int, modules: Sequence[str], **env: str) -> Iterator[Twistd]:
    """``twistd -n zqworkers --queue ...`` with its HTTP endpoint on ``port`` and a dashboard token."""
    workdir = Path(tempfile.mkdtemp(prefix="zqbench-dashboard-"))
    config = workdir / "zqtwisted.toml"
    config.write_text(
        "[workers]\n"
        f"consumer_modules = {json.dumps(list(modules))}\n"
        f'http = "tcp:{port}:interface=127.0.0.1"\n'
        f'http_token = "{DEMO_TOKEN}"\n'
        "drain_timeout = 5\n"
        "[paths]\n"
        f'stats_dir = "{workdir}"\nerror_dir = "{workdir}"\n'
        f'test_queue_file = "{workdir}/test_queue.jsonl"\n'
    )
    log_path = workdir / "twistd.log"
    log = open(log_path, "wb")
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
    args = [arg for queue in queues for arg in ("--queue", queue)]
    process = subprocess.Popen(
        [*command, "zqworkers", *args],
        env=child_env(ZQ_CONFIG=str(config), ZQ_BENCH_OUT=str(workdir), **env),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield Twistd(process, workdir, log_path)
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_http(child: Twistd, port: int, timeout: float = 60) -> None:
    """Wait until the service answers /health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"the service did not answer on port {port} within {timeout:.0f}s:\n{child.log_tail()}")


class Prober(threading.Thread):
    """Asks ``/api/queues?since=...`` every ``interval`` s, as the page does, timing each answer."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        since: float | None = None
        while not self._halt.is_set():
            path = "/api/queues" if since is None else f"/api/queues?since={since}"
            started = time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    raise OSError(f"status {response.status}")
                self.samples.append((time.time(), elapsed))
                times = json.loads(body)["history"]["time"]
                since = times[-1] if times else since
            except (OSError, http.client.HTTPException, ValueError):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self._halt.wait(self.interval)

    def finish(self) -> None:
        self._halt.set()
        self.join(10)


PAGE_TIMINGS = """
return performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/api/queues'))
    .map(e => [(performance.timeOrigin + e.startTime) / 1000, e.duration / 1000]);
"""


def open_page(page: Any, port: int) -> None:
    """Load the dashboard and wait until it shows the service connected."""
    page.get(f"http://127.0.0.1:{port}/")
    deadline = time.monotonic() + 30
    while page.execute_script("return document.getElementById('connection').textContent") != "RabbitMQ connected":
        if time.monotonic() > deadline:
            raise RuntimeError("the page did not show the service as connected within 30 s")
        time.sleep(0.05)


def drain_round(b: Broker, count: int, mode: str, page: Any, probe_interval: float) -> dict[str, Any]:
    """One round: fill, start the service, open the page or start the prober (by ``mode``), go, time the drain."""
    b.fill(QUEUE, count)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="zqbench-go-") as tmp:
        go = Path(tmp) / "go"
        with service([QUEUE], port, ["dashboard_workers"], ZQ_BENCH_COUNT=str(count), ZQ_BENCH_GO=str(go)) as child:
            wait_http(child, port)
            prober = None
            if mode == "page":
                open_page(page, port)
            if mode == "probed":
                prober = Prober(port, probe_interval)
                prober.start()
            time.sleep(1.0)  # the page settled, the prober under way; the same pause in every mode
            started = time.time()
            go.write_text("go")
            result = wait_for(child.workdir / f"{QUEUE}.json", child.process, 120, "dashboard drain", child.log_tail)
            ended = time.time()
            result["latencies"] = []
            if prober is not None:
                prober.finish()
                result["latencies"] = [s for when, s in prober.samples if started <= when <= ended]
            if mode == "page":
                timings = page.execute_script(PAGE_TIMINGS)
                result["latencies"] = [s for when, s in timings if started <= when <= ended]
                result["console_errors"] = console_errors(page)
                page.get("about:blank")
    result["rate"] = result["count"] / result["seconds"]
    return result


def describe_latencies(latencies: Sequence[float]) -> str:
    if not latencies:
        return "no API answer during the drain"
    lat = sorted(latencies)
    p50, p99 = percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000
    return f"/api/queues p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms over {len(lat)} answers"


def repeat_if_cut(round_: Callable[[], dict[str, Any]], tries: int = 3) -> dict[str, Any]:
    """A round, run again (up to ``tries`` times) when the broker connection was closed under it."""
    for attempt in range(1, tries + 1):
        try:
            return round_()
        except pika.exceptions.AMQPError as e:
            if attempt == tries:
                raise
            print(f"  (the connection to RabbitMQ was lost: {e}; the round runs again)", flush=True)
    raise AssertionError("unreachable")


MODES = ("closed", "page", "probed")
LABELS = {
    "closed": "page closed",
    "page": "page open (Chromium)",
    "probed": "API probed",
}


def run(count: int, rounds: int, probe_interval: float) -> None:
    missing = browser_missing()
    modes = MODES if missing is None else ("closed", "probed")
    if missing is not None:
        print(f"no browser ({missing}): only the prober's rounds run")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    latencies: dict[str, list[float]] = {mode: [] for mode in modes}
    with ExitStack() as stack:
        page = stack.enter_context(chromium()) if missing is None else None
        b = stack.enter_context(broker())
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in order:
                one = repeat_if_cut(partial(drain_round, b, count, mode, page, probe_interval))
                rates[mode].append(one["rate"])
                cpu = one["cpu"] / one["count"] * 1e6
                cpus[mode].append(cpu)
                latencies[mode].extend(one["latencies"])
                note = describe_latencies(one["latencies"]) if mode != "closed" else ""
                if one.get("console_errors"):
                    note += f"; console errors: {one['console_errors']}"
                figures = f"{one['rate']:>9,.0f} events/s, {cpu:5.1f} us CPU/event"
                print(f"round {r + 1} {LABELS[mode]:<21} {figures}  {note}", flush=True)
        b.purge(QUEUE)
    closed = statistics.median(rates["closed"])
    closed_cpu = statistics.median(cpus["closed"])
    print()
    print(f"drain of {count:,} noop events, median of {rounds} rounds each (rounds alternated):")
    for mode in modes:
        median = statistics.median(rates[mode])
        cpu = statistics.median(cpus[mode])
        versus = "" if mode == "closed" else f" ({(median / closed - 1) * 100:+.1f} %)"
        cpu_versus = "" if mode == "closed" else f" ({(cpu / closed_cpu - 1) * 100:+.1f} %)"
        print(
            f"  {LABELS[mode]:<21} {median:>9,.0f} events/s{versus:<10} {cpu:5.1f} us CPU/event{cpu_versus:<10}"
            f"  (rounds: {[round(x) for x in rates[mode]]})"
        )
    for mode in modes[1:]:
        print(f"  while draining, {LABELS[mode]}: {describe_latencies(latencies[mode])}")
    print(f"  (the prober asks /api/queues?since=... every {probe_interval * 1000:g} ms; the page every 2 s)")


# -- the demo and its screenshots -------------------------------------------------

DEMO_QUEUES = ("thumbnails", "link_previews", "audit_log", "search_index")
BURST_PERIOD = 150  # seconds: thumbnails get a 25 s burst at the start of each period


class DemoLoad(threading.Thread):
    """Publishes a varying load (waves on audit_log, bursts on thumbnails, failures on link_previews) until stopped.

    It has a connection of its own; one closed under it (a test elsewhere closing every
    connection) is opened again.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.started = time.monotonic()
        self._halt = threading.Event()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> None:
        n = 0
        with broker() as b:
            while not self._halt.is_set():
                try:
                    n = demo_tick(b.channel, self.elapsed(), n)
                except pika.exceptions.AMQPError as e:
                    print(f"demo: the connection was lost ({e}); reconnecting", flush=True)
                    b.close()
                self._halt.wait(0.1)

    def finish(self) -> None:
        self._halt.set()
        self.join(30)


def demo_tick(channel: Any, t: float, n: int) -> int:
    """A tenth of a second of the demo load at ``t`` s; returns the next event number."""
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    hosts = ("example.com", "zulip.com", "github.com", "docs.python.org", "twisted.org")
    wave = 1 + math.sin(t / 45)
    for _ in range(int(8 + 12 * wave)):
        channel.basic_publish("", "audit_log", json.dumps({"id": n, "user_profile_id": 7 + n % 40}).encode(), props)
        n += 1
    for _ in range(int(2 + 3 * wave)):
        channel.basic_publish("", "search_index", json.dumps({"id": n, "message_id": 100_000 + n}).encode(), props)
        n += 1
    burst = t % BURST_PERIOD < 25
    for _ in range(12 if burst else 1):
        event = {"message_id": 100_000 + n, "path": f"user_uploads/2/{n:x}/screenshot.png", "size": 640}
        channel.basic_publish("", "thumbnails", json.dumps(event).encode(), props)
        n += 1
    for _ in range(2 if random.random() < 0.5 else 1):
        dice = random.random()
        host = random.choice(hosts)
        if dice < 0.004:
            host = f"intranet-{n % 7}.invalid"
        elif dice < 0.006:
            host = "flaky.example"
        elif dice < 0.007:
            host = "stuck.example"
        event = {
            "message_id": 100_000 + n,
            "url": f"https://{host}/post/{n}",
            "message_realm_id": 2,
            "message_content": f"Have a look at https://{host}/post/{n} before the meeting",
            "api_key": "9OqLZcXrOE2bJlLuRTaKeJ5Ho6G8Rcxq",
        }
        channel.basic_publish("", "link_previews", json.dumps(event).encode(), props)
        n += 1
    return n


def empty_demo_queues() -> None:
    with broker() as b:
        for queue in DEMO_QUEUES:
            b.purge(queue)
            b.purge(f"{queue}.failed")


def screenshots(out: Path, minutes: float) -> None:
    missing = browser_missing()
    if missing is not None:
        raise SystemExit(f"screenshots need Chromium: {missing}")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    empty_demo_queues()
    with service(DEMO_QUEUES, port, ["dashboard_workers"]) as child:
        wait_http(child, port)
        load = DemoLoad()
        load.start()
        print(f"demo load for {minutes:g} min on http://127.0.0.1:{port}/ ...", flush=True)
        # The pictures are taken while the load goes on, a little after a burst on thumbnails.
        while load.elapsed() < minutes * 60 or not 30 <= load.elapsed() % BURST_PERIOD < 40:
            child.check_alive()
            time.sleep(0.5)
        try:
            errors = take_screenshots(f"http://127.0.0.1:{port}/", out)
        finally:
            load.finish()
    empty_demo_queues()
    print(f"saved {', '.join(p.name for p in sorted(out.glob('dashboard-*.png')))} in {out}")
    if errors:
        print(f"console errors: {errors}")


def take_screenshots(url: str, out: Path) -> list[str]:
    """The overview and the dead letters at 1280x800, the overview on a phone; the console's errors."""
    with chromium(390, 844, mobile=True) as phone:
        phone.get(url + "#queue=thumbnails")
        time.sleep(5)
        phone.save_screenshot(str(out / "dashboard-phone.png"))
        errors: list[str] = console_errors(phone)
    with chromium(1280, 800) as page:
        page.get(url + "#queue=thumbnails")
        time.sleep(5)
        page.save_screenshot(str(out / "dashboard-overview.png"))
        page.get(url + "#queue=link_previews&dead")
        page.execute_script(f"sessionStorage.setItem('zqtwisted-dashboard-token', '{DEMO_TOKEN}');")
        page.refresh()
        time.sleep(5)
        page.execute_script("document.querySelectorAll('.letter .btn-quiet')[1].click();")
        page.execute_script("document.getElementById('dead').scrollIntoView({block: 'start'});")
        time.sleep(1)
        page.save_screenshot(str(out / "dashboard-dead-letters.png"))
        errors += console_errors(page)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="events per drain (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind, alternated (default 5)")
    parser.add_argument("--probe-interval", type=float, default=0.02, help="seconds between API probes (0.02)")
    parser.add_argument("--screenshots", type=Path, help="run the demo and save the dashboard's pictures here")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the demo load (default 5)")
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.screenshots, args.minutes)
    else:
        run(args.count, args.rounds, args.probe_interval)


if __name__ == "__main__":
    main()
