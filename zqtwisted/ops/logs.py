"""Log output through twisted.logger: human-readable or JSON lines, never a secret.

Every event passes a masking step before it is written:

- fields with secret-looking names (``password``, ``token``, ``api_key``, ...) are
  masked wherever they sit in an event's fields (:func:`zqtwisted.runtime.redact.redact_event`);
- passwords in URLs (``amqp://user:pw@host``) and ``token=...``-style query
  parameters are masked in the final text;
- every secret *value* registered at start (:func:`register_secret`,
  :func:`register_config_secrets`: the broker password, SMTP password, API keys,
  the Sentry DSN) is masked wherever it appears, tracebacks included.

Records of stdlib ``logging`` (pika uses it) at WARNING and above are bridged into
twisted.logger (:func:`bridge_stdlib_logging`), so they get the same treatment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from constantly import NamedConstant
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    InvalidLogLevelError,
    LogBeginner,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from zqtwisted.runtime.redact import MASK, QUERY_SECRET, SECRET_KEYS, URL_PASSWORD, redact_event, redact_text

MIN_SECRET_LENGTH = 4
LEARN_LIMIT = 1024
AUTH_HEADER = re.compile(
    r"(?P<key>(?:(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?:(?i:bearer|basic|token)\s+)?|\bBearer\s+))"
    r"(?P<value>[A-Za-z0-9._~+/=-]{8,})"
)


class SecretMasker:
    """Masks secret values, URL passwords and secret query parameters in text.

    Values are registered at start (the configuration's secrets) or learned: a value
    seen in a secret position (``token=...``, ``Authorization: Bearer ...``, a URL's
    password) is masked from then on wherever it appears, e.g. in the raw field a
    JSON log line carries next to its formatted text.
    """

    def __init__(self, learn_limit: int = LEARN_LIMIT) -> None:
        self._secrets: set[str] = set()
        self._learned: OrderedDict[str, None] = OrderedDict()
        self._learn_limit = learn_limit
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def register(self, *values: str | None) -> None:
        """Remember secret values; short ones (< 4 characters) would mask too much."""
        with self._lock:
            for value in values:
                self._secrets.update(_forms(value))
            self._rebuild()

    def _learn(self, value: str) -> None:
        forms = _forms(value)
        if not forms or forms <= self._secrets or value in self._learned:
            return
        with self._lock:
            self._learned[value] = None
            while len(self._learned) > self._learn_limit:
                self._learned.popitem(last=False)
            self._rebuild()

    def _rebuild(self) -> None:
        every = set(self._secrets)
        for value in self._learned:
            every.update(_forms(value))
        longest_first = sorted(every, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in longest_first)) if longest_first else None

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._learned.clear()
            self._pattern = None

    def mask(self, text: str) -> str:
        for regex, group in ((URL_PASSWORD, "password"), (QUERY_SECRET, "value"), (AUTH_HEADER, "value")):
            for match in regex.finditer(text):
                self._learn(match[group])
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = redact_text(text)
        text = QUERY_SECRET.sub(lambda m: m["key"] + MASK, text)
        return AUTH_HEADER.sub(lambda m: m["key"] + MASK, text)

    def mask_value(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string masked and secret keys hidden."""
        value = redact_event(value)
        return self._mask_strings(value)

    def _mask_strings(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self._mask_strings(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._mask_strings(v) for v in value]
        return value


def _forms(value: str | None) -> set[str]:
    """A secret as it may appear: raw, JSON-escaped, URL-quoted."""
    if not value or len(value) < MIN_SECRET_LENGTH or value == MASK:
        return set()
    forms = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value)}
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


# The process's secrets, registered once by the composition root.
SECRETS = SecretMasker()


def register_secret(*values: str | None) -> None:
    SECRETS.register(*values)


def mask_text(text: str) -> str:
    return SECRETS.mask(text)


def register_config_secrets(config: Any, masker: SecretMasker = SECRETS) -> None:
    """Register every secret of a :class:`zqtwisted.config.Config`.

    The broker URLs' passwords, and in every section the values of keys named like a
    secret (``password``, ``api_key``, ``token``, ``dsn``, ...) -- for ``*_file``
    keys, the content of the file they name.
    """
    for url in (config.broker.url, *config.broker.urls):
        password = urlsplit(url).password
        if password:
            masker.register(password, unquote(password))
    for section in [config.broker, config.paths, config.workers, *config.sections.values()]:
        if not dataclasses.is_dataclass(section):
            continue
        for f in dataclasses.fields(section):
            if not SECRET_KEYS.search(f.name):
                continue
            value = getattr(section, f.name)
            if not isinstance(value, str) or not value:
                continue
            if f.name.endswith("_file"):
                try:
                    with open(value, encoding="utf-8") as fh:
                        secret = fh.read().strip()
                except OSError:
                    continue  # the section's own reader reports it
                masker.register(secret)
                if "dsn" in f.name:
                    masker.register(urlsplit(secret).username)
            else:
                masker.register(value)
                if "dsn" in f.name:
                    masker.register(urlsplit(value).username)


def masked_event(event: dict[str, Any], masker: SecretMasker) -> dict[str, Any]:
    """A copy of a log event whose fields are masked (``log_*`` keys kept)."""
    fields = {k: v for k, v in event.items() if not k.startswith("log_")}
    clean = dict(event)
    clean.update(masker.mask_value(fields))
    return clean


