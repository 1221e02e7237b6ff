"""SMTP without I/O: replies, capabilities, AUTH responses, message data, and the errors.

Everything here is a plain function or value over bytes and strings, used by
:class:`~zqtwisted.mail.esmtp_client.SMTPConnection` (the protocol) and tested on
its own.  RFC 5321 (SMTP), RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 4616 (PLAIN),
RFC 2195 (CRAM-MD5).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from zqtwisted.errors import PermanentError, TransientError
from zqtwisted.mail.render import Envelope


class SMTPConnectionError(TransientError):
    """The connection failed or dropped; ``maybe_delivered`` once the whole message was sent."""

    def __init__(self, message: str, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class SMTPUnavailable(SMTPConnectionError):
    """No usable session could be opened (connect, DNS, TLS, AUTH): every message fails alike."""


class SMTPTemporaryError(TransientError):
    """A 4xx reply: try again later."""

    def __init__(self, message: str, code: int, reply: str) -> None:
        super().__init__(message)
        self.code, self.reply = code, reply


class SMTPPermanentError(PermanentError):
    """A 5xx reply to this message (sender, recipients or content refused)."""

    def __init__(self, message: str, code: int, reply: str) -> None:
        super().__init__(message)
        self.code, self.reply = code, reply


def one_line(text: bytes | str) -> str:
    """``text`` decoded (bytes as UTF-8, errors replaced) with its whitespace runs made single spaces."""
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return " ".join(decoded.split())


def reply_error(code: int, reply: bytes | str, stage: str) -> SMTPTemporaryError | SMTPPermanentError:
    """The error for an unexpected ``code`` reply to ``stage``."""
    text = one_line(reply)
    message = f"{stage}: the SMTP server replied {code} {text}"
    if 500 <= code < 600:
        return SMTPPermanentError(message, code, text)
    return SMTPTemporaryError(message, code, text)


def all_refused(refused: Sequence[tuple[str, int, str]]) -> SMTPTemporaryError | SMTPPermanentError:
    """The error when every recipient was refused: transient if any refusal was 4xx."""
    detail = "; ".join(f"<{a}>: {c} {r}" for a, c, r in refused)
    worst = min((c for _, c, _ in refused), default=550)
    return reply_error(worst, detail, "RCPT TO (every recipient refused)")


@dataclass(frozen=True)
class SendResult:
    """A delivered message: the final reply and the recipients refused (if only some were)."""

    code: int
    reply: str
    refused: tuple[tuple[str, int, str], ...] = ()


# -- replies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) server reply: its code and the text of each line."""

    code: int
    lines: tuple[bytes, ...]

    @property
    def text(self) -> str:
        """The text of every line, on one line."""
        return one_line(b" ".join(self.lines))

    @property
    def positive(self) -> bool:
        """A 2xx reply."""
        return 200 <= self.code < 300


class ReplyReader:
    """Collects reply lines (``250-...`` continuations, then ``250 ...``) into :class:`Reply` values."""

    def __init__(self) -> None:
        self._lines: list[bytes] = []

    def feed(self, line: bytes) -> Reply | None:
        """The reply ``line`` completes, or None while it continues; ValueError on a malformed line."""
        code, separator = line[:3], line[3:4]
        if not (code.isdigit() and 200 <= int(code) < 600 and separator in (b"", b" ", b"-")):
            self._lines = []
            raise ValueError(f"malformed SMTP reply line {line[:80]!r}")
        self._lines.append(line[4:])
        if separator == b"-":
            return None
        lines, self._lines = tuple(self._lines), []
        return Reply(int(code), lines)

    @property
    def partial(self) -> bool:
        """Some lines of a multi-line reply have arrived, not its last."""
        return bool(self._lines)


def capabilities(reply: Reply) -> dict[str, str]:
    """The EHLO extensions of ``reply``, keywords upper-cased: ``{"STARTTLS": "", "AUTH": "PLAIN LOGIN"}``."""
    found: dict[str, str] = {}
    for line in reply.lines[1:]:
        words = line.decode("ascii", "replace").split(None, 1)
        if not words:
            continue
        keyword, params = words[0].upper(), words[1] if len(words) > 1 else ""
        if keyword.startswith("AUTH="):  # the pre-RFC 4954 spelling some servers still send
            keyword, params = "AUTH", f"{keyword[5:]} {params}"
        if keyword == "AUTH":
            params = f"{found.get('AUTH', '')} {params}"
        found[keyword] = " ".join(params.split())
    return found


