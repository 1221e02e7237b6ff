"""Email events -> :class:`email.message.EmailMessage`: pure functions, no network.

Two event forms (see ``docs/email.md``):

- Zulip's: ``template_prefix`` + ``context``, rendered from the Jinja2 templates
  ``{template_prefix}.subject.txt``, ``.txt`` and (optional) ``.html``;
- pre-rendered: ``subject``, ``body`` and/or ``html_body``, optional ``headers``.

Recipients come from ``to_emails`` (legacy ``to_email``).  ``to_user_ids`` needs
Zulip's user table: in standalone mode such an event without addresses fails
permanently; in Zulip mode :mod:`zqtwisted.zulip.email_service` resolves them and
builds the message with :func:`assemble`.  Every problem with the content of an event is a
:class:`~zqtwisted.errors.PermanentError` (it would fail the same way on retry);
wrong field types are caught earlier by :func:`validate` as
:class:`~zqtwisted.errors.MalformedEventError`.
"""

from __future__ import annotations

import binascii
import copy
import email.policy
import email.utils
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import jinja2

from zqtwisted.errors import MalformedEventError, PermanentError

# Headers folded at 78 columns, CRLF line ends, bodies 7-bit clean (quoted-printable
# or base64), non-ASCII header text RFC 2047-encoded: no SMTP extension needed.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

# Zulip's FromAddress placeholders.
NOREPLY_PLACEHOLDERS = ("NO_REPLY", "TOKENIZED_NO_REPLY")
SUPPORT_PLACEHOLDER = "SUPPORT"

# Longest line sent unencoded (SMTP allows 998 characters).
MAX_7BIT_LINE = 900

# Amazon SES (and Zulip) drop the display name past this length.
MAX_ADDRESS_LENGTH = 320

_OPTIONAL_STR = (str, type(None))
FIELD_TYPES: Mapping[str, tuple[type, ...]] = {
    "template_prefix": (str,),
    "to_emails": (list, type(None)),
    "to_email": _OPTIONAL_STR,
    "to_user_ids": (list, type(None)),
    "to_user_id": (int, type(None)),
    "from_name": _OPTIONAL_STR,
    "from_address": _OPTIONAL_STR,
    "reply_to_email": _OPTIONAL_STR,
    "language": _OPTIONAL_STR,
    "date": _OPTIONAL_STR,
    "context": (dict, type(None)),
    "realm_id": (int, type(None)),
    "failed_tries": (int,),
    "in_reply_to": _OPTIONAL_STR,
    "references": _OPTIONAL_STR,
    "subject": (str,),
    "body": _OPTIONAL_STR,
    "html_body": _OPTIONAL_STR,
    "headers": (dict, type(None)),
}

# Headers an event's "headers" may not set: they are built from its fields.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Sender",
        "Reply-To",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    )
)
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without ':' or space
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def validate(event: Mapping[str, Any]) -> dict[str, Any]:
    """Check the types and shape of an email event; raise MalformedEventError."""
    for name, types in FIELD_TYPES.items():
        if name in event and (not isinstance(event[name], types) or isinstance(event[name], bool)):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise MalformedEventError(f"field {name!r}: expected {expected}, got {type(event[name]).__name__}")
    for name, item_type in (("to_emails", str), ("to_user_ids", int)):
        items = event.get(name) or []
        if not all(isinstance(i, item_type) and not isinstance(i, bool) for i in items):
            raise MalformedEventError(f"field {name!r}: expected a list of {item_type.__name__}")
    if "template_prefix" in event:
        if not event["template_prefix"].strip():
            raise MalformedEventError("field 'template_prefix' is empty")
    elif "subject" in event:
        if event.get("body") is None and event.get("html_body") is None:
            raise MalformedEventError("a pre-rendered event needs 'body' or 'html_body'")
    else:
        raise MalformedEventError("an email event needs 'template_prefix' or 'subject'")
    if all(event.get(k) is None for k in ("to_emails", "to_email", "to_user_ids", "to_user_id")):
        raise MalformedEventError("an email event needs 'to_emails' (or 'to_email', 'to_user_ids')")
    for name, value in (event.get("headers") or {}).items():
        if not isinstance(value, str) or not _HEADER_NAME.match(name):
            raise MalformedEventError(f"headers: {name!r} must be a header name with a string value")
        if "\r" in value or "\n" in value:
            raise MalformedEventError(f"headers: {name!r} contains a line break")
        if name.lower() in RESERVED_HEADERS:
            raise MalformedEventError(f"headers: {name!r} is built from the event's fields and cannot be set")
    for name in ("from_name", "in_reply_to", "references", "date"):
        value = event.get(name)
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            raise MalformedEventError(f"field {name!r} contains a line break")
    return dict(event)


