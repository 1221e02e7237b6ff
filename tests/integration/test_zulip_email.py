"""Email in Zulip mode as a Zulip server uses it: a real ``twistd zqworkers`` child, the fixture database,
Twisted's ESMTP server on 127.0.0.1, and the test templates in Zulip's layout (tests/fixtures/zulip_templates).

Events are built as Zulip's publishers build them (tests/zulip_email_events.py): ``send_email`` on
``email_senders``, ``send_future_email`` on ``deferred_email_senders``, ``maybe_enqueue_notifications``
on ``missedmessage_emails``.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.contract import inline
from tests.integration.base import IntegrationCase
from tests.integration.test_missedmessage_postgres import require_postgres
from tests.zulip_db import ZulipTestDatabase
from tests.zulip_email_events import missedmessage_email_event, send_email_event, send_future_email_event
from zqtwisted.mail.testing import LocalSMTPServer

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "zulip_templates"
QUEUES = ("email_senders", "deferred_email_senders", "missedmessage_emails")
READ, MENTIONED = 1, 8
PRIVATE = "hamlet@private.example.org"


class ZulipEmailTests(IntegrationCase):
    timeout = 240

    def setUp(self):  # type: ignore[no-untyped-def]
        require_postgres(self)
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.smtp = LocalSMTPServer(reactor)
        self.smtp.start()
        self.addCleanup(self.smtp.stop_listening)
        return super().setUp()

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)

    async def purge(self) -> None:
        session = await self.direct.session(30)
        for queue in QUEUES:
            for name in (queue, f"{queue}.failed"):
                await session.declare_queue(name)
                await session.purge(name)

    def spawn(self) -> subprocess.Popen[bytes]:
        config = Path(self.tmp) / "zqtwisted.toml"
        config.write_text(
            f"""
