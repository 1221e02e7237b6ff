"""Message content in missed-message emails, and narrow URLs, as Zulip builds them (pure).

Follows zerver/lib/email_notifications.py (``build_message_list`` and its helpers
``relative_to_full_url``, ``fix_emojis``, ``fix_spoilers_in_html``,
``fix_spoilers_in_text``, ``add_quote_prefix_in_text``, ``change_katex_to_raw_latex``)
and zerver/lib/url_encoding.py (late 2025).  Uses lxml, as Zulip does; where Zulip
uses BeautifulSoup to put the sender's name before the first paragraph, lxml does
the same.
"""

from __future__ import annotations

import html as html_escape
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence

import lxml.html
from lxml.html import builder as e

from zqtwisted.zulip.mobile_content import change_katex_to_raw_latex

SPOILER_TITLE = "Open Zulip to see the spoiler content"
# Zulip's FENCE_RE (zerver/lib/markdown/fenced_code.py), the parts fix_spoilers_in_text reads.
FENCE_RE = re.compile(
    r"""
    (?P<fence>^(?:~{3,}|`{3,}))
    [ ]*
    (?:
        \{?\.?
        (?P<lang>[a-zA-Z0-9_+-./#]+)
        [ ]*
        (?P<header>[^ ~`][^~`]*)?
    )?
    $
    """,
    re.VERBOSE,
)
_HASH_REPLACEMENTS = {"%": ".", "(": ".28", ")": ".29", ".": ".2E"}
_NAME_SEPARATORS = set(' "%/<>`')


def encode_hash_component(s: str) -> str:
    encoded = urllib.parse.quote(s, safe="*")
    return "".join(_HASH_REPLACEMENTS.get(c, c) for c in encoded)


def encode_channel(channel_id: int, channel_name: str) -> str:
    return f"{channel_id}-{encode_hash_component(channel_name.replace(' ', '-'))}"


def encode_user_ids(user_ids: Sequence[int]) -> str:
    slug = ",".join(str(user_id) for user_id in sorted(user_ids))
    return slug + ("-group" if len(user_ids) >= 3 else "")


def encode_user_full_name_and_id(full_name: str, user_id: int) -> str:
    """``{id}-{name}``: each run of space, quote, %, /, <, >, ` and control/format characters becomes "-"."""
    out: list[str] = []
    in_run = False
    for char in full_name.strip():
        if char in _NAME_SEPARATORS or unicodedata.category(char).startswith("C"):
            if not in_run:
                out.append("-")
            in_run = True
        else:
            out.append(char)
            in_run = False
    return f"{user_id}-{''.join(out)}"


def personal_narrow_url(realm_url: str, sender_id: int, sender_full_name: str) -> str:
    return f"{realm_url}/#narrow/dm/{encode_user_full_name_and_id(sender_full_name, sender_id)}"


def direct_message_group_narrow_url(
    realm_url: str, user_id: int, user_full_name: str, display_recipient: Sequence[tuple[int, str]]
) -> str:
    """``display_recipient``: the conversation's members as (id, full name)."""
    if len(display_recipient) == 1:
        return personal_narrow_url(realm_url, user_id, user_full_name)
    if len(display_recipient) == 2:
        other_id, other_name = next(r for r in display_recipient if r[0] != user_id)
        return personal_narrow_url(realm_url, other_id, other_name)
    other_ids = [r[0] for r in display_recipient if r[0] != user_id]
    slug = encode_user_ids(other_ids)
    if len(other_ids) == 2:
        slug += "-group"
    return f"{realm_url}/#narrow/dm/{slug}"


def stream_narrow_url(realm_url: str, stream_id: int, stream_name: str) -> str:
    return f"{realm_url}/#narrow/channel/{encode_channel(stream_id, stream_name)}"


def topic_narrow_url(realm_url: str, stream_id: int, stream_name: str, topic_name: str) -> str:
    return f"{stream_narrow_url(realm_url, stream_id, stream_name)}/topic/{encode_hash_component(topic_name)}"


# -- content ---------------------------------------------------------------------------


def relative_to_full_url(fragment: lxml.html.HtmlElement, base_url: str) -> None:
    for elem, attrib, link, _pos in list(fragment.iterlinks()):
        if re.match(r"/?#narrow/", link) is not None:
            link = re.sub(r"^/?#narrow/", base_url + "/#narrow/", link)
            elem.set(attrib, link)
            if elem.get("title") is not None:
                elem.set("title", link)
    if len(fragment) == 1 and fragment[0].get("class") == "message_inline_image":
        inner = fragment[0]
        anchor = inner.find("a")
        image_link = anchor.get("href") if anchor is not None else ""
        image_title = anchor.get("title") if anchor is not None else None
        title_attr = {} if image_title is None else {"title": image_title}
        inner.clear()
        inner.tag = "p"
        inner.append(e.A(image_link, href=image_link, target="_blank", **title_attr))
    else:
        for container in fragment.find_class("message_inline_image"):
            container.drop_tree()
    fragment.make_links_absolute(base_url)


