"""What Zulip's ``build_email`` adds to an email, from Zulip's settings (pure).

Follows zerver/lib/send_email.py (``FromAddress``, ``build_email``),
zproject/default_settings.py and zproject/computed_settings.py (late 2025):

- ``FromAddress.NOREPLY`` / ``SUPPORT`` and the placeholders ``NO_REPLY``,
  ``TOKENIZED_NO_REPLY``, ``SUPPORT`` of an event's ``from_address``;
- the context every email template gets: ``support_email``,
  ``email_images_base_url`` (``STATIC_URL + "images/emails"``, where ``STATIC_URL``
  is ``EXTERNAL_URI_SCHEME + EXTERNAL_HOST + "/static/"`` unless set) and
  ``physical_address``;
- ``List-Id``: ``formataddr((realm.name, realm.host))``;
- ``common_context(user)`` of zerver/context_processors.py (the missed-message emails).
"""

from __future__ import annotations

import secrets
from base64 import b32encode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formataddr, parseaddr
from typing import Any
from urllib.parse import urljoin

from zqtwisted.zulip.settings import ZulipSettings

NO_REPLY = "NO_REPLY"
TOKENIZED_NO_REPLY = "TOKENIZED_NO_REPLY"
SUPPORT = "SUPPORT"


def external_host_without_port(settings: ZulipSettings) -> str:
    """Zulip's ``EXTERNAL_HOST_WITHOUT_PORT`` (``deport``)."""
    host = settings.external_host
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def generate_key() -> str:
    """Zulip's ``confirmation.models.generate_key``: 24 lower-case base32 characters."""
    return b32encode(secrets.token_bytes(15)).decode().lower()


@dataclass(frozen=True)
class FromAddress:
    """Zulip's ``FromAddress`` for one server's settings."""

    noreply: str
    support: str
    tokenized_template: str
    add_tokens: bool

    @classmethod
    def from_settings(cls, settings: ZulipSettings) -> FromAddress:
        host = external_host_without_port(settings)
        noreply = parseaddr(settings.noreply_email_address or f"noreply@{host}")[1]
        support = parseaddr(settings.zulip_administrator)[1] if settings.zulip_administrator else noreply
        tokenized = parseaddr(settings.tokenized_noreply_email_address or f"noreply-{{token}}@{host}")[1]
        return cls(noreply, support, tokenized, settings.add_tokens_to_noreply_address)

    def tokenized_no_reply_address(self, make_key: Callable[[], str] = generate_key) -> str:
        if self.add_tokens:
            return self.tokenized_template.format(token=make_key())
        return self.noreply

    def resolve(self, from_address: str | None, make_key: Callable[[], str] = generate_key) -> str:
        """``build_email``'s From address for an event's ``from_address``."""
        if from_address is None:
            return self.noreply
        if from_address == TOKENIZED_NO_REPLY:
            return self.tokenized_no_reply_address(make_key)
        if from_address == NO_REPLY:
            return self.noreply
        if from_address == SUPPORT:
            return self.support
        return from_address


def static_url(settings: ZulipSettings) -> str:
    """Zulip's ``STATIC_URL``: ``urljoin(ROOT_DOMAIN_URI, "/static/")`` unless configured."""
    if settings.static_url:
        return settings.static_url if settings.static_url.endswith("/") else settings.static_url + "/"
    return urljoin(settings.uri_scheme + settings.external_host, "/static/")


def email_images_base_url(settings: ZulipSettings) -> str:
    return static_url(settings) + "images/emails"


def build_email_context(context: Mapping[str, Any], settings: ZulipSettings, addresses: FromAddress) -> dict[str, Any]:
    """The template context ``build_email`` renders with: the event's, then Zulip's keys over it."""
    return {
        **context,
        "support_email": addresses.support,
        "email_images_base_url": email_images_base_url(settings),
        "physical_address": settings.physical_address,
    }


def list_id(realm_name: str, realm_host: str) -> str:
    """``List-Id`` of a realm's emails: ``formataddr((realm.name, realm.host))``."""
    return formataddr((realm_name, realm_host))


def installation_name(settings: ZulipSettings) -> str:
    """Zulip's ``INSTALLATION_NAME`` (default: ``EXTERNAL_HOST``)."""
    return settings.installation_name or settings.external_host


def common_context(realm_url: str, realm_name: str, user_full_name: str, settings: ZulipSettings) -> dict[str, Any]:
    """Zulip's ``common_context(user)`` (zerver/context_processors.py)."""
    return {
        "realm_url": realm_url,
        "realm_name": realm_name,
        "root_domain_url": settings.uri_scheme + settings.external_host,
        "external_url_scheme": settings.uri_scheme,
        "external_host": settings.external_host,
        "user_name": user_full_name,
        "corporate_enabled": False,
    }
