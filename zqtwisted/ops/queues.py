"""Reading the queues of a vhost without changing anything: ``rabbitmqctl`` or the management API.

Zulip's check reads ``rabbitmqctl list_queues name messages consumers``; so does
:class:`RabbitmqctlReader` (with the ready / unacknowledged split as well), on the node
of this machine.  :class:`ManagementReader` asks RabbitMQ's management HTTP API
(``GET /api/queues/{vhost}``) when ``[check] management_url`` is set, for a broker
on another machine.  Both are passive: no queue is declared, no consumer attached,
no connection opened over AMQP; each read has a deadline.

``messages`` is what Zulip's check calls the queue's size: ready plus unacknowledged
(events held in a consumer's prefetch count too).
"""

from __future__ import annotations

import json
import os
import shutil
from base64 import b64encode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from zqtwisted.config import Config, read_secret
from zqtwisted.ops.settings import CheckSettings

DEFAULT_TIMEOUT = 30.0
# cron and Nagios run with a short PATH; rabbitmqctl lives in /usr/sbin on Debian and RPM systems.
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
COLUMNS = ("name", "messages", "consumers", "messages_ready", "messages_unacknowledged")


class QueueReadError(Exception):
    """The queues could not be read (the message says why, for one line of output)."""


@dataclass(frozen=True)
class QueueCount:
    """One queue as the broker reports it."""

    name: str
    messages: int  # ready + unacknowledged: Zulip's "size"
    consumers: int
    ready: int = 0
    unacked: int = 0


class QueueReader(Protocol):
    """Lists every queue of one vhost, read-only."""

    @property
    def source(self) -> str:
        """Where the figures come from, for messages (``rabbitmqctl``, a URL)."""

    def read(self) -> Deferred[list[QueueCount]]: ...


def counts_of(queues: Sequence[QueueCount]) -> dict[str, tuple[int, int]]:
    """``{name: (messages, consumers)}``, what :mod:`zqtwisted.ops.check` judges."""
    return {q.name: (q.messages, q.consumers) for q in queues}


def broker_vhost(url: str) -> str:
    """The vhost of an AMQP URL, as pika reads it: the unquoted path, ``/`` when there is none."""
    path = urlsplit(url).path
    return unquote(path[1:]) if path not in ("", "/") else "/"


def parse_list_queues(text: str) -> list[QueueCount]:
    """The rows of ``rabbitmqctl list_queues name messages consumers messages_ready messages_unacknowledged``.

    Banner and header lines (which older versions print even with ``-q``) are skipped,
    as Zulip's regular expression skips them.
    """
    rows = []
    for line in text.splitlines():
        parts = line.rstrip("\r").split("\t")
        if len(parts) != len(COLUMNS) or not all(p.isdigit() for p in parts[1:]):
            continue
        name, messages, consumers, ready, unacked = parts[0], *map(int, parts[1:])
        rows.append(QueueCount(name, messages, consumers, ready, unacked))
    return rows


class _Collect(ProcessProtocol):
    def __init__(self, done: Deferred[tuple[bytes, bytes, int]]) -> None:
        self.done = done
        self.out: list[bytes] = []
        self.err: list[bytes] = []

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        if self.done.called:
            return
        code = 0
        if reason.check(ProcessTerminated):
            value: Any = reason.value
            code = value.exitCode if value.exitCode is not None else 128 + (value.signal or 0)
        elif not reason.check(ProcessDone):
            code = 1
        self.done.callback((b"".join(self.out), b"".join(self.err), code))