@implementer(ILogObserver)
class MaskingFileObserver:
    """Formats each event, masks the text, writes it to ``out``."""

    def __init__(self, out: IO[str], formatter: Callable[[dict[str, Any]], str | None], masker: SecretMasker) -> None:
        self._out = out
        self._formatter = formatter
        self._masker = masker

    def __call__(self, event: dict[str, Any]) -> None:
        text = self._formatter(masked_event(event, self._masker))
        if not text:
            return
        self._out.write(self._masker.mask(text))
        self._out.flush()


def format_json(event: dict[str, Any], masker: SecretMasker = SECRETS) -> str | None:
    """One JSON line: twisted's ``eventAsJSON`` plus ``log_text``, every string masked."""
    event = dict(event)
    try:
        text = formatEvent(event)
    except Exception:  # noqa: BLE001 - a broken format must not lose the event
        text = str(event.get("log_format"))
    # Masked first, so that values seen in secret positions are learned before the fields.
    event["log_text"] = masker.mask(text)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        event["log_traceback"] = masker.mask(failure.getTraceback())
    level = event.get("log_level")
    if isinstance(level, NamedConstant):
        event["log_level_name"] = level.name
    loaded = json.loads(eventAsJSON(event))
    return json.dumps(masker.mask_value(loaded), sort_keys=True) + "\n"


def text_observer(out: IO[str], masker: SecretMasker = SECRETS) -> ILogObserver:
    return MaskingFileObserver(out, formatEventAsClassicLogText, masker)


def json_observer(out: IO[str], masker: SecretMasker = SECRETS) -> ILogObserver:
    """JSON lines (no record separator), one event per line."""
    return MaskingFileObserver(out, lambda event: format_json(event, masker), masker)


def make_observer(
    out: IO[str],
    json_lines: bool = False,
    level: LogLevel = LogLevel.info,
    masker: SecretMasker = SECRETS,
    levels: Mapping[str, LogLevel] | None = None,
) -> ILogObserver:
    """The process's log observer: masked, filtered at ``level`` (``levels``: another level for some namespaces)."""
    inner = json_observer(out, masker) if json_lines else text_observer(out, masker)
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    for namespace, namespace_level in (levels or {}).items():
        predicate.setLogLevelForNamespace(namespace, namespace_level)
    return FilteringLogObserver(inner, [predicate])


@implementer(ILogObserver)
class _Forward:
    """An observer to hand to twistd's ``--logger``, configured from the environment.

    ``ZQ_LOG_LEVEL`` (default ``info``); ``ZQ_LOG_FILE``: append to this file (rotate
    it with logrotate's ``copytruncate``) instead of writing to stdout.
    """

    def __init__(self, json_lines: bool) -> None:
        path = os.environ.get("ZQ_LOG_FILE")
        out: IO[str] = open(path, "a", encoding="utf-8", buffering=1) if path else sys.stdout
        try:
            level = LogLevel.levelWithName(os.environ.get("ZQ_LOG_LEVEL", "info").lower())
        except InvalidLogLevelError:
            level = LogLevel.info
        self._observer = make_observer(out, json_lines, level)

    def __call__(self, event: dict[str, Any]) -> None:
        self._observer(event)


def text_logger() -> ILogObserver:
    """For ``twistd --logger zqtwisted.ops.logs.text_logger``: masked text to stdout or ``$ZQ_LOG_FILE``."""
    bridge_stdlib_logging()
    return _Forward(json_lines=False)


def json_logger() -> ILogObserver:
    """For ``twistd --logger zqtwisted.ops.logs.json_logger``: masked JSON lines to stdout or ``$ZQ_LOG_FILE``."""
    bridge_stdlib_logging()
    return _Forward(json_lines=True)


_STDLIB_LEVELS = (
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
)


class TwistedLogHandler(logging.Handler):
    """A stdlib ``logging`` handler that re-emits records into twisted.logger."""

    def __init__(self, level: int = logging.WARNING, observer: ILogObserver | None = None) -> None:
        super().__init__(level)
        self._observer = observer

    def emit(self, record: logging.LogRecord) -> None:
        level = next((tw for std, tw in _STDLIB_LEVELS if record.levelno >= std), LogLevel.debug)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad %-format in a library's log call
            message = str(record.msg)
        fields: dict[str, Any] = {"message": message, "stdlib_logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            _, value, tb = record.exc_info
            fields["log_failure"] = Failure(value, type(value), tb)
        Logger(namespace=record.name, observer=self._observer).emit(level, "{message}", **fields)


def bridge_stdlib_logging(
    level: int = logging.WARNING, logger: logging.Logger | None = None, observer: ILogObserver | None = None
) -> logging.Handler:
    """Send stdlib records at ``level`` and above into twisted.logger (once per logger).

    ``observer`` defaults to the global log publisher.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if isinstance(handler, TwistedLogHandler):
            handler.setLevel(level)
            return handler
    handler = TwistedLogHandler(level, observer)
    target.addHandler(handler)
    if target.level == logging.NOTSET or target.level > level:
        target.setLevel(level)
    return handler


def setup_logging(
    out: IO[str],
    json_lines: bool = False,
    level: LogLevel = LogLevel.info,
    beginner: LogBeginner = globalLogBeginner,
    secrets: Iterable[str] = (),
    levels: Mapping[str, LogLevel] | None = None,
) -> ILogObserver:
    """Outside twistd (zqctl): begin logging to ``out``, masked, stdlib bridged."""
    register_secret(*secrets)
    observer = make_observer(out, json_lines, level, levels=levels)
    beginner.beginLoggingTo([observer], redirectStandardIO=False)
    bridge_stdlib_logging()
    return observer