def fix_emojis(fragment: lxml.html.HtmlElement, emojiset: str, static_url: str) -> None:
    for elem in fragment.xpath(".//span[contains(concat(' ', normalize-space(@class), ' '), ' emoji ')]"):
        match = re.search(r"emoji-(?P<emoji_code>\S+)", elem.get("class") or "")
        if match is None:
            continue
        image_url = f"{static_url}generated/emoji/images-{emojiset}-64/{match.group('emoji_code')}.png"
        img = e.IMG(alt=elem.text or "", src=image_url, title=elem.get("title") or "", style="height: 20px;")
        img.tail = elem.tail
        parent = elem.getparent()
        if parent is not None:
            parent.replace(elem, img)
    for realm_emoji in fragment.xpath(".//*[contains(concat(' ', normalize-space(@class), ' '), ' emoji ')]"):
        del realm_emoji.attrib["class"]
        realm_emoji.set("style", "height: 20px;")


def fix_spoilers_in_html(fragment: lxml.html.HtmlElement) -> None:
    for spoiler in fragment.find_class("spoiler-block"):
        headers, contents = spoiler.find_class("spoiler-header"), spoiler.find_class("spoiler-content")
        if not headers:
            continue
        header = headers[0]
        header_content = header.find("p")
        if header_content is None:
            header_content = e.P()
            header.append(header_content)
        else:
            rear = header_content[-1] if len(header_content) else header_content
            if rear is header_content:
                rear.text = (rear.text or "") + " "
            else:
                rear.tail = (rear.tail or "") + " "
        header_content.append(e.SPAN(f"({SPOILER_TITLE})", **{"class": "spoiler-title"}, title=SPOILER_TITLE))
        header.drop_tag()
        for content in contents[:1]:
            content.drop_tree()


def fix_spoilers_in_text(content: str) -> str:
    output: list[str] = []
    open_fence = None
    for line in content.split("\n"):
        m = FENCE_RE.match(line)
        if m:
            fence, lang = m.group("fence"), m.group("lang")
            if lang == "spoiler":
                open_fence = fence
                output.append(line)
                output.append(f"({SPOILER_TITLE})")
            elif fence == open_fence:
                open_fence = None
                output.append(line)
        elif not open_fence:
            output.append(line)
    return "\n".join(output)


def add_quote_prefix_in_text(content: str) -> str:
    return "\n".join(f"> {line}" for line in content.split("\n"))


def fix_plaintext_image_urls(content: str) -> str:
    return re.sub(r"\[(\S*)\]\((\S*)\)", r"\2", content)


def prepend_sender_to_message(message_plain: str, message_html: str, sender: str) -> tuple[str, str]:
    """``{sender}:`` before the text, ``<b>{sender}</b>: `` at the start of the first paragraph."""
    plain = f"{sender}:\n{message_plain}"
    prefix = f"<b>{html_escape.escape(sender, quote=False)}</b>: "
    match = re.match(r"\s*<div>\s*<p>|\s*<p>", message_html)
    if match is not None:
        return plain, message_html[: match.end()] + prefix + message_html[match.end() :]
    return plain, prefix + message_html


def message_payload(
    content: str,
    rendered_content: str | None,
    realm_url: str,
    emojiset: str,
    static_url: str,
    sender: str | None = None,
) -> dict[str, str]:
    """Zulip's ``build_message_payload``: the text (quoted, full upload URLs) and the HTML."""
    plain = fix_plaintext_image_urls(content)
    plain = re.sub(r"/user_uploads/(\S*)", realm_url + r"/user_uploads/\1", plain)
    plain = fix_spoilers_in_text(plain)
    plain = add_quote_prefix_in_text(plain)
    fragment = lxml.html.fragment_fromstring(rendered_content or "", create_parent=True)
    relative_to_full_url(fragment, realm_url)
    fix_emojis(fragment, emojiset, static_url)
    fix_spoilers_in_html(fragment)
    change_katex_to_raw_latex(fragment)
    html = lxml.html.tostring(fragment, encoding="unicode")
    if sender:
        plain, html = prepend_sender_to_message(plain, html, sender)
    return {"plain": plain, "html": html}