def parse_address(value: str, field: str) -> Address:
    """One address (``"Name <local@domain>"`` or ``local@domain``); PermanentError if invalid.

    Internationalised domains are converted to their ASCII (IDNA) form; non-ASCII
    local parts would need SMTPUTF8 and are refused.
    """
    if "\r" in value or "\n" in value:
        raise PermanentError(f"{field}: invalid address {value!r} (line break)")
    header = POLICY.header_factory("To", value)
    addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
    if len(addresses) != 1 or header.defects:
        raise PermanentError(f"{field}: invalid address {value!r}")
    address: Address = addresses[0]
    local, domain = address.username, address.domain
    if not local or not domain or not local.isascii() or any(c.isspace() or ord(c) < 32 for c in local):
        raise PermanentError(f"{field}: invalid address {value!r}")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise PermanentError(f"{field}: invalid domain in address {value!r}") from None
    labels = ascii_domain.rstrip(".").split(".")
    if len(ascii_domain) > 253 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise PermanentError(f"{field}: invalid domain in address {value!r}")
    return Address(display_name=address.display_name, username=local, domain=ascii_domain)


def with_short_name(address: Address) -> Address:
    """``address`` without its display name when the encoded form is too long (Zulip's rule)."""
    encoded = email.utils.formataddr((address.display_name, address.addr_spec), charset="utf-8")
    if len(encoded) > MAX_ADDRESS_LENGTH:
        return Address(username=address.username, domain=address.domain)
    return address


def text_part(text: str | None, subtype: str, part: EmailMessage | None = None) -> EmailMessage:
    """A text/{subtype} UTF-8 part: 7bit when ASCII with short lines, else quoted-printable.

    Encoded with binascii (C) rather than the email package's pure-Python encoder,
    which is the slowest step of rendering a message.
    """
    part = part if part is not None else EmailMessage(policy=POLICY)
    body = re.sub(r"\r\n?", "\n", text or "")
    if not body.endswith("\n"):
        body += "\n"
    if body.isascii() and max(map(len, body.split("\n"))) <= MAX_7BIT_LINE:
        cte, payload = "7bit", body
    else:
        cte = "quoted-printable"
        payload = binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload)
    return part


def format_date(timestamp: float) -> str:
    """An RFC 5322 date for the epoch ``timestamp``."""
    return email.utils.format_datetime(datetime.fromtimestamp(timestamp, tz=UTC))


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of a message: MAIL FROM and RCPT TO."""

    sender: str
    recipients: tuple[str, ...]


def envelope_of(message: EmailMessage, sender: str | None = None) -> Envelope:
    """The envelope of ``message``: recipients from To/Cc/Bcc, sender from From unless given."""
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for header in message.get_all(name, []):
            recipients.extend(a.addr_spec for a in getattr(header, "addresses", ()))
    if sender is None:
        from_header = message["From"]
        from_addresses = getattr(from_header, "addresses", ())
        sender = from_addresses[0].addr_spec if from_addresses else ""
    return Envelope(sender, tuple(dict.fromkeys(recipients)))


def to_bytes(message: EmailMessage) -> bytes:
    """The wire form of ``message`` (CRLF line ends, 7-bit clean, no Bcc header)."""
    if "Bcc" in message:
        message = copy.deepcopy(message)
        del message["Bcc"]
    return message.as_bytes(policy=POLICY)


def assemble(
    *,
    subject: str,
    text: str | None,
    html: str | None,
    sender: Address,
    recipients: list[Address],
    reply_to: Address | None,
    date: str,
    message_id: str,
    headers: Mapping[str, str],
) -> EmailMessage:
    """The message: From, To, Reply-To, Subject (one line), Date, Message-ID, Zulip's
    ``X-Auto-Response-Suppress``, the extra ``headers``, and the text and/or HTML parts."""
    message = EmailMessage(policy=POLICY)
    message["From"] = with_short_name(sender)
    message["To"] = [with_short_name(a) for a in recipients]
    if reply_to is not None:
        message["Reply-To"] = reply_to
    message["Subject"] = " ".join(line.strip() for line in subject.strip().splitlines())
    message["Date"] = date
    message["Message-ID"] = message_id
    message["X-Auto-Response-Suppress"] = "All"
    for name, value in headers.items():
        del message[name]
        message[name] = value
    message["MIME-Version"] = "1.0"
    if text is not None and html is not None:
        message.make_alternative()
        message.attach(text_part(text, "plain"))
        message.attach(text_part(html, "html"))
    else:
        text_part(html if text is None else text, "html" if text is None else "plain", message)
    return message


def checked_date(value: str | None, now: float) -> str:
    """The ``Date`` header: the event's (an RFC 5322 date, else PermanentError) or ``now``."""
    if value is None:
        return format_date(now)
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise PermanentError(f"date: not an RFC 5322 date: {value!r}") from None
    return value


