"""Tests for zqtwisted.zulip.email_templates: Zulip's templates rendered as build_email renders them."""

from __future__ import annotations

import struct
from pathlib import Path

from twisted.trial.unittest import TestCase

from zqtwisted.errors import PermanentError
from zqtwisted.zulip.email_templates import ZulipTemplates, display_list, inline_css, pluralize, to_locale

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "zulip_templates"


def write_mo(path: Path, catalog: dict[str, str]) -> None:
    """A GNU gettext .mo file holding ``catalog`` (as msgfmt writes it)."""
    keys = sorted(catalog)
    ids = b"".join(k.encode() + b"\0" for k in keys)
    strs = b"".join(catalog[k].encode() + b"\0" for k in keys)
    start = 7 * 4 + 16 * len(keys)
    offsets, pos = [], 0
    for k in keys:
        offsets += [len(k.encode()), start + pos]
        pos += len(k.encode()) + 1
    str_offsets, pos = [], 0
    for k in keys:
        str_offsets += [len(catalog[k].encode()), start + len(ids) + pos]
        pos += len(catalog[k].encode()) + 1
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + 8 * len(keys), 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + struct.pack(f"{len(offsets)}i", *offsets) + struct.pack(f"{len(str_offsets)}i",
                     *str_offsets) + ids + strs)  # fmt: skip


class FilterTests(TestCase):
    def test_to_locale(self) -> None:
        """Django's to_locale: en-us -> en_US, zh-hans -> zh_Hans, de -> de."""
        self.assertEqual([to_locale(x) for x in ("en-us", "zh-hans", "de", "sr-latn-x")],
                         ["en_US", "zh_Hans", "de", "sr_Latn-x"])  # fmt: skip

    def test_pluralize_and_display_list(self) -> None:
        """pluralize and display_list behave as Zulip's filters."""
        self.assertEqual([pluralize(1), pluralize(2), pluralize([1]), pluralize(object())], ["", "s", "", ""])
        self.assertEqual((pluralize(1, "y,ies"), pluralize(3, "y,ies")), ("y", "ies"))
        self.assertEqual(display_list(["A"], 3), "A")
        self.assertEqual(display_list(["A", "B", "C"], 3), "A, B and C")
        self.assertEqual(display_list(["A", "B", "C", "D"], 2), "A, B and 2 others")
        self.assertEqual(display_list(["A", "B", "C"], 2), "A, B and 1 other")

    def test_inline_css(self) -> None:
        """A <style> block becomes style attributes (css_inline, as Zulip)."""
        self.assertIn('<p style="color: red;">', inline_css("<html><head><style>p {color: red}</style></head>"
                                                           "<body><p>x</p></body></html>"))  # fmt: skip


class RenderTests(TestCase):
    def test_zulip_layout(self) -> None:
        """Subject on one line, text without escaping, HTML from the base template with its CSS inlined."""
        templates = ZulipTemplates(str(TEMPLATES))
        context = {"device_browser": "Firefox <3", "device_os": "Linux", "realm_url": "https://z", "user_email": "a@b",
                   "support_email": "s@z", "physical_address": "1 Main St", "email_images_base_url": "https://z/i",
                   "unsubscribe_link": "https://z/u"}  # fmt: skip
        subject, text, html = templates.render("zerver/emails/notify_new_login", context, "en")
        self.assertEqual(subject, "New login from Firefox <3 on Linux")
        self.assertIn("Device: Firefox <3 on Linux.", text)
        assert html is not None
        self.assertIn("Firefox &lt;3", html)
        self.assertIn('<span class="physical-address" style="color: #666666;">1 Main St</span>', html)
        self.assertIn('src="https://z/i/email_logo.png"', html)

    def test_compiled_html_and_missing(self) -> None:
        """Without {name}.html the installed compiled/{name}.html is used; no HTML at all is a text-only email."""
        templates = ZulipTemplates(str(TEMPLATES))
        _, _, html = templates.render("zerver/emails/deactivate", {"realm_url": "https://z", "realm_name": "Z"}, None)
        assert html is not None
        self.assertIn('<a href="https://z">https://z</a>', html)
        with self.assertRaisesRegex(PermanentError, "template not found: zerver/emails/nope.subject.txt"):
            templates.render("zerver/emails/nope", {}, None)

    def test_template_errors_are_permanent(self) -> None:
        """A broken or failing template is a PermanentError naming it."""
        root = Path(self.mktemp())
        (root / "t").mkdir(parents=True)
        (root / "t" / "a.subject.txt").write_text("{% if %}")
        (root / "t" / "b.subject.txt").write_text("{{ 1 / 0 }}")
        (root / "t" / "c.subject.txt").write_text("ok")
        (root / "t" / "c.txt").write_text("ok")
        (root / "t" / "c.html").write_text("{% endblock %}")
        templates = ZulipTemplates(str(root))
        with self.assertRaisesRegex(PermanentError, "template error in t/a.subject.txt"):
            templates.render("t/a", {}, None)
        with self.assertRaisesRegex(PermanentError, "ZeroDivisionError"):
            templates.render("t/b", {}, None)
        with self.assertRaisesRegex(PermanentError, "template error in t/c.html"):
            templates.render("t/c", {}, None)

    def test_translations(self) -> None:
        """With locale_dir, {% trans %} and _() use the catalog of the email's language; others stay English."""
        locale = Path(self.mktemp())
        write_mo(locale / "de" / "LC_MESSAGES" / "django.mo", {
            "New login from %(device_browser)s on %(device_os)s": "Neue Anmeldung mit %(device_browser)s auf "
            "%(device_os)s",
            "We noticed a recent login for the following Zulip account.": "Neue Anmeldung bemerkt.",
        })  # fmt: skip
        templates = ZulipTemplates(str(TEMPLATES), str(locale))
        context = {"device_browser": "Firefox", "device_os": "Linux"}
        subject, text, _ = templates.render("zerver/emails/notify_new_login", context, "de")
        self.assertEqual(subject, "Neue Anmeldung mit Firefox auf Linux")
        self.assertTrue(text.startswith("Neue Anmeldung bemerkt."))
        subject, _, _ = templates.render("zerver/emails/notify_new_login", context, "fr")
        self.assertEqual(subject, "New login from Firefox on Linux")