[workers]
drain_timeout = 5
http = "tcp:0:interface=127.0.0.1"
[paths]
stats_dir = "{self.tmp}"
error_dir = "{self.tmp}"
[mail]
backend = "smtp"
host = "127.0.0.1"
port = {self.smtp.port_number}
tls = "none"
[zulip]
database = "host=127.0.0.1 port=5432 dbname={self.db.name} user=postgres"
external_host = "zulip.example.com"
uri_scheme = "http://"
templates_dir = "{TEMPLATES}"
zulip_administrator = "Zulip Support <support@zulip.example.com>"
physical_address = "1 Castle Road, Elsinore"
installation_name = "Elsinore Zulip"
query_timeout = 5
[queues.email_senders]
sleep_delay = 0.2
"""
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / f"twistd-{len(self.children)}.log", "wb")
        self.addCleanup(log.close)
        queues = [arg for queue in QUEUES for arg in ("--queue", queue)]
        child = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "zqworkers",
             *queues],
            env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.children.append(child)
        return child

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(Path(self.tmp).glob("twistd-*.log")))

    async def stop(self, child: subprocess.Popen[bytes]) -> None:
        child.send_signal(signal.SIGTERM)
        await self.until(lambda: child.poll() is not None, timeout=30)

    def received(self) -> list[tuple[str, EmailMessage]]:
        """(envelope recipient, parsed message) of every message the SMTP server accepted."""
        return [
            (m.recipient, email.message_from_bytes(m.data, policy=email.policy.default)) for m in self.smtp.messages
        ]

    def world(self, period: int = 120) -> dict[str, Any]:
        db = self.db
        realm = db.realm("zulip", "Zulip Dev")
        hamlet = db.user(
            realm, "user10@zulip.example.com", "King Hamlet", delivery_email=PRIVATE,
            email_notifications_batching_period_seconds=period,
        )  # fmt: skip
        othello = db.user(realm, "othello@zulip.example.com", "Othello")
        iago = db.user(realm, "iago@zulip.example.com", "Iago")
        _, stream_recipient = db.stream(realm, "Denmark", [hamlet, othello, iago])
        return {"realm": realm, "hamlet": hamlet, "othello": othello, "iago": iago, "stream": stream_recipient}

    @inline
    async def test_email_senders_to_user_ids(self) -> None:
        """send_email's to_user_ids event reaches the users' delivery addresses, rendered with build_email's context."""
        await self.purge()
        w = self.world()
        child = self.spawn()
        context = {
            "realm_url": "http://zulip.zulip.example.com",
            "user_email": "user10@zulip.example.com",
            "device_browser": "Firefox",
            "device_os": "Linux",
            "unsubscribe_link": "http://zulip.zulip.example.com/accounts/unsubscribe/login_emails/abc",
        }
        login = send_email_event(
            "zerver/emails/notify_new_login", to_user_ids=[w["hamlet"]], from_name="Zulip Account Security",
            from_address="noreply@zulip.example.com", language="en", context=context, realm_id=w["realm"].id,
        )  # fmt: skip
        admins = send_email_event(
            "zerver/emails/deactivate",
            to_user_ids=[w["hamlet"], w["othello"]],
            context={"realm_url": "http://zulip.zulip.example.com", "realm_name": "Zulip Dev"},
        )
        future = send_future_email_event("zerver/emails/deactivate", to_emails=["Iago <iago@example.net>"],
                                         context={"realm_url": "http://x.example.com", "realm_name": "X"})  # fmt: skip
        await self.publish("email_senders", [login, admins])
        await self.publish("deferred_email_senders", [future])
        await self.until(lambda: len(self.smtp.messages) == 4, timeout=60)
        await self.stop(child)

        by_subject: dict[str, list[tuple[str, EmailMessage]]] = {}
        for recipient, message in self.received():
            by_subject.setdefault(str(message["Subject"]), []).append((recipient, message))
        ((recipient, message),) = by_subject["New login from Firefox on Linux"]
        self.assertEqual(recipient, PRIVATE)
        self.assertEqual(str(message["To"]), f"King Hamlet <{PRIVATE}>")
        self.assertEqual(str(message["From"]), "Zulip Account Security <noreply@zulip.example.com>")
        self.assertEqual(str(message["Reply-To"]), "noreply@zulip.example.com")
        self.assertEqual(str(message["List-Id"]), "Zulip Dev <zulip.zulip.example.com>")
        self.assertEqual(str(message["List-Unsubscribe"]).strip(), f"<{context['unsubscribe_link']}>")
        self.assertEqual(str(message["X-Auto-Response-Suppress"]), "All")
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        self.assertIn("Contact us at support@zulip.example.com.", text)
        self.assertIn("1 Castle Road, Elsinore", text)
        self.assertIn('src="http://zulip.example.com/static/images/emails/email_logo.png"', html)
        self.assertIn('<span class="physical-address" style="color: #666666;">1 Castle Road, Elsinore</span>', html)

        deactivations = by_subject["Your account on Zulip Dev has been deactivated"]
        self.assertEqual(sorted(r for r, _ in deactivations), [PRIVATE, "othello@zulip.example.com"])
        _, message = deactivations[0]
        # No realm_id: the users' realm gives List-Id; the compiled HTML is used.
        self.assertEqual(str(message["List-Id"]), "Zulip Dev <zulip.zulip.example.com>")
        self.assertIn("has been deactivated", message.get_body(("html",)).get_content())  # type: ignore[union-attr]
        ((recipient, message),) = by_subject["Your account on X has been deactivated"]
        self.assertEqual((recipient, message["List-Id"]), ("iago@example.net", None))
        self.assertEqual(await self.dead_letters("email_senders"), [])
        self.assertNotIn(PRIVATE, self.log_text())
        self.assertIn("Sending notify_new_login email to user", self.log_text())

    @inline
    async def test_missed_messages_batched_in_zulips_table(self) -> None:
        """Notifications wait as rows of Zulip's table, then go out one email per conversation; read ones left out."""
        await self.purge()
        w = self.world(period=6)
        db, hamlet, othello, iago = self.db, w["hamlet"], w["othello"], w["iago"]
        dm = db.recipient_of_user(hamlet)
        dm1 = db.message(w["realm"], othello, dm, "first *dm*", "<p>first <em>dm</em></p>", receivers={hamlet: 0})
        dm2 = db.message(w["realm"], othello, dm, "second dm", "<p>second dm</p>", receivers={hamlet: 0})
        mention1 = db.message(
            w["realm"], iago, w["stream"], "@**King Hamlet** look", "<p>@King Hamlet look</p>", topic="castle",
            receivers={hamlet: MENTIONED, iago: READ},
        )  # fmt: skip
        mention2 = db.message(
            w["realm"], othello, w["stream"], "@**King Hamlet** here", "<p>@King Hamlet here</p>", topic="Castle",
            receivers={hamlet: MENTIONED},
        )  # fmt: skip
        child = self.spawn()
        start = time.time()
        await self.publish("missedmessage_emails", [
            missedmessage_email_event(hamlet, dm1, "direct_message"),
            missedmessage_email_event(hamlet, dm2, "direct_message"),
            missedmessage_email_event(hamlet, mention1, "mentioned"),
            missedmessage_email_event(hamlet, mention2, "mentioned"),
        ])  # fmt: skip
        table = "zerver_scheduledmessagenotificationemail"
        await self.until(lambda: db.execute(f"SELECT count(*) FROM {table}")[0][0] == 4, timeout=60)
        stamps = db.execute(f"SELECT DISTINCT extract(epoch FROM scheduled_timestamp) FROM {table}")
        self.assertEqual(len(stamps), 1)  # anchored at the first notification
        due = float(stamps[0][0])
        self.assertGreater(due, start + 5)
        db.execute("UPDATE zerver_usermessage SET flags = flags | 1 WHERE message_id = %s", (dm2,))
        self.assertEqual(self.smtp.messages, [])
        await self.until(lambda: len(self.smtp.messages) == 2, timeout=60)
        arrived = time.time()
        self.assertGreaterEqual(arrived, due - 0.5)
        await deferLater(reactor, 1.5, lambda: None)
        await self.stop(child)

        self.assertEqual(len(self.smtp.messages), 2)
        (r1, dm_mail), (r2, topic_mail) = self.received()
        self.assertEqual((r1, r2), (PRIVATE, PRIVATE))
        self.assertEqual(str(dm_mail["Subject"]), "DMs with Othello")
        self.assertEqual(str(dm_mail["From"]), "Elsinore Zulip notifications <noreply@zulip.example.com>")
        self.assertEqual(str(dm_mail["List-Id"]), "Zulip Dev <zulip.zulip.example.com>")
        dm_text = dm_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        self.assertIn("> first *dm*", dm_text)
        self.assertNotIn("second dm", dm_text)
        self.assertIn(f"http://zulip.zulip.example.com/#narrow/dm/{othello}-Othello", dm_text)
        self.assertTrue(str(dm_mail["List-Unsubscribe"]).strip().startswith(
            "<http://zulip.zulip.example.com/accounts/unsubscribe/missed_messages/"))  # fmt: skip
        self.assertEqual(str(topic_mail["Subject"]), "#Denmark > castle")
        topic_html = topic_mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
        self.assertIn("<b>Iago</b>: @King Hamlet look", topic_html)
        self.assertIn("<b>Othello</b>: @King Hamlet here", topic_html)
        self.assertIn("You are receiving this because you were personally mentioned.", topic_mail.get_body(
            ("plain",)).get_content())  # type: ignore[union-attr]  # fmt: skip
        self.assertEqual(db.execute(f"SELECT count(*) FROM {table}")[0][0], 0)
        keys = db.execute("SELECT confirmation_key, type, object_id FROM confirmation_confirmation ORDER BY id")
        self.assertEqual([(t, o) for _, t, o in keys], [(4, hamlet), (4, hamlet)])
        self.assertIn(keys[0][0], str(dm_mail["List-Unsubscribe"]))
        self.assertIsNotNone(db.execute("SELECT last_reminder FROM zerver_userprofile WHERE id = %s", (hamlet,))[0][0])
        self.assertNotIn(PRIVATE, self.log_text())

    @inline
    async def test_batch_survives_sigkill(self) -> None:
        """Killed with SIGKILL mid-batch and restarted, the worker sends the batch once, at its original due time."""
        await self.purge()
        w = self.world(period=12)
        db, hamlet, othello = self.db, w["hamlet"], w["othello"]
        dm = db.recipient_of_user(hamlet)
        ids = [
            db.message(w["realm"], othello, dm, f"dm {i}", f"<p>dm {i}</p>", receivers={hamlet: 0}) for i in range(3)
        ]
        first = self.spawn()
        await self.publish(
            "missedmessage_emails", [missedmessage_email_event(hamlet, m, "direct_message") for m in ids]
        )
        table = "zerver_scheduledmessagenotificationemail"
        await self.until(lambda: db.execute(f"SELECT count(*) FROM {table}")[0][0] == 3, timeout=60)
        due = float(db.execute(f"SELECT min(extract(epoch FROM scheduled_timestamp)) FROM {table}")[0][0])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        restarted = time.time()
        self.assertLess(restarted, due - 3)
        second = self.spawn()
        await self.until(lambda: len(self.smtp.messages) == 1, timeout=60)
        arrived = time.time()
        self.assertGreaterEqual(arrived, due - 0.5)
        self.assertLess(arrived, due + 3)  # not restart + the period
        await deferLater(reactor, 3, lambda: None)
        await self.stop(second)
        self.assertEqual(len(self.smtp.messages), 1)
        ((_, message),) = self.received()
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        self.assertEqual(
            [line for line in text.splitlines() if line.startswith("> dm")], ["> dm 0", "> dm 1", "> dm 2"]
        )
        self.assertEqual(db.execute(f"SELECT count(*) FROM {table}")[0][0], 0)
