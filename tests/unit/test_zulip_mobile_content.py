"""Tests for zqtwisted.zulip.mobile_content: rendered HTML as push notification text."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from zqtwisted.zulip.mobile_content import (
    get_mobile_push_content,
    hex_codepoint_to_emoji,
    is_same_server_message_link,
    truncate_content,
)


class ContentTests(TestCase):
    def test_plain_paragraphs(self) -> None:
        """Markup is dropped, text kept."""
        self.assertEqual(get_mobile_push_content("<p>hello <strong>world</strong></p>"), "hello world")

    def test_emoji_and_images(self) -> None:
        """Emoji spans become Unicode; images their alt text."""
        html = '<p><span class="emoji emoji-1f44d" title="+1">:+1:</span> <img alt=":zulip:" src="/z.png"></p>'
        self.assertEqual(get_mobile_push_content(html), "\N{THUMBS UP SIGN} :zulip:")
        self.assertEqual(hex_codepoint_to_emoji("1f468-200d-1f4bb"), "\U0001f468\u200d\U0001f4bb")

    def test_ordered_list(self) -> None:
        """Ordered lists are numbered from their start."""
        html = '<ol start="3"><li>a</li><li>b</li></ol>'
        self.assertEqual(get_mobile_push_content(html), "3. a\n4. b")

    def test_spoiler(self) -> None:
        """A spoiler shows its header and an ellipsis, not its content."""
        html = (
            '<div class="spoiler-block"><div class="spoiler-header"><p>secret</p></div>'
            '<div class="spoiler-content"><p>hidden</p></div></div>'
        )
        self.assertEqual(get_mobile_push_content(html), "secret (\u2026)\n")
        empty = (
            '<div class="spoiler-block"><div class="spoiler-header"></div><div class="spoiler-content">x</div></div>'
        )
        self.assertEqual(get_mobile_push_content(empty), "(\u2026)\n")

    def test_quote_alone_is_quoted(self) -> None:
        """A message that is only a quote keeps it, as "> " lines."""
        self.assertEqual(get_mobile_push_content("<blockquote>\n<p>wise</p>\n</blockquote>"), "> wise\n")

    def test_quote_with_reply_is_collapsed(self) -> None:
        """A quote followed by a reply is collapsed to […]."""
        html = "<blockquote><p>old</p></blockquote><p>new</p>"
        self.assertEqual(get_mobile_push_content(html), "[\u2026]new")

    def test_katex(self) -> None:
        """KaTeX shows its LaTeX source between $$."""
        html = (
            '<p><span class="katex"><span class="katex-mathml"><math><semantics><mrow></mrow>'
            '<annotation encoding="application/x-tex">x^2</annotation></semantics></math></span></span> end</p>'
        )
        self.assertEqual(get_mobile_push_content(html), "$$x^2$$ end")

    def test_message_links(self) -> None:
        """Links to a message of this server are relative narrow links with near or with."""
        self.assertTrue(is_same_server_message_link("#narrow/channel/7-Denmark/topic/castle/near/12"))
        self.assertFalse(is_same_server_message_link("https://other.example.com/#narrow/near/1"))
        self.assertFalse(is_same_server_message_link("#narrow/channel/7-Denmark"))

    def test_truncate(self) -> None:
        """More than 200 characters: cut, with an ellipsis."""
        self.assertEqual(truncate_content("a" * 200), ("a" * 200, False))
        self.assertEqual(truncate_content("a" * 201), ("a" * 200 + "\u2026", True))


class CollapseTests(TestCase):
    def test_user_said_paragraph_is_collapsed_with_its_quote(self) -> None:
        """An "@user said:" line before a quote, then a reply: both collapse to one […]."""
        html = (
            '<p><span class="user-mention silent" data-user-id="10">King Hamlet</span> '
            '<a href="#narrow/channel/7-Denmark/topic/castle/near/12">said</a>:</p>'
            "<blockquote><p>old</p></blockquote><p>new</p>"
        )
        self.assertEqual(get_mobile_push_content(html), "[\u2026]new")

    def test_paragraphs_that_are_not_user_said(self) -> None:
        """A mention without a message link, or with two mentions, is plain text."""
        html = '<p><span class="user-mention">A</span> <span class="user-mention">B</span>: hi</p><p>x</p>'
        self.assertEqual(get_mobile_push_content(html), "A B: hix")
        html = '<p><span class="user-mention">A</span> <a href="https://x.example.com">said</a>:</p><p>x</p>'
        self.assertEqual(get_mobile_push_content(html), "A said:x")

    def test_comments_and_broken_katex(self) -> None:
        """HTML comments are skipped; a KaTeX span without its source is left as it is."""
        self.assertEqual(get_mobile_push_content("<p>a<!-- c -->b</p>"), "ab")
        self.assertEqual(get_mobile_push_content('<p><span class="katex">k</span></p>'), "k")
