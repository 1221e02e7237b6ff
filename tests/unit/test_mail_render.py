"""Rendering email events into messages: templates, headers, addresses, validation."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import tempfile
from email.message import EmailMessage
from typing import Any

from twisted.trial.unittest import TestCase

from zqtwisted.errors import MalformedEventError, PermanentError
from zqtwisted.mail.render import Renderer, envelope_of, parse_address, to_bytes, validate
from zqtwisted.mail.settings import shipped_template_dir

NOW = 1_700_000_000.0


def parse(message: EmailMessage) -> EmailMessage:
    """What a receiver sees: the wire bytes parsed back."""
    parsed = email.message_from_bytes(to_bytes(message), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def body(message: EmailMessage, kind: str) -> str:
    """The decoded text of the ``kind`` (plain, html) part, with LF line ends."""
    part = message.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


class RenderTestCase(TestCase):
    def setUp(self) -> None:
        self.template_dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.template_dir)
        self.write("t/welcome.subject.txt", "Welcome to {{ realm }}\n  again\n")
        self.write("t/welcome.txt", "Hello {{ name }} & <friends>\n")
        self.write("t/welcome.html", "<p>Hello {{ name }}</p>\n")
        self.write("t/textonly.subject.txt", "Plain")
        self.write("t/textonly.txt", "just text")
        self.write("t/broken.subject.txt", "{% if %}")
        self.write("t/broken.txt", "x")
        self.write("t/raises.subject.txt", "{{ 1 // 0 }}")
        self.write("t/raises.txt", "x")
        self.renderer = self.make_renderer(self.template_dir)

    def write(self, name: str, text: str) -> None:
        path = os.path.join(self.template_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def make_renderer(self, template_dir: str, **kwargs: Any) -> Renderer:
        ids = iter(range(1, 1000))
        return Renderer(
            template_dir,
            from_address="noreply@example.com",
            support_address="support@example.com",
            make_message_id=lambda domain: f"<{next(ids)}@{domain}>",
            **kwargs,
        )

    def render(self, **event: Any) -> EmailMessage:
        event.setdefault("to_emails", ["hamlet@example.com"])
        return self.renderer.render(event, NOW)


class TemplateTests(RenderTestCase):
    def test_templated_event(self) -> None:
        """template_prefix renders subject (one line), text and HTML as multipart/alternative."""
        message = parse(self.render(template_prefix="t/welcome", context={"realm": "Zulip", "name": "Hamlet"}))
        self.assertEqual(message["Subject"], "Welcome to Zulip again")
        self.assertEqual(message.get_content_type(), "multipart/alternative")
        self.assertEqual(body(message, "plain"), "Hello Hamlet & <friends>\n")
        self.assertEqual(body(message, "html"), "<p>Hello Hamlet</p>\n")

    def test_html_is_escaped_text_is_not(self) -> None:
        """Context values are HTML-escaped in .html templates only."""
        message = self.render(template_prefix="t/welcome", context={"realm": "Z", "name": "<b>"})
        self.assertIn("<p>Hello &lt;b&gt;</p>", body(message, "html"))
        self.assertIn("Hello <b> &", body(message, "plain"))

    def test_text_only_template(self) -> None:
        """Without a .html template the message is a single text/plain part."""
        message = parse(self.render(template_prefix="t/textonly"))
        self.assertEqual(message.get_content_type(), "text/plain")
        self.assertEqual(message.get_content().strip(), "just text")

    def test_template_errors_are_permanent(self) -> None:
        """Missing templates, syntax errors and errors while rendering are PermanentErrors."""
        with self.assertRaisesRegex(PermanentError, "template not found: t/missing.subject.txt"):
            self.render(template_prefix="t/missing")
        with self.assertRaisesRegex(PermanentError, "template error in t/broken.subject.txt"):
            self.render(template_prefix="t/broken")
        with self.assertRaisesRegex(PermanentError, "ZeroDivisionError"):
            self.render(template_prefix="t/raises")

    def test_templates_cannot_escape_their_directory(self) -> None:
        """A template_prefix with '..' is not found rather than read from outside."""
        with self.assertRaises(PermanentError):
            self.render(template_prefix="../../etc/passwd")

    def test_support_email_in_context(self) -> None:
        """Templates get Zulip's support_email."""
        self.write("t/support.subject.txt", "s")
        self.write("t/support.txt", "{{ support_email }}")
        renderer = self.make_renderer(self.template_dir)
        message = renderer.render({"template_prefix": "t/support", "to_emails": ["a@example.com"]}, NOW)
        self.assertEqual(message.get_content().strip(), "support@example.com")


