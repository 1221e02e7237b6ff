"""SMTP without I/O: reply parsing, EHLO capabilities, AUTH responses, and the mail transaction."""

from __future__ import annotations

import base64
from unittest import TestCase

from zqtwisted.mail.render import Envelope
from zqtwisted.mail.smtp_wire import (
    MailTransaction,
    Reply,
    ReplyReader,
    SendResult,
    SMTPPermanentError,
    SMTPTemporaryError,
    auth_exchange,
    capabilities,
    choose_mechanism,
    cram_md5,
    decode_challenge,
    envelope_path,
)


def reply(line: str) -> Reply:
    """The one-line reply ``line``."""
    parsed = ReplyReader().feed(line.encode())
    assert parsed is not None
    return parsed


class ReplyTests(TestCase):
    def test_multiline_reply(self) -> None:
        """Continuation lines are collected until the line with a space after the code."""
        reader = ReplyReader()
        self.assertIsNone(reader.feed(b"250-mail.example.com"))
        self.assertTrue(reader.partial)
        self.assertIsNone(reader.feed(b"250-SIZE 1000"))
        got = reader.feed(b"250 STARTTLS")
        self.assertEqual(got, Reply(250, (b"mail.example.com", b"SIZE 1000", b"STARTTLS")))
        self.assertFalse(reader.partial)
        self.assertEqual(reader.feed(b"221"), Reply(221, (b"",)))

    def test_malformed_lines(self) -> None:
        """A line without a 2xx-5xx code and a separator is a ValueError."""
        for line in (b"hello", b"25", b"250x", b"999 what", b"abc def"):
            with self.assertRaises(ValueError):
                ReplyReader().feed(line)

    def test_text_is_one_line(self) -> None:
        """The text of a multi-line reply is its lines joined, whitespace collapsed."""
        self.assertEqual(
            Reply(
                550,
                (
                    b"5.1.1 no such",
                    b"  user\there",
                ),
            ).text,
            "5.1.1 no such user here",
        )

    def test_capabilities(self) -> None:
        """EHLO keywords are upper-cased, the greeting line skipped, the old AUTH= spelling merged."""
        ehlo = Reply(250, (b"mail.example.com hi", b"starttls", b"AUTH PLAIN LOGIN", b"AUTH=CRAM-MD5", b"SIZE 10"))
        self.assertEqual(capabilities(ehlo), {"STARTTLS": "", "AUTH": "PLAIN LOGIN CRAM-MD5", "SIZE": "10"})


class AuthTests(TestCase):
    def test_mechanism_preference(self) -> None:
        """CRAM-MD5 is preferred, then PLAIN, then LOGIN; unknown mechanisms are ignored."""
        self.assertEqual(choose_mechanism("login plain cram-md5"), "CRAM-MD5")
        self.assertEqual(choose_mechanism("LOGIN PLAIN XOAUTH2"), "PLAIN")
        self.assertEqual(choose_mechanism("LOGIN"), "LOGIN")
        self.assertIsNone(choose_mechanism("XOAUTH2 GSSAPI"))
        self.assertIsNone(choose_mechanism(""))

    def test_plain(self) -> None:
        """AUTH PLAIN sends the credentials as its initial response and answers no challenge."""
        line, respond = auth_exchange("PLAIN", "zulip", "s3cret")
        self.assertEqual(line, b"AUTH PLAIN " + base64.b64encode(b"\0zulip\0s3cret"))
        self.assertIsNone(respond(b""))

    def test_login(self) -> None:
        """AUTH LOGIN answers two challenges (user, then password), then gives up."""
        line, respond = auth_exchange("LOGIN", "zulip", "s3cret")
        self.assertEqual(line, b"AUTH LOGIN")
        self.assertEqual([respond(b"Username:"), respond(b"Password:"), respond(b"?")], [b"zulip", b"s3cret", None])

    def test_cram_md5_rfc2195_example(self) -> None:
        """CRAM-MD5 gives the response of the RFC 2195 example."""
        challenge = b"<1896.697170952@postoffice.reston.mci.net>"
        self.assertEqual(cram_md5(b"tim", b"tanstaaftanstaaf", challenge), b"tim b913a602c7eda7a495b4e6e7334d3890")
        line, respond = auth_exchange("CRAM-MD5", "tim", "tanstaaftanstaaf")
        self.assertEqual((line, respond(challenge)), (b"AUTH CRAM-MD5", b"tim b913a602c7eda7a495b4e6e7334d3890"))

    def test_bad_challenge(self) -> None:
        """A challenge that is not base64 is a ValueError."""
        self.assertEqual(decode_challenge(b"VXNlcm5hbWU6"), b"Username:")
        with self.assertRaises(ValueError):
            decode_challenge(b"not base64!")


class TransactionTests(TestCase):
    def test_envelope_paths(self) -> None:
        """An empty sender is the null path; addresses with spaces, brackets or non-ASCII are refused."""
        self.assertEqual(envelope_path(""), b"<>")
        self.assertEqual(envelope_path("a@example.com"), b"<a@example.com>")
        for bad in ("a b@example.com", "a>@x", "hämlet@example.com", "a@b@c"):
            with self.assertRaises(SMTPPermanentError):
                envelope_path(bad)

    def test_happy_path(self) -> None:
        """MAIL, each RCPT, DATA, the data (None), then the result with the refusals."""
        t = MailTransaction(Envelope("", ("a@example.com", "b@example.com")))
        self.assertEqual(t.start(), b"MAIL FROM:<>")
        self.assertEqual(t.reply(reply("250 ok")), b"RCPT TO:<a@example.com>")
        self.assertEqual(t.reply(reply("550 unknown")), b"RCPT TO:<b@example.com>")
        self.assertEqual(t.reply(reply("251 forwarded")), b"DATA")
        self.assertIsNone(t.reply(reply("354 go")))
        self.assertEqual(t.reply(reply("250 queued")), SendResult(250, "queued", (("a@example.com", 550, "unknown"),)))

    def test_refusals(self) -> None:
        """MAIL and DATA refusals raise; every recipient refused raises, transient if any 4xx."""
        t = MailTransaction(Envelope("s@example.com", ("a@example.com",)))
        with self.assertRaises(SMTPPermanentError):
            t.reply(reply("553 sender refused"))
        t = MailTransaction(Envelope("s@example.com", ("a@example.com", "b@example.com")))
        t.reply(reply("250 ok"))
        t.reply(reply("550 no"))
        with self.assertRaises(SMTPTemporaryError):
            t.reply(reply("452 full"))
        t = MailTransaction(Envelope("s@example.com", ("a@example.com",)))
        t.reply(reply("250 ok"))
        t.reply(reply("250 ok"))
        with self.assertRaises(SMTPPermanentError):
            t.reply(reply("554 no data for you"))

    def test_421_to_rcpt_raises(self) -> None:
        """A 421 to RCPT ends the transaction at once (the server is closing)."""
        t = MailTransaction(Envelope("s@example.com", ("a@example.com", "b@example.com")))
        t.reply(reply("250 ok"))
        with self.assertRaises(SMTPTemporaryError) as caught:
            t.reply(reply("421 shutting down"))
        self.assertEqual(caught.exception.code, 421)
