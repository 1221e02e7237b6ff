"""Zulip's ``get_mobile_push_content``: a message's rendered HTML as the text of a push notification.

Follows zerver/lib/push_notifications.py (late 2025): emoji as Unicode, images by
their alt text, ordered lists numbered, spoilers as "header (…)", quotes as "> "
lines, KaTeX as its LaTeX source between ``$$``, and a message mixing quotes with
other text has its quotes (and "@user said:" lines) collapsed to "[…]".  Uses lxml,
as Zulip does (the ``zulip`` extra installs it), imported when a notification is first
built in Zulip mode: a process that never builds one does without its 5 MB.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import lxml.html

MAX_CONTENT_CHARS = 200
ELLIPSIS = "\u2026"


def truncate_content(content: str) -> tuple[str, bool]:
    """Zulip's ``truncate_content``: at most 200 characters, then "…"."""
    if len(content) <= MAX_CONTENT_CHARS:
        return content, False
    return content[:MAX_CONTENT_CHARS] + ELLIPSIS, True


def hex_codepoint_to_emoji(code: str) -> str:
    """Zulip's ``hex_codepoint_to_emoji``: "1f44d" -> 👍, "1f468-200d-1f4bb" -> 👨‍💻."""
    return "".join(chr(int(part, 16)) for part in code.split("-"))


def is_same_server_message_link(url: str) -> bool:
    """A link to a message of this server: relative, with a ``#narrow/.../near/`` (or ``with``) fragment."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return False
    components = parts.fragment.split("/")
    return components[0] == "narrow" and ("near" in components or "with" in components)


def change_katex_to_raw_latex(fragment: lxml.html.HtmlElement) -> None:
    """Replace each rendered KaTeX span by ``$$<its LaTeX source>$$``."""
    import lxml.html

    for span in fragment.xpath(".//span[@class='katex']"):
        annotations = span.xpath(".//annotation[@encoding='application/x-tex']")
        if not annotations:
            continue
        tail = span.tail
        latex = lxml.html.Element("span")
        latex.text = f"$${annotations[0].text or ''}$$"
        parent = span.getparent()
        if parent is None:
            continue
        parent.replace(span, latex)
        latex.tail = tail


def get_mobile_push_content(rendered_content: str) -> str:
    """The plain text of a notification for ``rendered_content``."""
    import lxml.html

    def get_text(elem: lxml.html.HtmlElement) -> str:
        classes = elem.get("class", "")
        if "emoji" in classes:
            match = re.search(r"emoji-(?P<emoji_code>\S+)", classes)
            if match:
                return hex_codepoint_to_emoji(match.group("emoji_code"))
        if elem.tag == "img":
            return str(elem.get("alt", ""))
        if elem.tag == "blockquote":
            return ""
        return str(elem.text or "")

    def format_as_quote(quote_text: str) -> str:
        return "".join(f"> {line}\n" for line in quote_text.splitlines() if line)

    def render_olist(ol: lxml.html.HtmlElement) -> str:
        items = []
        counter = int(ol.get("start")) if ol.get("start") else 1
        nested_levels = sum(1 for _ in ol.iterancestors("ol"))
        indent = ("\n" + "  " * nested_levels) if nested_levels else ""
        for li in ol:
            items.append(indent + str(counter) + ". " + process(li).strip())
            counter += 1
        return "\n".join(items)

    def render_spoiler(elem: lxml.html.HtmlElement) -> str:
        headers = elem.find_class("spoiler-header")
        text = process(headers[0]).strip() if headers else ""
        if len(text) == 0:
            return f"({ELLIPSIS})\n"
        return f"{text} ({ELLIPSIS})\n"

    def process(elem: lxml.html.HtmlElement) -> str:
        if not isinstance(elem.tag, str):  # a comment or processing instruction
            return str(elem.tail or "")
        if elem.tag == "ol":
            return render_olist(elem)
        if "spoiler-block" in elem.get("class", ""):
            return render_spoiler(elem)
        plain_text = get_text(elem)
        sub_text = "".join(process(child) for child in elem)
        if elem.tag == "blockquote":
            sub_text = format_as_quote(sub_text)
        return plain_text + sub_text + str(elem.tail or "")

    def is_user_said_paragraph(element: lxml.html.HtmlElement) -> bool:
        mentions = element.find_class("user-mention")
        if len(mentions) != 1:
            return False
        links = [a for a in element.xpath(".//a[@href]") if is_same_server_message_link(a.get("href"))]
        if len(links) != 1:
            return False
        remaining = element.text_content().replace(mentions[0].text_content(), "").replace(links[0].text_content(), "")
        return bool(remaining.strip() == ":")

    def potentially_collapse_quotes(element: lxml.html.HtmlElement) -> None:
        children = element.getchildren()
        collapsible = [child.tag == "blockquote" or is_user_said_paragraph(child) for child in children]
        if all(collapsible) or not any(collapsible):
            return
        collapse_element = lxml.html.Element("p")
        collapse_element.text = f"[{ELLIPSIS}]"
        for index, child in enumerate(children):
            if collapsible[index]:
                if index > 0 and collapsible[index - 1]:
                    child.drop_tree()
                else:
                    child.getparent().replace(child, collapse_element)

    elem = lxml.html.fragment_fromstring(rendered_content or "", create_parent=True)
    change_katex_to_raw_latex(elem)
    potentially_collapse_quotes(elem)
    return process(elem)