class PreRenderedTests(RenderTestCase):
    def test_pre_rendered(self) -> None:
        """subject/body/html_body/headers are used as given."""
        message = parse(
            self.render(
                subject="Weekly digest",
                body="text",
                html_body="<p>html</p>",
                headers={"List-Id": "Zulip <zulip.example.com>", "X-Campaign": "7"},
            )
        )
        self.assertEqual(message["Subject"], "Weekly digest")
        self.assertEqual(message["List-Id"], "Zulip <zulip.example.com>")
        self.assertEqual(message["X-Campaign"], "7")
        self.assertEqual(body(message, "html").strip(), "<p>html</p>")

    def test_html_only(self) -> None:
        """A pre-rendered event with only html_body is a text/html message."""
        message = parse(self.render(subject="s", html_body="<p>x</p>"))
        self.assertEqual(message.get_content_type(), "text/html")


class HeaderTests(RenderTestCase):
    def test_standard_headers(self) -> None:
        """Date, Message-ID, X-Auto-Response-Suppress, From and Reply-To follow Zulip's rules."""
        message = parse(self.render(subject="s", body="b"))
        self.assertEqual(message["Date"], "Tue, 14 Nov 2023 22:13:20 +0000")
        self.assertEqual(message["Message-ID"], "<1@example.com>")
        self.assertEqual(message["X-Auto-Response-Suppress"], "All")
        self.assertEqual(message["From"], "Zulip <noreply@example.com>")
        self.assertEqual(message["Reply-To"], "noreply@example.com")
        self.assertEqual(message["To"], "hamlet@example.com")

    def test_event_date_and_reply_to(self) -> None:
        """The event's date (RFC 5322) and reply_to_email are used."""
        message = parse(
            self.render(
                subject="s",
                body="b",
                date="Wed, 01 Jan 2025 10:00:00 +0100",
                reply_to_email="Support <support@example.com>",
            )
        )
        self.assertEqual(message["Date"], "Wed, 01 Jan 2025 10:00:00 +0100")
        self.assertEqual(message["Reply-To"], "Support <support@example.com>")

    def test_invalid_date_is_permanent(self) -> None:
        """An unparsable date is a PermanentError."""
        with self.assertRaisesRegex(PermanentError, "date"):
            self.render(subject="s", body="b", date="next tuesday")

    def test_from_placeholders(self) -> None:
        """Zulip's NO_REPLY / TOKENIZED_NO_REPLY / SUPPORT placeholders map to the configured addresses."""
        message = self.render(subject="s", body="b", from_address="SUPPORT", from_name="Help")
        self.assertEqual(str(message["From"]), "Help <support@example.com>")
        self.assertNotIn("Reply-To", message)
        message = self.render(subject="s", body="b", from_address="TOKENIZED_NO_REPLY")
        self.assertEqual(str(message["From"]), "Zulip <noreply@example.com>")

    def test_list_headers_from_context(self) -> None:
        """unsubscribe_link gives List-Unsubscribe(-Post); realm_name + realm_url give List-Id."""
        self.write("t/list.subject.txt", "s")
        self.write("t/list.txt", "b")
        message = self.render(
            template_prefix="t/list",
            context={
                "unsubscribe_link": "https://chat.example.com/unsub/abc",
                "realm_name": "Zulip Dev",
                "realm_url": "https://chat.example.com",
            },
        )
        self.assertEqual(message["List-Unsubscribe"], "<https://chat.example.com/unsub/abc>")
        self.assertEqual(message["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        self.assertEqual(message["List-Id"], "Zulip Dev <chat.example.com>")

    def test_threading_headers(self) -> None:
        """in_reply_to and references become In-Reply-To and References."""
        message = self.render(subject="s", body="b", in_reply_to="<a@x>", references="<a@x>")
        self.assertEqual(message["In-Reply-To"], "<a@x>")
        self.assertEqual(message["References"], "<a@x>")


class EncodingTests(RenderTestCase):
    def test_non_ascii_round_trip(self) -> None:
        """Non-ASCII names, subject and bodies are encoded 7-bit and decode back intact."""
        message = self.render(
            subject="Grüße — 日本語",
            body="Hällo wörld ✓\n",
            html_body="<p>Ünïcödé ✓</p>",
            from_name="Zülip Bot",
            to_emails=["Hämlet Dänemark <hamlet@example.com>"],
        )
        wire = to_bytes(message)
        self.assertTrue(wire.isascii())
        self.assertIn(b"\r\n", wire)
        parsed = parse(message)
        self.assertEqual(parsed["Subject"], "Grüße — 日本語")
        self.assertEqual(parsed["From"].addresses[0].display_name, "Zülip Bot")
        self.assertEqual(parsed["To"].addresses[0].display_name, "Hämlet Dänemark")
        self.assertEqual(body(parsed, "plain"), "Hällo wörld ✓\n")
        self.assertEqual(body(parsed, "html"), "<p>Ünïcödé ✓</p>\n")

    def test_idn_domain(self) -> None:
        """An internationalised domain is sent in its IDNA form."""
        message = self.render(subject="s", body="b", to_emails=["user@bücher.example"])
        self.assertEqual(envelope_of(message).recipients, ("user@xn--bcher-kva.example",))

    def test_long_display_name_dropped(self) -> None:
        """A display name that makes the address longer than 320 characters is dropped (Zulip's rule)."""
        message = self.render(subject="s", body="b", to_emails=[f"{'x' * 400} <hamlet@example.com>"])
        self.assertEqual(str(message["To"]), "hamlet@example.com")


class RecipientTests(RenderTestCase):
    def test_legacy_to_email(self) -> None:
        """The legacy to_email field still works."""
        message = self.renderer.render({"subject": "s", "body": "b", "to_email": "a@example.com"}, NOW)
        self.assertEqual(envelope_of(message).recipients, ("a@example.com",))

    def test_to_user_ids_without_addresses(self) -> None:
        """to_user_ids without addresses is a PermanentError explaining why."""
        event = {"subject": "s", "body": "b", "to_user_ids": [10], "to_emails": None}
        with self.assertRaisesRegex(PermanentError, "to_user_ids needs Zulip's user directory"):
            self.renderer.render(event, NOW)

    def test_invalid_addresses(self) -> None:
        """Malformed addresses are PermanentErrors naming the address."""
        for bad in ["no-at-sign", "a@@example.com", "a@-bad-.example", "ünï@example.com", "a, b@example.com", ""]:
            with self.assertRaises(PermanentError, msg=bad):
                self.render(subject="s", body="b", to_emails=[bad])

    def test_parse_address(self) -> None:
        """Quoted display names with commas are one address."""
        address = parse_address('"Hamlet, Prince" <hamlet@example.com>', "to")
        self.assertEqual((address.display_name, address.addr_spec), ("Hamlet, Prince", "hamlet@example.com"))

    def test_envelope_and_bcc(self) -> None:
        """The envelope takes To, Cc and Bcc; the Bcc header is not sent."""
        message = self.render(subject="s", body="b")
        message["Bcc"] = "hidden@example.com"
        envelope = envelope_of(message, "bounces@example.com")
        self.assertEqual(envelope.sender, "bounces@example.com")
        self.assertEqual(envelope.recipients, ("hamlet@example.com", "hidden@example.com"))
        self.assertNotIn(b"hidden@", to_bytes(message))


class ValidateTests(TestCase):
    def test_wrong_types(self) -> None:
        """Fields of the wrong type are MalformedEventErrors."""
        base = {"template_prefix": "t/x", "to_emails": ["a@example.com"]}
        changes: list[dict[str, object]] = [
            {"to_emails": "a@example.com"},
            {"to_emails": [1]},
            {"context": []},
            {"failed_tries": True},
            {"to_user_ids": ["1"]},
            {"from_name": 3},
            {"headers": {"X-A": 1}},
            {"template_prefix": ""},
        ]
        for change in changes:
            with self.assertRaises(MalformedEventError, msg=str(change)):
                validate({**base, **change})

    def test_shape(self) -> None:
        """An event needs a template or a subject with a body, and recipients."""
        with self.assertRaises(MalformedEventError):
            validate({"to_emails": ["a@example.com"]})
        with self.assertRaises(MalformedEventError):
            validate({"subject": "s", "to_emails": ["a@example.com"]})
        with self.assertRaises(MalformedEventError):
            validate({"subject": "s", "body": "b"})
        self.assertEqual(validate({"subject": "s", "body": "b", "to_user_id": 3}).get("to_user_id"), 3)

    def test_header_injection(self) -> None:
        """Headers with line breaks or that override built headers are refused."""
        base = {"subject": "s", "body": "b", "to_emails": ["a@example.com"]}
        for headers in [{"X-A": "v\r\nBcc: x@y"}, {"To": "x@y"}, {"Bad Name": "v"}, {"X:A": "v"}]:
            with self.assertRaises(MalformedEventError, msg=str(headers)):
                validate({**base, "headers": headers})
        with self.assertRaises(MalformedEventError):
            validate({**base, "from_name": "x\nBcc: y"})


class ShippedTemplateTests(TestCase):
    def setUp(self) -> None:
        self.renderer = Renderer(shipped_template_dir(), from_address="noreply@example.com")

    def test_missed_message(self) -> None:
        """The missed-message template shows each conversation's messages, escaped except rendered_content."""
        context = {
            "user_name": "Hamlet",
            "realm_name": "Zulip Dev",
            "realm_url": "https://chat.example.com",
            "conversations": [
                {
                    "name": "#design > logo",
                    "url": "https://chat.example.com/#narrow/1",
                    "messages": [
                        {"sender": "Othello", "content": "a < b", "url": "https://chat.example.com/#m/1"},
                        {"sender": "Iago", "rendered_content": "<p><strong>bold</strong></p>"},
                    ],
                }
            ],
        }
        event = {
            "template_prefix": "zqtwisted/emails/missed_message",
            "to_emails": ["h@example.com"],
            "context": context,
        }
        message = self.renderer.render(event, NOW)
        self.assertEqual(message["Subject"], "#design > logo [Zulip Dev]")
        text = body(message, "plain")
        self.assertIn("Othello:\na < b", text)
        self.assertIn("Iago:\nbold", text)
        html = body(message, "html")
        self.assertIn("a &lt; b", html)
        self.assertIn("<p><strong>bold</strong></p>", html)
        self.assertIn("https://chat.example.com/#narrow/1", html)

    def test_missed_message_several_conversations(self) -> None:
        """With several conversations the subject counts the messages."""
        conversations = [
            {"name": "A", "messages": [{"sender": "x", "content": "1"}]},
            {"name": "B", "messages": [{"sender": "y", "content": "2"}, {"sender": "z", "content": "3"}]},
        ]
        event = {
            "template_prefix": "zqtwisted/emails/missed_message",
            "to_emails": ["h@example.com"],
            "context": {"user_name": "H", "conversations": conversations},
        }
        self.assertEqual(self.renderer.render(event, NOW)["Subject"], "3 new messages in 2 conversations")

    def test_generic(self) -> None:
        """The generic template renders subject and body (paragraphs in HTML)."""
        event = {
            "template_prefix": "zqtwisted/emails/generic",
            "to_emails": ["h@example.com"],
            "context": {"subject": "Hello", "body": "one\n\ntwo <3"},
        }
        message = self.renderer.render(event, NOW)
        self.assertEqual(message["Subject"], "Hello")
        self.assertIn("<p>two &lt;3</p>", body(message, "html"))
