"""Tests for zqtwisted.zulip.email_content: message content and narrow URLs as Zulip's emails show them."""

from __future__ import annotations

import lxml.html
from twisted.trial.unittest import TestCase

from zqtwisted.zulip.email_content import (
    direct_message_group_narrow_url,
    encode_user_full_name_and_id,
    fix_spoilers_in_text,
    message_payload,
    personal_narrow_url,
    relative_to_full_url,
    stream_narrow_url,
    topic_narrow_url,
)

REALM = "https://zulip.example.com"
STATIC = "https://zulip.example.com/static/"


class UrlTests(TestCase):
    def test_narrow_urls(self) -> None:
        """Personal, group DM, channel and topic narrows as zerver/lib/url_encoding.py encodes them."""
        self.assertEqual(personal_narrow_url(REALM, 9, "King  Hamlet"), f"{REALM}/#narrow/dm/9-King-Hamlet")
        self.assertEqual(encode_user_full_name_and_id('a "b"/c\u200bd', 3), "3-a-b-c-d")
        members = ((3, "Iago"), (9, "Hamlet"), (11, "Othello"))
        self.assertEqual(direct_message_group_narrow_url(REALM, 9, "Hamlet", members), f"{REALM}/#narrow/dm/3,11-group")
        self.assertEqual(direct_message_group_narrow_url(REALM, 9, "Hamlet", members[:2]), f"{REALM}/#narrow/dm/3-Iago")
        self.assertEqual(direct_message_group_narrow_url(REALM, 9, "Hamlet", ((9, "Hamlet"),)),
                         f"{REALM}/#narrow/dm/9-Hamlet")  # fmt: skip
        four = (*members, (12, "Cordelia"))
        self.assertEqual(direct_message_group_narrow_url(REALM, 9, "Hamlet", four), f"{REALM}/#narrow/dm/3,11,12-group")
        self.assertEqual(stream_narrow_url(REALM, 7, "Den mark"), f"{REALM}/#narrow/channel/7-Den-mark")
        self.assertEqual(topic_narrow_url(REALM, 7, "Denmark", "castle (1.0)%"),
                         f"{REALM}/#narrow/channel/7-Denmark/topic/castle.20.281.2E0.29.25")  # fmt: skip


class ContentTests(TestCase):
    def test_text(self) -> None:
        """Plain text: image links as URLs, uploads made absolute, spoilers hidden, every line quoted."""
        content = "see [pic](/user_uploads/1/a.png)\n```spoiler Title\nsecret\n```\nend"
        payload = message_payload(content, "<p>x</p>", REALM, "google", STATIC)
        self.assertEqual(
            payload["plain"],
            f"> see {REALM}/user_uploads/1/a.png\n> ```spoiler Title\n> (Open Zulip to see the spoiler content)\n"
            "> ```\n> end",
        )
        # As Zulip's: fences outside a spoiler are left out, their content kept.
        self.assertEqual(fix_spoilers_in_text("~~~ python\ncode\n~~~"), "code")

    def test_html(self) -> None:
        """HTML: narrow and relative links absolute, emoji as images, inline images dropped, spoilers closed."""
        rendered = (
            '<p>Hi <span class="emoji emoji-1f44d" title="+1">:+1:</span> <img class="emoji" src="/e.png" alt=":x:">'
            ' <a href="#narrow/channel/7-Denmark" title="#narrow/channel/7-Denmark">#Denmark</a>'
            ' <a href="/user_uploads/1/f.txt">f</a></p>'
            '<div class="message_inline_image"><a href="/user_uploads/1/a.png"><img src="/thumb.png"></a></div>'
            '<div class="spoiler-block"><div class="spoiler-header"><p>Title</p></div>'
            '<div class="spoiler-content"><p>secret</p></div></div>'
        )
        payload = message_payload("x", rendered, REALM, "google", STATIC, sender="Iago")
        html = payload["html"]
        self.assertIn(f'src="{STATIC}generated/emoji/images-google-64/1f44d.png"', html)
        self.assertIn(f'href="{REALM}/#narrow/channel/7-Denmark" title="{REALM}/#narrow/channel/7-Denmark"', html)
        self.assertIn(f'href="{REALM}/user_uploads/1/f.txt"', html)
        self.assertIn(f'<img src="{REALM}/e.png" alt=":x:" style="height: 20px;">', html)
        self.assertNotIn("thumb.png", html)
        self.assertNotIn("secret", html)
        self.assertIn('Title <span class="spoiler-title" title="Open Zulip to see the spoiler content">', html)
        self.assertTrue(html.startswith("<div><p><b>Iago</b>: Hi"))
        self.assertTrue(payload["plain"].startswith("Iago:\n> x"))

    def test_only_an_image_and_no_paragraph(self) -> None:
        """A message that is just an image becomes a link to it; a sender goes first when there is no <p>."""
        rendered = '<div class="message_inline_image"><a href="/user_uploads/1/a.png" title="a.png"><img></a></div>'
        html = message_payload("[a.png](/user_uploads/1/a.png)", rendered, REALM, "google", STATIC)["html"]
        self.assertIn(f'<p><a href="{REALM}/user_uploads/1/a.png" target="_blank" title="a.png">', html)
        html = message_payload("x", "<ul><li>a</li></ul>", REALM, "google", STATIC, sender="<Iago>")["html"]
        self.assertTrue(html.startswith("<b>&lt;Iago&gt;</b>: <div><ul>"))
        fragment = lxml.html.fragment_fromstring('<p><a href="/#narrow/dm/3-Iago">x</a></p>', create_parent=True)
        relative_to_full_url(fragment, REALM)
        self.assertIn(f'href="{REALM}/#narrow/dm/3-Iago"', lxml.html.tostring(fragment, encoding="unicode"))

    def test_spoiler_without_paragraph_header(self) -> None:
        """A spoiler with an empty header gets a paragraph for its title."""
        rendered = (
            '<div class="spoiler-block"><div class="spoiler-header"></div><div class="spoiler-content">s</div></div>'
        )
        html = message_payload("x", rendered, REALM, "google", STATIC)["html"]
        self.assertIn('<p><span class="spoiler-title"', html)
        self.assertNotIn(">s<", html)
