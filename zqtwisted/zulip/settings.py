"""The ``[zulip]`` configuration section: where Zulip's database is and how its URLs are built.

::

    [zulip]
    database = "host=127.0.0.1 dbname=zulip user=zulip"   # or postgresql://zulip@127.0.0.1/zulip
    password_file = "/etc/zqtwisted/zulip-db-password"
    schema = "zulip"
    external_host = "chat.example.com"
    version = "11.4"

Without ``database`` the consumers run in standalone mode (self-contained events).
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from zqtwisted.config import ConfigError, read_secret

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")
SCHEMES = ("https://", "http://")


def _no_hosts() -> Mapping[str, str]:
    return types.MappingProxyType({})


@dataclass(frozen=True)
class ZulipSettings:
    """Zulip mode is on when ``database`` is set."""

    # libpq URL (postgresql://user@host:port/dbname) or key=value string; never put the
    # password here: use password_file (it is never logged).
    database: str = ""
    password_file: str = ""
    # Zulip's tables live in the schema "zulip" of the database "zulip" in a real install.
    schema: str = "zulip"
    # Connections of the pool (threads of adbapi's thread pool).
    pool_min: int = 1
    pool_max: int = 5
    # Deadline of every query (the Deferred's timeout; the server's statement_timeout is
    # a little shorter, so a stuck statement really stops) and of connecting (libpq).
    query_timeout: float = 10.0
    connect_timeout: float = 5.0
    # Zulip's EXTERNAL_HOST and EXTERNAL_URI_SCHEME: realm URLs are
    # uri_scheme + subdomain + "." + external_host (the root-domain realm: external_host).
    external_host: str = ""
    uri_scheme: str = "https://"
    # Zulip's REALM_HOSTS: subdomain -> host, for realms not under external_host.
    realm_hosts: Mapping[str, str] = field(default_factory=_no_hosts)
    # Base URL of Zulip's REST API when the server is reached at another address than
    # its realms' URLs (e.g. "http://127.0.0.1:9991"); the realm's host then goes in
    # the Host header.  "" = the realm's own URL.
    api_url: str = ""
    # Zulip's version, for User-Agent: ZulipOutgoingWebhook/{version} and ZulipServer/{version}.
    version: str = ""
    # Zulip's FAKE_EMAIL_DOMAIN, for users whose realm host is not a valid email domain.
    fake_email_domain: str = ""
    # Avatars: Zulip's avatar_salt secret (zulip-secrets.conf) names uploaded avatars;
    # avatar_url_base is where they are served ("/user_avatars/" for local uploads, or
    # the S3 avatar bucket's URL).  Without the salt, uploaded avatars show the default.
    avatar_salt: str = ""
    avatar_salt_file: str = ""
    avatar_url_base: str = "/user_avatars/"
    enable_gravatar: bool = True
    default_avatar_url: str = "/static/images/default-avatar.png"
    inaccessible_avatar_url: str = "/static/images/unknown-user-avatar.png"
    # Mark a message read for the bot once its services were called (Zulip's
    # do_flag_service_bots_messages_as_processed), through the REST API.
    mark_processed_messages_read: bool = True
    # Deadline of a call to Zulip's REST API.
    api_timeout: float = 10.0
    # -- email (keys named after Zulip's settings; see docs/email.md, "Zulip mode") --
    # Zulip's templates directory (the one holding zerver/emails/, e.g.
    # "/home/zulip/deployments/current/templates"); "" = the [mail] template_dir.
    templates_dir: str = ""
    # Zulip's translations (its locale/ directory, django.mo catalogs); "" = untranslated.
    locale_dir: str = ""
    # NOREPLY_EMAIL_ADDRESS, TOKENIZED_NOREPLY_EMAIL_ADDRESS, ADD_TOKENS_TO_NOREPLY_ADDRESS
    # ("" = Zulip's defaults: noreply@ and noreply-{token}@ the external host).
    noreply_email_address: str = ""
    tokenized_noreply_email_address: str = ""
    add_tokens_to_noreply_address: bool = True
    # ZULIP_ADMINISTRATOR: the SUPPORT address and {{ support_email }} ("" = the noreply address).
    zulip_administrator: str = ""
    # PHYSICAL_ADDRESS (the footer of Zulip's emails) and INSTALLATION_NAME ("" = external_host).
    physical_address: str = ""
    installation_name: str = ""
    # STATIC_URL ("" = uri_scheme + external_host + "/static/", as Zulip computes it);
    # email images are under STATIC_URL + "images/emails".
    static_url: str = ""
    # EMAIL_GATEWAY_PATTERN (e.g. "%s@chat.example.com"): replies to missed-message
    # emails go to a per-email address of Zulip's email gateway; "" = noreply.
    email_gateway_pattern: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.database)

    def validate(self, path: str) -> None:
        if self.database and not self.database.strip():
            raise ConfigError(f"{path}.database: must not be blank")
        if "password=" in self.database.replace(" ", "") or _url_password(self.database):
            raise ConfigError(f"{path}.database: put the password in password_file, not in the connection string")
        if not _SCHEMA.match(self.schema):
            raise ConfigError(f"{path}.schema: not a PostgreSQL schema name: {self.schema!r}")
        if not 1 <= self.pool_min <= self.pool_max:
            raise ConfigError(f"{path}.pool_min/pool_max: need 1 <= pool_min <= pool_max")
        for name in ("query_timeout", "connect_timeout", "api_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {getattr(self, name)}")
        if self.uri_scheme not in SCHEMES:
            raise ConfigError(f'{path}.uri_scheme: expected "https://" or "http://", got {self.uri_scheme!r}')
        if self.enabled and not self.external_host:
            raise ConfigError(f"{path}.external_host: required with database (Zulip's EXTERNAL_HOST)")
        for name, host in (("external_host", self.external_host), *self.realm_hosts.items()):
            if host and (not isinstance(host, str) or not _HOST.match(host)):
                raise ConfigError(f"{path}.{'realm_hosts.' if name != 'external_host' else ''}{name}: not a host")
        if self.api_url:
            parts = urlsplit(self.api_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.api_url: expected an http(s):// URL, got {self.api_url!r}")
        if self.avatar_salt and self.avatar_salt_file:
            raise ConfigError(f"{path}.avatar_salt_file: give avatar_salt or avatar_salt_file, not both")
        if self.password_file:
            read_secret("", self.password_file, f"{path}.password")
        for name in ("noreply_email_address", "tokenized_noreply_email_address", "zulip_administrator"):
            value = getattr(self, name)
            if value and ("@" not in value or "\n" in value or "\r" in value):
                raise ConfigError(f"{path}.{name}: expected an email address, got {value!r}")
        if self.tokenized_noreply_email_address and "{token}" not in self.tokenized_noreply_email_address:
            raise ConfigError(f"{path}.tokenized_noreply_email_address: must contain {{token}}")
        if self.email_gateway_pattern and self.email_gateway_pattern.count("%s") != 1:
            raise ConfigError(f'{path}.email_gateway_pattern: must contain "%s" once (e.g. "%s@chat.example.com")')
        if "\n" in self.physical_address or "\r" in self.physical_address:
            raise ConfigError(f"{path}.physical_address: must be one line")
        if self.static_url and not urlsplit(self.static_url).scheme:
            raise ConfigError(f"{path}.static_url: expected an absolute URL, got {self.static_url!r}")

    def dsn(self) -> str:
        """The connection string with the password from ``password_file``; never log it."""
        if not self.password_file:
            return self.database
        password = read_secret("", self.password_file, "zulip.password")
        if "://" in self.database:
            parts = urlsplit(self.database)
            user = parts.username or ""
            host = parts.netloc.rsplit("@", 1)[-1]
            return parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}").geturl()
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{self.database} password='{escaped}'"

    def described_database(self) -> str:
        """The database for log lines: the connection string, which never holds the password."""
        return self.database

    def salt(self) -> str:
        """Zulip's avatar salt (from avatar_salt_file when given); never log it."""
        return read_secret(self.avatar_salt, self.avatar_salt_file, "zulip.avatar_salt")


def _url_password(database: str) -> bool:
    if "://" not in database:
        return False
    try:
        return urlsplit(database).password is not None
    except ValueError:
        return False
