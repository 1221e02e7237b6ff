"""Email: rendering events into messages, and the backends that deliver them.

- :mod:`zqtwisted.mail.settings`: the ``[mail]`` configuration section;
- :mod:`zqtwisted.mail.render`: events -> :class:`email.message.EmailMessage` (pure);
- :mod:`zqtwisted.mail.smtp`: the SMTP transport on twisted.mail, one reused connection;
- :mod:`zqtwisted.mail.backends`: the mailers (smtp, file, log) and :func:`build_mailer`;
- :mod:`zqtwisted.mail.testing`: :class:`FakeMailer` for tests.
"""

from zqtwisted.mail.backends import FileMailer, LogMailer, Mailer, SMTPMailer, build_mailer
from zqtwisted.mail.render import Renderer, validate
from zqtwisted.mail.settings import MailSettings

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
