"""Every benchmark in one run: a markdown table on stdout, JSON in bench/results/latest.json.

Run it through ``bench/run`` (which picks the project's .venv and checks RabbitMQ)::

    bench/run              # the full run (under 2 minutes on 2 cores)
    bench/run --smoke      # a short run for CI: fails only on a crash, never on speed
    bench/run --repeat 1   # the full counts, one round per noop and latency figure instead of 3 and 5

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import bench_user_activity
import latency
import memory
import noop
import processes
from benchlib import BENCH, REPO, broker, child_env


@dataclass(frozen=True)
class Plan:
    noop_events: int
    repeat: int
    latency_rate: float
    latency_seconds: float
    memory_events: int
    memory_idle: float
    webhook_events: int
    webhook_serial_events: int
    emails: int
    process_events: int
    activity_events: int
    # The p99 of a few seconds flips between two levels as other programs come and go on a
    # shared machine: more rounds than the noop figures, so that the median holds.
    latency_rounds: int = 5


FULL = Plan(20_000, 3, 1000, 5, 20_000, 2, 2000, 200, 2000, 20_000, 20_000)
SMOKE = Plan(500, 1, 1000, 0.5, 500, 0.5, 100, 5, 20, 500, 500, latency_rounds=1)


def webhooks(events: int, serial_events: int) -> dict[str, Any]:
    """bench/bench_webhooks.py: concurrency 100 against one at a time, parsed from its output."""
    out = _script("bench_webhooks.py", "--count", str(events), "--serial-count", str(serial_events))
    pattern = (
        r"^concurrency (\d+)[^:]*: (\d+) events in ([\d.]+) s = (\d+) events/s; latency p50 (\d+) ms, p99 (\d+) ms"
    )
    runs = {}
    for m in re.finditer(pattern, out, re.M):
        runs["serial" if m.group(1) == "1" else "concurrent"] = {
            "concurrency": int(m.group(1)),
            "events": int(m.group(2)),
            "rate": int(m.group(4)),
            "p50_ms": int(m.group(5)),
            "p99_ms": int(m.group(6)),
        }
    if set(runs) != {"serial", "concurrent"}:
        raise RuntimeError(f"bench_webhooks.py: unexpected output:\n{out}")
    return runs


def email(count: int) -> dict[str, Any]:
    """bench/bench_email.py: emails/s with a reused connection and with one per email, parsed."""
    out = _script("bench_email.py", "--count", str(count))
    labels = {
        "render only": "render",
        "send, one reused connection": "reuse",
        "send, one connection per message": "per_email",
        "render + send, one reused connection": "render_and_send",
    }
    runs: dict[str, Any] = {}
    for m in re.finditer(r"^(.+?)\s+(\d+) emails in\s+([\d.]+)s:\s+([\d,]+) emails/s", out, re.M):
        label = m.group(1).split(" (")[0].strip()
        if label in labels:
            runs[labels[label]] = {"emails": int(m.group(2)), "rate": int(m.group(4).replace(",", ""))}
    if set(runs) != set(labels.values()):
        raise RuntimeError(f"bench_email.py: unexpected output:\n{out}")
    return runs


def _script(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args], env=child_env(), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    with broker() as b:
        server = b.connection._impl.server_properties
        rabbitmq = server.get("version", b"?")
    versions = {name: _version(name) for name in ("twisted", "pika", "treq")}
    return {
        "zqtwisted": _commit(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "rabbitmq": rabbitmq.decode() if isinstance(rabbitmq, bytes) else str(rabbitmq),
        **versions,
    }


def _commit() -> str:
    """The code measured: the checkout's commit ("+changes" if zqtwisted/ differs), or where it comes from."""
    import zqtwisted

    where = Path(zqtwisted.__file__).resolve().parent.parent
    if where != REPO:
        return f"from {where}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "zqtwisted"], cwd=REPO, capture_output=True)
    except OSError:
        return "?"
    return (head.stdout.strip() or "?") + (" +changes" if dirty.stdout.strip() else "")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def times(value: float | None) -> str:
    return f"{value:.2f}x" if value else ""


