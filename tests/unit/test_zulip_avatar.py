"""Tests for zqtwisted.zulip.avatar: Zulip's avatar URLs."""

from __future__ import annotations

import hashlib

from twisted.trial.unittest import TestCase

from zqtwisted.zulip.avatar import absolute_url, avatar_url, gravatar_hash, user_avatar_hash
from zqtwisted.zulip.settings import ZulipSettings

SETTINGS = ZulipSettings(external_host="chat.example.com")


class AvatarTests(TestCase):
    def test_gravatar(self) -> None:
        """Gravatar: md5 of the lowercased delivery email, identicon, the version appended."""
        url = avatar_url(
            user_id=5, realm_id=2, email="Hamlet@Example.org", avatar_source="G", avatar_version=3, settings=SETTINGS
        )
        digest = hashlib.md5(b"hamlet@example.org").hexdigest()
        self.assertEqual(url, f"https://secure.gravatar.com/avatar/{digest}?d=identicon&version=3")
        self.assertEqual(gravatar_hash("A@B.c"), hashlib.md5(b"a@b.c").hexdigest())

    def test_medium_gravatar(self) -> None:
        """The medium size asks gravatar for 500 px."""
        url = avatar_url(
            user_id=5, realm_id=2, email="a@b.c", avatar_source="G", avatar_version=1, settings=SETTINGS, medium=True
        )
        self.assertIn("&s=500", url)

    def test_uploaded(self) -> None:
        """Uploaded: {base}{realm}/{salted sha256 prefix}.png."""
        url = avatar_url(
            user_id=5, realm_id=2, email="a@b.c", avatar_source="U", avatar_version=4, settings=SETTINGS, salt="s"
        )
        expected = hashlib.sha256(b"5:4:s").hexdigest()[:40]
        self.assertEqual(url, f"/user_avatars/2/{expected}.png")
        self.assertEqual(user_avatar_hash(5, 4, "s"), expected)

    def test_default_without_salt_or_gravatar(self) -> None:
        """No salt for an uploaded avatar, or gravatar off: the default avatar, versioned."""
        off = ZulipSettings(external_host="chat.example.com", enable_gravatar=False)
        for settings, source in ((SETTINGS, "U"), (off, "G")):
            url = avatar_url(
                user_id=5, realm_id=2, email="a@b.c", avatar_source=source, avatar_version=2, settings=settings
            )
            self.assertEqual(url, "/static/images/default-avatar.png?version=2")

    def test_absolute(self) -> None:
        """Relative avatar URLs are made absolute on the realm's URL; absolute ones stay."""
        self.assertEqual(
            absolute_url("https://z.example.com", "/user_avatars/x.png"), "https://z.example.com/user_avatars/x.png"
        )
        self.assertEqual(absolute_url("https://z.example.com", "https://g/a"), "https://g/a")
