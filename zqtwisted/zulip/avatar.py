"""Avatar URLs as Zulip computes them (zerver/lib/avatar.py, avatar_hash.py), without I/O.

* ``avatar_source`` "U" (uploaded): ``{avatar_url_base}{realm_id}/{hash}.png``, the hash
  being ``sha256("{user_id}:{avatar_version}:{AVATAR_SALT}")[:40]``;
* otherwise gravatar: ``https://secure.gravatar.com/avatar/{md5(email.lower())}?d=identicon``
  (or the default avatar when gravatar is off), with ``&version={avatar_version}``.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urljoin

from zqtwisted.zulip.settings import ZulipSettings

MEDIUM_AVATAR_SIZE = 500


def gravatar_hash(email: str) -> str:
    """Zulip's ``gravatar_hash``."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def user_avatar_hash(user_id: int, version: int, salt: str) -> str:
    """Zulip's ``user_avatar_hash``: the salted name of an uploaded avatar."""
    return hashlib.sha256(f"{user_id}:{version}:{salt}".encode()).hexdigest()[:40]


def append_query(url: str, query: str) -> str:
    """Zulip's ``append_url_query_string``."""
    return url + ("&" if "?" in url else "?") + query


def avatar_url(
    *,
    user_id: int,
    realm_id: int,
    email: str,
    avatar_source: str,
    avatar_version: int,
    settings: ZulipSettings,
    salt: str = "",
    medium: bool = False,
) -> str:
    """Zulip's ``get_avatar_field`` with ``client_gravatar=False`` (``email`` is the delivery email)."""
    if avatar_source == "U" and salt:
        path = f"{realm_id}/{user_avatar_hash(user_id, avatar_version, salt)}"
        return settings.avatar_url_base + path + ("-medium.png" if medium else ".png")
    if avatar_source == "U" or not settings.enable_gravatar:
        return append_query(settings.default_avatar_url, f"version={avatar_version:d}")
    suffix = f"&s={MEDIUM_AVATAR_SIZE}" if medium else ""
    url = f"https://secure.gravatar.com/avatar/{gravatar_hash(email)}?d=identicon{suffix}"
    return append_query(url, f"version={avatar_version:d}")


def absolute_url(realm_url: str, url: str) -> str:
    """Zulip's ``absolute_avatar_url``: relative avatar URLs made absolute on the realm's URL."""
    return urljoin(realm_url, url)