class Renderer:
    """Builds the message of an email event.  Reads templates, nothing else."""

    def __init__(
        self,
        template_dir: str,
        *,
        from_address: str,
        from_name: str = "Zulip",
        support_address: str = "",
        message_id_domain: str = "",
        make_message_id: Callable[[str], str] | None = None,
    ) -> None:
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        # Zulip's templates use {% trans %} / _(); render them untranslated.
        self.environment.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        self.from_address = parse_address(from_address, "from_address")
        self.from_name = from_name
        self.support_address = parse_address(support_address, "support_address") if support_address else None
        self.message_id_domain = message_id_domain or self.from_address.domain
        self._make_message_id = make_message_id or (lambda domain: email.utils.make_msgid(domain=domain))

    def render(self, event: Mapping[str, Any], now: float) -> EmailMessage:
        """The message for ``event``, dated ``now`` unless the event has a date."""
        validate(event)
        recipients = self.recipients(event)
        subject: str
        text: str | None
        html: str | None
        if "template_prefix" in event:
            subject, text, html = self.render_templates(event["template_prefix"], self.context(event))
        else:
            subject, text, html = event["subject"], event.get("body"), event.get("html_body")
        from_address = self._from_address(event.get("from_address"))
        from_name = event.get("from_name")
        if from_name is None:
            from_name = self.from_name
        reply_to_value = event.get("reply_to_email")
        reply_to: Address | None = None
        if reply_to_value is not None:
            reply_to = parse_address(reply_to_value, "reply_to_email")
        elif from_address.addr_spec == self.from_address.addr_spec:
            # Zulip: replies to a noreply email show the bare noreply address.
            reply_to = Address(username=from_address.username, domain=from_address.domain)
        return assemble(
            subject=subject,
            text=text,
            html=html,
            sender=Address(from_name, from_address.username, from_address.domain),
            recipients=recipients,
            reply_to=reply_to,
            date=self._date(event.get("date"), now),
            message_id=self._make_message_id(self.message_id_domain),
            headers=self._extra_headers(event),
        )

    def recipients(self, event: Mapping[str, Any]) -> list[Address]:
        """The To addresses of ``event`` (legacy forms included)."""
        emails: list[str] = list(event.get("to_emails") or [])
        if event.get("to_email") is not None:
            emails.append(event["to_email"])
        if not emails:
            if event.get("to_user_ids") or event.get("to_user_id") is not None:
                raise PermanentError(
                    "to_user_ids needs Zulip's user directory: set [zulip] database (Zulip mode), "
                    "or publish the event with to_emails"
                )
            raise PermanentError("the event has no recipient")
        return [parse_address(value, "to_emails") for value in emails]

    def context(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The template context: the event's ``context`` plus Zulip's standard keys."""
        support = self.support_address or self.from_address
        return {"support_email": support.addr_spec, **(event.get("context") or {})}

    def render_templates(self, prefix: str, context: Mapping[str, Any]) -> tuple[str, str, str | None]:
        """Subject, text and HTML (None without a ``.html`` template) for ``prefix``."""
        subject = self._render(f"{prefix}.subject.txt", context)
        text = self._render(f"{prefix}.txt", context)
        try:
            html_template = self.environment.get_template(f"{prefix}.html")
        except jinja2.TemplateNotFound:
            html = None
        except jinja2.TemplateError as e:
            raise PermanentError(f"template error in {prefix}.html: {e}") from None
        else:
            html = self._render_template(html_template, context)
        return subject, text, html

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            template = self.environment.get_template(name)
        except jinja2.TemplateNotFound:
            raise PermanentError(f"template not found: {name}") from None
        except jinja2.TemplateError as e:
            raise PermanentError(f"template error in {name}: {e}") from None
        return self._render_template(template, context)

    def _render_template(self, template: jinja2.Template, context: Mapping[str, Any]) -> str:
        try:
            return template.render(context)
        except Exception as e:  # noqa: BLE001 - any failure of a template is permanent for this event
            raise PermanentError(f"template error in {template.name}: {type(e).__name__}: {e}") from None

    def _from_address(self, value: str | None) -> Address:
        if value is None or value in NOREPLY_PLACEHOLDERS:
            return self.from_address
        if value == SUPPORT_PLACEHOLDER:
            return self.support_address or self.from_address
        return parse_address(value, "from_address")

    @staticmethod
    def _date(value: str | None, now: float) -> str:
        return checked_date(value, now)

    @staticmethod
    def _extra_headers(event: Mapping[str, Any]) -> dict[str, str]:
        headers: dict[str, str] = {}
        context = event.get("context") or {}
        realm_name, realm_url = context.get("realm_name"), context.get("realm_url") or context.get("realm_uri")
        if isinstance(realm_name, str) and isinstance(realm_url, str) and urlsplit(realm_url).hostname:
            headers["List-Id"] = email.utils.formataddr((realm_name, urlsplit(realm_url).hostname or ""))
        link = context.get("unsubscribe_link")
        if isinstance(link, str) and link and "\n" not in link and "\r" not in link:
            headers["List-Unsubscribe"] = f"<{link}>"
            if not context.get("remote_server_email", False):
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if event.get("in_reply_to"):
            headers["In-Reply-To"] = event["in_reply_to"]
        if event.get("references"):
            headers["References"] = event["references"]
        headers.update(event.get("headers") or {})
        return headers


def describe(message: EmailMessage) -> str:
    """A short description for log lines: subject and recipients, no body."""
    return f"{message.get('Subject', '')!s} -> {', '.join(envelope_of(message).recipients)}"
