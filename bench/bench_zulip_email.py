"""Zulip mode's email_senders: emails/s for ``to_user_ids`` events (a database lookup each) next to ``to_emails``.

    python bench/bench_zulip_email.py              # 2,000 emails each way
    python bench/bench_zulip_email.py --count 200  # a few seconds

Needs the local PostgreSQL (127.0.0.1:5432, user postgres): a throwaway database is
loaded from the schema fixture (tests/fixtures/zulip_schema) with one realm and
``--users`` users, and dropped at the end.  The SMTP server is Twisted's ESMTP
server on 127.0.0.1 in a child process (bench/bench_email.py --serve).  Both runs
go through the real email worker in batches of 100 (Zulip's ``build_email`` over the
database pool, the test templates in Zulip's layout, one reused SMTP connection),
in one process, one after the other:

- ``to_user_ids``: ``send_email``'s events for one user each, with ``realm_id``
  (two queries per email: the realm, the user);
- ``to_emails``: the same emails addressed by ``to_emails`` (no query).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer

from tests.zulip_db import ZulipTestDatabase
from tests.zulip_email_events import send_email_event
from zqtwisted.consumers.email_senders import ImmediateEmailSenderWorker
from zqtwisted.mail.backends import SMTPMailer
from zqtwisted.mail.settings import MailSettings
from zqtwisted.runtime.consumer import BatchFailures, WorkerContext
from zqtwisted.testing import RecordingPublisher
from zqtwisted.zulip.email_service import ZulipEmailBuilder
from zqtwisted.zulip.email_templates import ZulipTemplates
from zqtwisted.zulip.pool import ZulipDatabase
from zqtwisted.zulip.settings import ZulipSettings

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "zulip_templates")
BATCH = 100


def context(i: int) -> dict[str, Any]:
    return {
        "realm_url": "http://bench.zulip.example.com",
        "user_email": f"user{i}@zulip.example.com",
        "device_browser": "Firefox",
        "device_os": "Linux",
        "unsubscribe_link": f"http://bench.zulip.example.com/accounts/unsubscribe/login_emails/{i:024d}",
    }


async def run(reactor: Any, worker: ImmediateEmailSenderWorker, events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(events), BATCH):
        result = await worker.consume_batch(events[start : start + BATCH])
        if isinstance(result, BatchFailures):
            raise RuntimeError(f"{len(result.failures)} emails failed: {next(iter(result.failures.values()))}")
    return time.perf_counter() - started


async def bench(reactor: Any, port: int, count: int, users: int) -> None:
    db = ZulipTestDatabase()
    try:
        realm = db.realm("bench", "Bench")
        ids = [
            db.user(realm, f"user{i}@zulip.example.com", f"Üser {i}", delivery_email=f"user{i}@private.example.org")
            for i in range(users)
        ]
        settings = ZulipSettings(
            database=f"host=127.0.0.1 port=5432 dbname={db.name} user=postgres",
            external_host="zulip.example.com",
            templates_dir=TEMPLATES,
            physical_address="1 Bench Road",
        )
        database = ZulipDatabase(reactor, settings)
        await database.open()
        mail = MailSettings(backend="smtp", host="127.0.0.1", port=port, tls="none")
        from zqtwisted.mail.backends import build_mailer

        mailer = build_mailer(reactor, mail)
        assert isinstance(mailer, SMTPMailer)
        builder = ZulipEmailBuilder(database, settings, ZulipTemplates(TEMPLATES))
        worker = ImmediateEmailSenderWorker(
            WorkerContext("email_senders", reactor, RecordingPublisher()), settings=mail, mailer=mailer, zulip=builder,
            database=database,
        )  # fmt: skip
        prefix = "zerver/emails/notify_new_login"
        by_id = [
            send_email_event(prefix, to_user_ids=[ids[i % users]], realm_id=realm.id, context=context(i))
            for i in range(count)
        ]
        by_address = [
            send_email_event(prefix, to_emails=[f"Üser {i} <user{i % users}@private.example.org>"], context=context(i))
            for i in range(count)
        ]
        await run(reactor, worker, by_address[: min(count, 100)])  # warm-up: templates, connections
        for label, events in (("to_user_ids (database lookup)", by_id), ("to_emails", by_address)):
            elapsed = await run(reactor, worker, events)
            print(f"{label:<36} {count} emails in {elapsed:5.2f}s: {count / elapsed:7,.0f} emails/s")
        await mailer.close()
        await database.close()
    finally:
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="emails per run (default 2000)")
    parser.add_argument("--users", type=int, default=200, help="users in the database (default 200)")
    args = parser.parse_args()

    from twisted.internet import reactor

    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "bench_email.py"), "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    port = int(child.stdout.readline().split()[1])
    print(f"SMTP server on 127.0.0.1:{port} (child process); PostgreSQL on 127.0.0.1:5432")
    failures: list[Any] = []
    d = defer.ensureDeferred(bench(reactor, port, args.count, args.users))
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    out, _ = child.communicate(timeout=30)
    print(out.strip())
    if failures:
        failures[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
