"""Grouping a user's notifications into emails, as Zulip does, for the shipped template."""

from __future__ import annotations

from twisted.trial import unittest

from tests.missedmessage_fixtures import private_event, stream_event
from zqtwisted.mail.render import Renderer
from zqtwisted.mail.settings import shipped_template_dir
from zqtwisted.missedmessage.grouping import EmailOptions, build_email_events, group_conversations

ME = "hamlet@example.com"


class GroupingTests(unittest.TestCase):
    def test_channel_topic_case_insensitive(self) -> None:
        """Channel messages group by channel and topic, ignoring case; other topics apart."""
        events = [
            stream_event(10, 1, stream="Verona", topic="Lunch"),
            stream_event(10, 2, stream="verona", topic="LUNCH"),
            stream_event(10, 3, stream="Verona", topic="Dinner"),
            stream_event(10, 4, stream="Denmark", topic="Lunch"),
        ]
        groups = group_conversations(ME, events)
        self.assertEqual([[m["id"] for m in g.messages] for g in groups], [[1, 2], [3], [4]])
        self.assertEqual(groups[0].name, "#Verona > Lunch")

    def test_direct_messages_by_conversation(self) -> None:
        """1:1 DMs group by the other person, group DMs by their participants."""
        events = [
            private_event(10, 1, sender="Othello"),
            private_event(10, 2, sender="Iago"),
            private_event(10, 3, sender="othello"),
            private_event(10, 4, sender="Othello", others=["Iago"]),
            private_event(10, 5, sender="Iago", others=["Othello"]),
        ]
        groups = group_conversations(ME, events)
        self.assertEqual([[m["id"] for m in g.messages] for g in groups], [[2], [1, 3], [4, 5]])
        self.assertEqual([g.name for g in groups], ["You and Iago", "You and Othello", "You and Othello, Iago"])

    def test_oldest_conversation_first(self) -> None:
        """Conversations go least recently active first; messages in the order they were sent."""
        events = [
            stream_event(10, 5, topic="A", timestamp=50),
            stream_event(10, 6, topic="B", timestamp=60),
            stream_event(10, 9, topic="A", timestamp=40),  # newest id, sent before 5
        ]
        groups = group_conversations(ME, events)
        self.assertEqual([g.name for g in groups], ["#Verona > B", "#Verona > A"])
        self.assertEqual([m["id"] for m in groups[1].messages], [9, 5])

    def test_duplicates_and_deleted(self) -> None:
        """A message notified twice appears once; deleted messages are left out."""
        events = [stream_event(10, 1), stream_event(10, 1), stream_event(10, 2, content="(deleted)")]
        groups = group_conversations(ME, events)
        self.assertEqual([[m["id"] for m in g.messages] for g in groups], [[1]])

    def test_email_events(self) -> None:
        """One email event per conversation, to the user, with the template's context."""
        events = [
            stream_event(10, 1, conversation_url="https://chat.example.com/#narrow/channel/1-Verona/topic/Lunch"),
            private_event(10, 2),
        ]
        events[1]["user"]["realm_name"] = "Zulip Dev"
        emails = build_email_events(events, EmailOptions())
        self.assertEqual(len(emails), 2)
        first = emails[0]
        self.assertEqual(first["template_prefix"], "zqtwisted/emails/missed_message")
        self.assertEqual(first["to_emails"], ["hamlet@example.com"])
        self.assertEqual(first["from_address"], "NO_REPLY")
        self.assertEqual(first["context"]["user_name"], "Hamlet")
        self.assertEqual(first["context"]["realm_name"], "Zulip Dev")
        conversation = first["context"]["conversations"][0]
        self.assertEqual(conversation["url"], "https://chat.example.com/#narrow/channel/1-Verona/topic/Lunch")
        self.assertEqual(
            conversation["messages"],
            [
                {
                    "sender": "Othello",
                    "content": "message 1",
                    "rendered_content": "<p>message 1</p>",
                    "url": "https://chat.example.com/#narrow/near/1",
                }
            ],
        )
        self.assertEqual(build_email_events([], EmailOptions()), [])

    def test_renders_with_shipped_templates(self) -> None:
        """The events render with the shipped missed_message templates."""
        events = [stream_event(10, 1), stream_event(10, 2, sender="Iago")]
        (email,) = build_email_events(events, EmailOptions())
        renderer = Renderer(shipped_template_dir(), from_address="noreply@example.com")
        message = renderer.render(email, now=1_700_000_000)
        self.assertEqual(message["Subject"], "#Verona > Lunch")
        self.assertEqual(message["To"], "hamlet@example.com")
        plain = message.get_body(("plain",))
        assert plain is not None
        text = plain.get_content()
        self.assertIn("Hello Hamlet", text)
        self.assertIn("message 1", text)
        self.assertIn("Iago:", text)
