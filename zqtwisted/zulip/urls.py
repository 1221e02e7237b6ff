"""Realm hosts and URLs as Zulip builds them, and where to reach Zulip's REST API (pure).

Zulip's ``Realm.host``: the root-domain realm (``string_id`` "") is ``EXTERNAL_HOST``
itself, another realm is ``REALM_HOSTS[subdomain]`` or ``{subdomain}.{EXTERNAL_HOST}``;
``Realm.url`` is ``EXTERNAL_URI_SCHEME + host``.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address

from zqtwisted.zulip.settings import ZulipSettings

ROOT_DOMAIN = ""


def realm_host(string_id: str, settings: ZulipSettings) -> str:
    """Zulip's ``Realm.host_for_subdomain``."""
    if string_id == ROOT_DOMAIN:
        return settings.external_host
    return settings.realm_hosts.get(string_id, f"{string_id}.{settings.external_host}")


def realm_url(string_id: str, settings: ZulipSettings) -> str:
    """Zulip's ``Realm.url``."""
    return settings.uri_scheme + realm_host(string_id, settings)


@dataclass(frozen=True)
class ApiEndpoint:
    """A URL of Zulip's REST API, and the Host header it needs (None: the URL's own host)."""

    url: str
    host: str | None = None


def api_endpoint(string_id: str, path: str, settings: ZulipSettings) -> ApiEndpoint:
    """``/api/v1/{path}`` of the realm: at its own URL, or at ``api_url`` with its host in Host."""
    suffix = "/api/v1/" + path.lstrip("/")
    if settings.api_url:
        return ApiEndpoint(settings.api_url.rstrip("/") + suffix, realm_host(string_id, settings))
    return ApiEndpoint(realm_url(string_id, settings) + suffix)


def fake_email_domain(host: str, settings: ZulipSettings) -> str:
    """Zulip's ``get_fake_email_domain``: the realm's host if it makes valid addresses."""
    if _valid_domain(host):
        return host
    return settings.fake_email_domain or settings.external_host


def fake_email(user_id: int, host: str, settings: ZulipSettings) -> str:
    """The ``user{id}@{domain}`` address Zulip shows for a user one cannot access."""
    return Address(username=f"user{user_id}", domain=fake_email_domain(host, settings)).addr_spec


def _valid_domain(host: str) -> bool:
    labels = host.split(".")
    return (
        len(labels) >= 2
        and ":" not in host
        and all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)
        and not labels[-1].isdigit()
    )