def table(r: dict[str, Any]) -> str:
    """The markdown table of a run's results."""
    rows: list[tuple[str, ...]] = []
    n = r.get("noop")
    if n:
        for variant, label in (("single", "single events"), ("batch", "batches of 100")):
            v = n[variant]
            zq, bare, zulip = (v[c]["rate"] for c in noop.CONSUMERS)
            rows.append(
                (
                    f"noop, {label} (events/s)",
                    f"{zq:,}",
                    f"{bare:,}",
                    f"{zulip:,}",
                    f"{times(v['zqtwisted'].get('rate_ratio'))} bare, {ratio(zq, zulip)} Zulip-style",
                    ">= 0.95x bare, >= 1.8x Zulip-style" if variant == "single" else "",
                )
            )
            cpu = [v[c]["cpu_us"] for c in noop.CONSUMERS]
            rows.append(
                (
                    f"noop, {label}: consumer CPU per event (us, lower is better)",
                    *(f"{x:.1f}" for x in cpu),
                    f"{times(v['zqtwisted'].get('cpu_ratio'))} bare, {ratio(cpu[0], cpu[2])} Zulip-style",
                    "<= 1.1x bare" if variant == "single" else "",
                )
            )
    lat = r.get("latency")
    if lat:
        rate = r["plan"]["latency_rate"]
        for key, label, goal in (("p50_ms", "p50", ""), ("p99_ms", "p99", "<= 10 ms, <= 1.2x bare")):
            zq, bare, zulip = (lat[c][key] for c in latency.CONSUMERS)
            note = f"{times(lat['zqtwisted'].get('p99_ratio'))} bare" if key == "p99_ms" else ""
            rows.append(
                (
                    f"latency at {rate:,.0f} events/s, {label} (ms)",
                    f"{zq:.2f}",
                    f"{bare:.2f}",
                    f"{zulip:.2f}",
                    note,
                    goal,
                )
            )
    w = r.get("webhooks")
    if w:
        c, s = w["concurrent"], w["serial"]
        note = f"{ratio(c['rate'], s['rate'])} one at a time"
        rows.append(
            (
                f"webhooks, {c['events']:,} events, 50 ms endpoint (events/s)",
                f"{c['rate']:,}",
                "",
                f"{s['rate']:,} (one at a time)",
                note,
                ">= 900",
            )
        )
        rows.append(("webhooks, p99 (ms)", f"{c['p99_ms']}", "", f"{s['p99_ms']}", "", ""))
    e = r.get("email")
    if e:
        count = e["reuse"]["emails"]
        reuse, per = e["reuse"]["rate"], e["per_email"]["rate"]
        rows.append((f"email, {count:,} sent, one reused connection (emails/s)", f"{reuse:,}", "", "", "", ""))
        rows.append(
            (f"email, {count:,} sent, one connection per email (emails/s)", f"{per:,}", "", "", ratio(reuse, per), "")
        )
        rows.append(("email, render + send, reused (emails/s)", f"{e['render_and_send']['rate']:,}", "", "", "", ""))
    ua = r.get("user_activity")
    if ua and "zulip" in ua:
        zq, serial, zulip = (ua[c]["rate"] for c in bench_user_activity.CONSUMERS)
        label = f"user_activity into PostgreSQL, batches of {ua['batch']} (events/s)"
        rows.append((label, f"{zq:,}", "", f"{zulip:,}", f"{ratio(zq, zulip)} Zulip-style", ""))
        rows.append(("user_activity, one batch at a time (events/s)", f"{serial:,}", "", "", "", ""))
        for key, what in (("cpu_us", "consumer"), ("db_cpu_us", "PostgreSQL")):
            zq_cpu, zulip_cpu = ua["zqtwisted"][key], ua["zulip"][key]
            label = f"user_activity: {what} CPU per event (us, lower is better)"
            efficiency = ratio(zulip_cpu, zq_cpu)
            note = f"{efficiency} (efficiency)" if efficiency else ""
            rows.append((label, f"{zq_cpu:.1f}", "", f"{zulip_cpu:.1f}", note, ""))
    procs = r.get("processes")
    if procs and "1" in procs:
        one = procs["1"]["rate"]
        for count, v in sorted(procs.items(), key=lambda item: int(item[0])):
            shares = " + ".join(f"{c:,}" for c in v["counts"])
            label = f"noop, {count} worker process{'es' if count != '1' else ''} on one queue (events/s)"
            rows.append((label, f"{v['rate']:,}", "", "", f"{ratio(v['rate'], one)} one process; {shares}", ""))
    m = r.get("memory")
    if m and "one_queue" in m:
        one = m["one_queue"]
        rows.append(
            (
                "memory, one queue (--queue bench_noop) idle (MB RSS)",
                f"{one['zqtwisted_rss_mb']}",
                f"{one['bare_rss_mb']}",
                "",
                f"{one['over_mb']:+} MB bare",
                "<= bare + 10 MB",
            )
        )
    if m:
        rows.append((f"memory, --all ({m['queues']} queues) idle (MB RSS)", f"{m['idle_rss_mb']}", "", "", "", "< 80"))
        rows.append(("memory, --all peak during the noop run (MB)", f"{m['noop_peak_mb']}", "", "", "", "< 80"))
    if n:
        peak = n["single"]["zqtwisted"].get("peak_mb")
        if peak:
            rows.append(("memory, --queue bench_noop peak (MB)", f"{peak}", "", "", "", ""))
    header = ("benchmark", "zqtwisted", "bare pika (Twisted)", "Zulip-style (blocking)", "ratio", "goal")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a short run (CI): fails on a crash, never on speed")
    parser.add_argument(
        "--repeat", type=int, help="rounds of the noop and latency figures (median; default 3 and 5, smoke 1)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["noop", "latency", "memory", "webhooks", "email", "processes", "user_activity"],
    )
    parser.add_argument("--json", default=str(BENCH / "results" / "latest.json"), help="where to write the results")
    args = parser.parse_args()
    plan = SMOKE if args.smoke else FULL
    repeat = args.repeat or plan.repeat
    sections: dict[str, Callable[[], Any]] = {
        "noop": lambda: noop.run(plan.noop_events, repeat, log=lambda line: print(line, flush=True)),
        "latency": lambda: latency.run(
            plan.latency_rate,
            plan.latency_seconds,
            warmup=min(0.5, plan.latency_seconds),
            repeat=args.repeat or plan.latency_rounds,
            log=lambda line: print(line, flush=True),
        ),
        "memory": lambda: memory.run(plan.memory_events, plan.memory_idle),
        "webhooks": lambda: webhooks(plan.webhook_events, plan.webhook_serial_events),
        "email": lambda: email(plan.emails),
        "processes": lambda: processes.run(plan.process_events, log=lambda line: print(line, flush=True)),
        "user_activity": lambda: bench_user_activity.run(
            plan.activity_events, repeat, log=lambda line: print(line, flush=True)
        ),
    }
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "smoke" if args.smoke else "full",
        "plan": {**asdict(plan), "repeat": repeat, "latency_rounds": args.repeat or plan.latency_rounds},
        "machine": machine(),
    }
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        t = time.monotonic()
        results[name] = run()
        print(f"   ({time.monotonic() - t:.0f} s)", flush=True)
    results["seconds"] = round(time.monotonic() - started)
    m = results["machine"]
    print(
        f"\n{results['date']}, {m['cores']} cores ({m['cpu']}), Python {m['python']}, RabbitMQ {m['rabbitmq']}, "
        f"Twisted {m['twisted']}, pika {m['pika']}, zqtwisted {m['zqtwisted']}; {results['mode']} run, "
        f"{results['seconds']} s\n"
    )
    print(table(results))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {path}")
    if args.smoke:
        print("smoke run: the figures are not meaningful (too few events); it checks that every benchmark runs")


if __name__ == "__main__":
    main()