# -- AUTH ------------------------------------------------------------------------------

AUTH_PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")

Responder = Callable[[bytes], bytes | None]
"""Given a decoded server challenge, the client's (not yet encoded) response, or None to give up."""


def choose_mechanism(offered: str) -> str | None:
    """The mechanism to use among the ``AUTH`` parameters ``offered``, by :data:`AUTH_PREFERENCE`."""
    names = set(offered.upper().split())
    return next((m for m in AUTH_PREFERENCE if m in names), None)


def auth_exchange(mechanism: str, username: str, password: str) -> tuple[bytes, Responder]:
    """The ``AUTH`` command line for ``mechanism`` and the responder to its 334 challenges."""
    user, secret = username.encode("utf-8"), password.encode("utf-8")
    if mechanism == "PLAIN":
        return b"AUTH PLAIN " + b64(b"\0" + user + b"\0" + secret), lambda challenge: None
    if mechanism == "LOGIN":
        answers: Iterator[bytes] = iter((user, secret))
        return b"AUTH LOGIN", lambda challenge: next(answers, None)
    if mechanism == "CRAM-MD5":
        return b"AUTH CRAM-MD5", lambda challenge: cram_md5(user, secret, challenge)
    raise ValueError(f"unsupported AUTH mechanism {mechanism!r}")


def cram_md5(user: bytes, secret: bytes, challenge: bytes) -> bytes:
    """RFC 2195: the user name, a space, the hex HMAC-MD5 of the challenge keyed by the password."""
    return user + b" " + hmac.new(secret, challenge, hashlib.md5).hexdigest().encode("ascii")


def b64(data: bytes) -> bytes:
    """``data`` in base64, as AUTH sends it."""
    return base64.b64encode(data)


def decode_challenge(text: bytes) -> bytes:
    """The server challenge of a 334 reply line; ValueError if it is not base64."""
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("malformed AUTH challenge") from None


# -- the envelope and the data ---------------------------------------------------------


def envelope_path(address: str) -> bytes:
    """``<address>`` for MAIL FROM / RCPT TO ("" is the null path); a 553 error if it cannot be sent."""
    if not address:
        return b"<>"
    if not address.isascii() or any(c in address for c in "<>\r\n ") or address.count("@") > 1:
        raise SMTPPermanentError(f"invalid envelope address {address!r}", 553, "invalid address")
    return b"<" + address.encode("ascii") + b">"


def wire_data(data: bytes) -> bytes:
    """``data`` with CRLF line ends, dot-stuffed, followed by the end-of-data line."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class MailTransaction:
    """One MAIL / RCPT / DATA exchange without I/O: after each reply, the next step or the outcome.

    :meth:`reply` returns the next command line, None when the message data is
    to be sent now, or the :class:`SendResult`; a refusal raises its error
    (the caller resets the session, or closes it on 421).
    """

    def __init__(self, envelope: Envelope) -> None:
        self._sender = envelope_path(envelope.sender)
        self._todo = deque((r, envelope_path(r)) for r in envelope.recipients)
        self._stage = "MAIL FROM"
        self._address = ""
        self.accepted: list[str] = []
        self.refused: list[tuple[str, int, str]] = []

    def start(self) -> bytes:
        return b"MAIL FROM:" + self._sender

    def reply(self, reply: Reply) -> bytes | SendResult | None:
        stage = self._stage
        if stage == "DATA":
            if reply.code != 354:
                raise reply_error(reply.code, reply.text, stage)
            self._stage = "end of DATA"
            return None
        if stage == "RCPT TO":
            if reply.positive:
                self.accepted.append(self._address)
            elif reply.code == 421:
                raise reply_error(reply.code, reply.text, f"RCPT TO <{self._address}>")
            else:
                self.refused.append((self._address, reply.code, reply.text))
        elif not reply.positive:
            raise reply_error(reply.code, reply.text, stage)
        elif stage == "end of DATA":
            return SendResult(reply.code, reply.text, tuple(self.refused))
        if self._todo:
            self._stage = "RCPT TO"
            self._address, path = self._todo.popleft()
            return b"RCPT TO:" + path
        if not self.accepted:
            raise all_refused(self.refused)
        self._stage = "DATA"
        return b"DATA"
