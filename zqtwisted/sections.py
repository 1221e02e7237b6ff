"""The table of every shipped configuration section: name -> settings dataclass.

The composition root passes it to :func:`zqtwisted.config.load_config`.  It imports
settings modules only (no consumer, no sentry-sdk), so parsing a configuration file
costs no more than its schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from zqtwisted.config import CORE_SECTIONS
from zqtwisted.mail.settings import MailSettings
from zqtwisted.missedmessage.settings import MissedMessageSettings
from zqtwisted.ops.settings import CheckSettings, SentrySettings
from zqtwisted.push.settings import PushSettings
from zqtwisted.webhooks.settings import OutgoingWebhookSettings
from zqtwisted.zulip.activity_settings import UserActivitySettings
from zqtwisted.zulip.settings import ZulipSettings

SECTIONS: Mapping[str, type[Any]] = MappingProxyType(
    {
        **CORE_SECTIONS,
        "sentry": SentrySettings,
        "check": CheckSettings,
        "mail": MailSettings,
        "outgoing_webhooks": OutgoingWebhookSettings,
        "push": PushSettings,
        "missedmessage": MissedMessageSettings,
        "zulip": ZulipSettings,
        "user_activity": UserActivitySettings,
    }
)

__all__ = ["SECTIONS"]
