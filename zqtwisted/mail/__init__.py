"""Email: rendering events into messages, and the backends that deliver them.

- :mod:`zqtwisted.mail.settings`: the ``[mail]`` configuration section;
- :mod:`zqtwisted.mail.render`: events -> :class:`email.message.EmailMessage` (pure);
- :mod:`zqtwisted.mail.smtp`: the SMTP transport on twisted.mail, one reused connection;
- :mod:`zqtwisted.mail.backends`: the mailers (smtp, file, log) and :func:`build_mailer`;
- :mod:`zqtwisted.mail.testing`: :class:`FakeMailer` for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zqtwisted.mail.settings import MailSettings

if TYPE_CHECKING:
    from zqtwisted.mail.backends import FileMailer, LogMailer, Mailer, SMTPMailer, build_mailer
    from zqtwisted.mail.render import Renderer, validate

# Imported on first use: the table of configuration sections imports zqtwisted.mail.settings,
# which runs this file, and a process without an email queue need not load Jinja2 and the SMTP client.
_LAZY = {
    "FileMailer": "zqtwisted.mail.backends",
    "LogMailer": "zqtwisted.mail.backends",
    "Mailer": "zqtwisted.mail.backends",
    "SMTPMailer": "zqtwisted.mail.backends",
    "build_mailer": "zqtwisted.mail.backends",
    "Renderer": "zqtwisted.mail.render",
    "validate": "zqtwisted.mail.render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FileMailer",
    "LogMailer",
    "MailSettings",
    "Mailer",
    "Renderer",
    "SMTPMailer",
    "build_mailer",
    "validate",
]