def run_command(
    reactor: Any, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> Deferred[tuple[bytes, bytes, int]]:
    """Run ``argv``; (stdout, stderr, exit code); killed and failed with QueueReadError after ``timeout``."""
    done: Deferred[tuple[bytes, bytes, int]] = Deferred()
    protocol = _Collect(done)
    try:
        process = reactor.spawnProcess(protocol, argv[0], list(argv), env=dict(env if env is not None else os.environ))
    except OSError as e:
        raise QueueReadError(f"cannot run {argv[0]}: {e.strerror or e}") from None
    timer: IDelayedCall = reactor.callLater(timeout, _expire, process, done, argv[0], timeout)

    def finished(result: tuple[bytes, bytes, int]) -> tuple[bytes, bytes, int]:
        if timer.active():
            timer.cancel()
        return result

    return done.addCallback(finished)


def _expire(process: Any, done: Deferred[tuple[bytes, bytes, int]], name: str, timeout: float) -> None:
    try:
        process.signalProcess("KILL")
    except Exception:  # noqa: BLE001 - already gone: its end is on its way
        pass
    if not done.called:
        done.errback(QueueReadError(f"{os.path.basename(name)} gave no answer within {timeout:g}s"))


def find_rabbitmqctl(command: str) -> str:
    """The path of ``command`` (a bare name is looked up on $PATH, then in the sbin directories)."""
    if os.sep in command:
        return command
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(command, path=search) or command


class RabbitmqctlReader:
    """``rabbitmqctl -q list_queues -p VHOST name messages consumers ...`` on this machine's node."""

    def __init__(self, reactor: Any, vhost: str, command: str = "rabbitmqctl", timeout: float = DEFAULT_TIMEOUT):
        self._reactor = reactor
        self.vhost = vhost
        self.command = find_rabbitmqctl(command)
        self.timeout = timeout

    @property
    def source(self) -> str:
        return "rabbitmqctl"

    def read(self) -> Deferred[list[QueueCount]]:
        argv = [self.command, "-q", "list_queues", "-p", self.vhost, *COLUMNS]
        return Deferred.fromCoroutine(self._read(argv))

    async def _read(self, argv: list[str]) -> list[QueueCount]:
        out, err, code = await run_command(self._reactor, argv, self.timeout)
        if code != 0:
            raise QueueReadError(f"rabbitmqctl list_queues failed (exit {code}): {_last_line(err or out)}")
        rows = parse_list_queues(out.decode("utf-8", "replace"))
        if not rows:
            # An unknown vhost lists nothing, like an empty one: tell them apart.
            out, err, code = await run_command(self._reactor, [self.command, "-q", "list_vhosts", "name"], self.timeout)
            if code == 0 and self.vhost not in out.decode("utf-8", "replace").splitlines():
                raise QueueReadError(f"RabbitMQ has no vhost {self.vhost!r}")
        return rows


class ManagementReader:
    """``GET {url}/api/queues/{vhost}`` of RabbitMQ's management plugin, with basic auth and a deadline."""

    def __init__(
        self, http: Any, url: str, vhost: str, user: str, password: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._http = http  # a treq HTTPClient (or treq's module functions)
        self.url = url.rstrip("/")
        self.vhost = vhost
        self._auth = b"Basic " + b64encode(f"{user}:{password}".encode())
        self.timeout = timeout

    @property
    def source(self) -> str:
        return self.url

    def read(self) -> Deferred[list[QueueCount]]:
        return Deferred.fromCoroutine(self._read())

    async def _read(self) -> list[QueueCount]:
        url = f"{self.url}/api/queues/{quote(self.vhost, safe='')}?columns={','.join(COLUMNS)}"
        try:
            response = await self._http.get(url, headers={b"Authorization": [self._auth]}, timeout=self.timeout)
            body = await response.content()
        except Exception as e:  # noqa: BLE001 - connection refused, timeout, TLS: one line for the check
            raise QueueReadError(f"management API at {self.url}: {type(e).__name__}: {e}") from None
        if response.code == 401:
            raise QueueReadError(f"management API at {self.url} refused the credentials (401)")
        if response.code == 404:
            raise QueueReadError(f"management API at {self.url}: no vhost {self.vhost!r} (404)")
        if response.code != 200:
            raise QueueReadError(f"management API at {self.url} answered {response.code}")
        try:
            items = json.loads(body)
        except ValueError:
            raise QueueReadError(f"management API at {self.url} answered with invalid JSON") from None
        if not isinstance(items, list):
            raise QueueReadError(f"management API at {self.url}: expected a list of queues")
        return [_from_api(item) for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]


def _from_api(item: Mapping[str, Any]) -> QueueCount:
    """One queue of the API; figures not yet sampled (a queue just created) count as 0."""

    def number(key: str) -> int:
        value = item.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    ready, unacked = number("messages_ready"), number("messages_unacknowledged")
    messages = number("messages") if "messages" in item else ready + unacked
    return QueueCount(item["name"], messages, number("consumers"), ready, unacked)


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def reader_for(config: Config, reactor: Any, http: Any = None) -> QueueReader:
    """The reader the configuration asks for: the management API when ``[check] management_url`` is set."""
    settings = config.section("check", CheckSettings)
    vhost = broker_vhost(config.broker.url)
    if not settings.management_url:
        return RabbitmqctlReader(reactor, vhost, settings.rabbitmqctl, settings.timeout)
    parts = urlsplit(config.broker.connection_url())
    user = settings.management_user or unquote(parts.username or "guest")
    password = read_secret(settings.management_password, settings.management_password_file, "check.management_password")
    if not settings.management_user and not password:
        password = unquote(parts.password or "guest")
    if http is None:
        import treq

        http = treq
    return ManagementReader(http, settings.management_url, vhost, user, password, settings.timeout)
