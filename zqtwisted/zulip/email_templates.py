"""Zulip's email templates, rendered as Zulip's ``build_email`` renders them.

A Zulip deployment's ``templates/`` directory (``[zulip] templates_dir``) holds
``zerver/emails/{name}.subject.txt``, ``.txt`` and ``.html``.  As in Zulip
(zproject/computed_settings.py, zproject/jinja2/__init__.py):

- the subject and the text part use the ``Jinja2_plaintext`` engine: no
  autoescaping, ``trim_blocks`` and ``lstrip_blocks``; the subject is stripped and
  its line breaks removed;
- the HTML part uses the ``Jinja2`` engine (autoescaping), then its CSS is inlined
  (``css_inline``, as Zulip does); a deployment that installs the compiled HTML
  instead (``zerver/emails/compiled/{name}.html``, older Zulip versions) is read
  from there when ``{name}.html`` is not found;
- both have the i18n extension with Zulip's translations for the email's language
  (``[zulip] locale_dir``: the ``django.mo`` catalogs; untranslated without them),
  and Zulip's filters ``pluralize`` and ``display_list``.

Every problem with a template is a :class:`~zqtwisted.errors.PermanentError`.
"""

from __future__ import annotations

import gettext
import os
import threading
from collections.abc import Mapping
from typing import Any

import jinja2

from zqtwisted.errors import PermanentError


def to_locale(language: str) -> str:
    """Django's ``to_locale``: "en-us" -> "en_US", "zh-hans" -> "zh_Hans"."""
    lang, _, country = language.lower().partition("-")
    if not country:
        return language[:3].lower() + language[3:]
    country, _, tail = country.partition("-")
    country = country.title() if len(country) > 2 else country.upper()
    if tail:
        country += "-" + tail
    return lang + "_" + country


def pluralize(value: Any, arg: str = "s") -> str:
    """Django's ``pluralize`` filter (one argument: the plural suffix; "y,ies": singular,plural)."""
    singular, _, plural = arg.rpartition(",") if "," in arg else ("", "", arg)
    try:
        return singular if float(value) == 1 else plural
    except (TypeError, ValueError):
        try:
            return singular if len(value) == 1 else plural
        except TypeError:
            return ""


def display_list(values: list[str], display_limit: int) -> str:
    """Zulip's ``display_list`` filter: "A", "A and B", "A, B and C", "A, B and 2 others"."""
    if len(values) == 1:
        return f"{values[0]}"
    if len(values) <= display_limit:
        return ", ".join(f"{v}" for v in values[:-1]) + f" and {values[-1]}"
    shown = ", ".join(f"{v}" for v in values[:display_limit])
    extra = len(values) - display_limit
    return shown + (f" and {extra} other" if extra == 1 else f" and {extra} others")


def inline_css(html: str) -> str:
    """Zulip's ``get_inlined_template``: ``css_inline.CSSInliner().inline(html)`` (as is without css_inline)."""
    try:
        import css_inline
    except ImportError:  # pragma: no cover - the zulip extra installs it
        return html
    try:
        return str(css_inline.CSSInliner().inline(html))
    except Exception as e:  # noqa: BLE001 - any inliner failure is a template problem
        raise PermanentError(f"could not inline the CSS of the HTML part: {e}") from None


class ZulipTemplates:
    """Renders ``{prefix}.subject.txt``, ``.txt`` and ``.html`` from a Zulip templates directory."""

    def __init__(self, templates_dir: str, locale_dir: str = "") -> None:
        self.templates_dir = templates_dir
        self.locale_dir = locale_dir
        self._loader = jinja2.FileSystemLoader(templates_dir)
        self._environments: dict[tuple[str, bool], jinja2.Environment] = {}
        self._lock = threading.Lock()

    def environment(self, language: str | None, plaintext: bool) -> jinja2.Environment:
        """The engine (``Jinja2_plaintext`` or ``Jinja2``) with the translations of ``language``."""
        key = (language or "", plaintext)
        with self._lock:
            env = self._environments.get(key)
            if env is None:
                env = self._environments[key] = self._build(language, plaintext)
        return env

    def _build(self, language: str | None, plaintext: bool) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=self._loader,
            autoescape=not plaintext,
            trim_blocks=plaintext,
            lstrip_blocks=plaintext,
            extensions=["jinja2.ext.i18n"],
            auto_reload=False,
        )
        env.filters["pluralize"] = pluralize
        env.filters["display_list"] = display_list
        translations: gettext.NullTranslations | None = None
        if language and self.locale_dir:
            translations = gettext.translation("django", self.locale_dir, [to_locale(language)], fallback=True)
        if isinstance(translations, gettext.GNUTranslations):
            env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        else:
            env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        return env

    def render(self, prefix: str, context: Mapping[str, Any], language: str | None) -> tuple[str, str, str | None]:
        """Subject (one line), text, and the HTML with its CSS inlined (None without an HTML template)."""
        text_env = self.environment(language, plaintext=True)
        subject = self._render(text_env, f"{prefix}.subject.txt", context).strip().replace("\n", "")
        text = self._render(text_env, f"{prefix}.txt", context)
        html_env = self.environment(language, plaintext=False)
        directory, name = os.path.split(prefix)
        for candidate in (f"{prefix}.html", f"{directory}/compiled/{name}.html"):
            try:
                template = html_env.get_template(candidate)
            except jinja2.TemplateNotFound:
                continue
            except jinja2.TemplateError as e:
                raise PermanentError(f"template error in {candidate}: {e}") from None
            return subject, text, inline_css(_render_template(template, context))
        return subject, text, None

    def _render(self, env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
        try:
            template = env.get_template(name)
        except jinja2.TemplateNotFound:
            raise PermanentError(f"template not found: {name} (in {self.templates_dir})") from None
        except jinja2.TemplateError as e:
            raise PermanentError(f"template error in {name}: {e}") from None
        return _render_template(template, context)


def _render_template(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except Exception as e:  # noqa: BLE001 - any failure of a template is permanent for this event
        raise PermanentError(f"template error in {template.name}: {type(e).__name__}: {e}") from None
