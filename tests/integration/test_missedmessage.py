"""missedmessage_emails end to end on the real RabbitMQ, with email_senders and the file mail backend."""

from __future__ import annotations

import email
import email.policy
import os
import types
from email.message import EmailMessage

from twisted.internet.defer import Deferred, ensureDeferred

from tests.contract import inline
from tests.integration.base import IntegrationCase
from tests.missedmessage_fixtures import private_event, stream_event
from zqtwisted.mail.settings import MailSettings
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.runtime.deadletter import failed_queue

QUEUES = ("missedmessage_emails", "email_senders")


class MissedMessageEndToEnd(IntegrationCase):
    def setUp(self) -> Deferred[None]:  # type: ignore[override]  # trial waits for a Deferred
        d = super().setUp()
        return d.addCallback(lambda _: ensureDeferred(self._purge_ours()))

    def tearDown(self) -> Deferred[None]:  # type: ignore[override]  # trial waits for a Deferred
        d = ensureDeferred(self._purge_ours())
        return d.addCallback(lambda _: super(MissedMessageEndToEnd, self).tearDown())

    async def _purge_ours(self) -> None:
        session = await self.direct.session(30)
        for queue in QUEUES:
            for name in (queue, failed_queue(queue)):
                await session.declare_queue(name)
                await session.purge(name)

    def mails(self) -> list[EmailMessage]:
        maildir = os.path.join(self.tmp, "mail")
        if not os.path.isdir(maildir):
            return []
        messages = []
        for name in sorted(os.listdir(maildir)):
            if name.endswith(".eml"):
                with open(os.path.join(maildir, name), "rb") as f:
                    message = email.message_from_binary_file(f, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                messages.append(message)
        return messages

    @inline
    async def test_two_users_one_email_per_conversation(self) -> None:
        """Notifications of two users, 2 s batches: one .eml per conversation holding every message."""
        config = self.config().replace(
            sections=types.MappingProxyType(
                {
                    "mail": MailSettings(backend="file", file_dir=os.path.join(self.tmp, "mail")),
                    "missedmessage": MissedMessageSettings(
                        sqlite_path=os.path.join(self.tmp, "missedmessage.sqlite3"), default_batching_period=2
                    ),
                }
            )
        )
        await self.start(list(QUEUES), config)
        await self.publish(
            "missedmessage_emails",
            [
                stream_event(10, 101, stream="Verona", topic="Lunch", content="pizza?"),
                stream_event(10, 102, stream="verona", topic="LUNCH", sender="Iago", content="yes, pizza"),
                private_event(10, 103, sender="Othello", content="are you there?"),
                stream_event(11, 104, stream="Denmark", topic="Castle", content="a ghost"),
                stream_event(10, 105, stream="Verona", topic="lunch", content="at noon"),
                stream_event(11, 106, stream="Denmark", topic="castle", sender="Hamlet", content="my father"),
            ],
        )
        await self.until(lambda: len(self.mails()) >= 3, timeout=30)
        await self.until_counts("email_senders", 0)
        mails = self.mails()
        self.assertEqual(len(mails), 3)
        by_subject = {str(m["Subject"]): m for m in mails}
        self.assertEqual(set(by_subject), {"#Verona > Lunch", "You and Othello", "#Denmark > Castle"})

        def text(message: EmailMessage) -> str:
            body = message.get_body(("plain",))
            assert isinstance(body, EmailMessage)
            return str(body.get_content())

        lunch = by_subject["#Verona > Lunch"]
        self.assertEqual(str(lunch["To"]), "hamlet@example.com")
        lunch_text = text(lunch)
        for content in ("pizza?", "yes, pizza", "at noon"):
            self.assertIn(content, lunch_text)
        self.assertLess(lunch_text.index("pizza?"), lunch_text.index("at noon"))
        self.assertIn("are you there?", text(by_subject["You and Othello"]))
        castle = by_subject["#Denmark > Castle"]
        self.assertEqual(str(castle["To"]), "iago@example.com")
        self.assertIn("a ghost", text(castle))
        self.assertIn("my father", text(castle))
        self.assertEqual(await self.counts(failed_queue("missedmessage_emails")), (0, 0))
