"""The passive queue readers: rabbitmqctl's output, the management API, deadlines, the vhost of a URL."""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

from treq.testing import StubTreq
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Request

from zqtwisted.config import BrokerSettings, Config
from zqtwisted.ops.queues import (
    COLUMNS,
    ManagementReader,
    QueueCount,
    QueueReadError,
    RabbitmqctlReader,
    broker_vhost,
    counts_of,
    find_rabbitmqctl,
    parse_list_queues,
    reader_for,
    run_command,
)
from zqtwisted.ops.settings import CheckSettings

LISTING = (
    "Timeout: 60.0 seconds ...\n"
    "Listing queues for vhost / ...\n"
    "name\tmessages\tconsumers\tmessages_ready\tmessages_unacknowledged\n"
    "user_activity\t36\t1\t0\t36\n"
    "user_activity.failed\t2\t0\t2\t0\n"
    "outgoing_webhook_responses\t12\t0\t12\t0\n"
)


class FakeProcess:
    def __init__(self) -> None:
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class ProcessClock(Clock):
    """A Clock that 'runs' processes: each spawn answers with the next scripted (stdout, stderr, exit code)."""

    def __init__(self, answers: list[tuple[bytes, bytes, int] | None]) -> None:
        super().__init__()
        self.answers = answers
        self.spawned: list[list[str]] = []
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None) -> FakeProcess:
        self.spawned.append(args)
        process = FakeProcess()
        self.processes.append(process)
        answer = self.answers.pop(0)
        if answer is not None:  # None: the process hangs
            out, err, code = answer
            protocol.outReceived(out)
            protocol.errReceived(err)
            reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code)
            protocol.processEnded(Failure(reason))
        return process


class ParseTests(unittest.TestCase):
    def test_rows_skip_banners_and_headers(self) -> None:
        """Only the queue rows are read; messages is Zulip's ready + unacked; dotted names are kept."""
        rows = parse_list_queues(LISTING)
        self.assertEqual(
            rows,
            [
                QueueCount("user_activity", 36, 1, ready=0, unacked=36),
                QueueCount("user_activity.failed", 2, 0, ready=2, unacked=0),
                QueueCount("outgoing_webhook_responses", 12, 0, ready=12, unacked=0),
            ],
        )
        self.assertEqual(counts_of(rows)["user_activity"], (36, 1))

    def test_vhost_of_a_url(self) -> None:
        """The vhost is the URL's unquoted path, '/' when there is none (as pika reads it)."""
        self.assertEqual(broker_vhost("amqp://g:g@h:5672/%2F"), "/")
        self.assertEqual(broker_vhost("amqp://g:g@h:5672/"), "/")
        self.assertEqual(broker_vhost("amqp://h"), "/")
        self.assertEqual(broker_vhost("amqp://h/zulip%20prod"), "zulip prod")

    def test_find_rabbitmqctl(self) -> None:
        """A path is kept; a bare name is looked up on PATH and in the sbin directories."""
        self.assertEqual(find_rabbitmqctl("/opt/rabbitmq/sbin/rabbitmqctl"), "/opt/rabbitmq/sbin/rabbitmqctl")
        self.assertEqual(find_rabbitmqctl("zq-no-such-command"), "zq-no-such-command")


class RabbitmqctlReaderTests(unittest.TestCase):
    def test_reads_the_vhost(self) -> None:
        """list_queues runs quiet, on the vhost, with Zulip's columns first."""
        self.assertEqual(COLUMNS[:3], ("name", "messages", "consumers"))
        clock = ProcessClock([(LISTING.encode(), b"", 0)])
        rows = self.successResultOf(RabbitmqctlReader(clock, "/zulip", "/usr/sbin/rabbitmqctl").read())
        self.assertEqual(len(rows), 3)
        self.assertEqual(
            clock.spawned[0],
            ["/usr/sbin/rabbitmqctl", "-q", "list_queues", "-p", "/zulip", *COLUMNS],
        )

    def test_failure_is_one_line(self) -> None:
        """A non-zero exit is a QueueReadError with the last line rabbitmqctl printed."""
        clock = ProcessClock([(b"", b"Error:\nunable to perform an operation on node 'rabbit@x'\n", 69)])
        failure = self.failureResultOf(RabbitmqctlReader(clock, "/", "rabbitmqctl").read(), QueueReadError)
        self.assertEqual(
            str(failure.value),
            "rabbitmqctl list_queues failed (exit 69): unable to perform an operation on node 'rabbit@x'",
        )

    def test_unknown_vhost(self) -> None:
        """An empty listing is checked against list_vhosts: an unknown vhost is an error, an empty one is not."""
        clock = ProcessClock([(b"", b"", 0), (b"/\nother\n", b"", 0)])
        failure = self.failureResultOf(RabbitmqctlReader(clock, "nope", "rabbitmqctl").read(), QueueReadError)
        self.assertEqual(str(failure.value), "RabbitMQ has no vhost 'nope'")
        clock = ProcessClock([(b"", b"", 0), (b"/\nother\n", b"", 0)])
        self.assertEqual(self.successResultOf(RabbitmqctlReader(clock, "other", "rabbitmqctl").read()), [])

    def test_deadline(self) -> None:
        """A rabbitmqctl that hangs is killed at the deadline and the read fails saying so."""
        clock = ProcessClock([None])
        d = RabbitmqctlReader(clock, "/", "rabbitmqctl", timeout=5).read()
        self.assertNoResult(d)
        clock.advance(5)
        failure = self.failureResultOf(d, QueueReadError)
        self.assertEqual(str(failure.value), "rabbitmqctl gave no answer within 5s")
        self.assertEqual(clock.processes[0].signals, ["KILL"])

    def test_command_that_cannot_run(self) -> None:
        """A command that cannot be started is a QueueReadError naming it."""

        class NoProcesses(Clock):
            def spawnProcess(self, *args: Any, **kwargs: Any) -> None:
                raise OSError(2, "No such file or directory")

        with self.assertRaisesRegex(QueueReadError, "cannot run /nope: No such file or directory"):
            run_command(NoProcesses(), ["/nope"], 1)


class Queues(Resource):
    isLeaf = True

    def __init__(self, code: int = 200, body: Any = None) -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.requests: list[tuple[bytes, bytes | None]] = []

    def render_GET(self, request: Request) -> bytes:
        self.requests.append((request.uri, request.getHeader(b"authorization")))
        request.setResponseCode(self.code)
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


class ManagementReaderTests(unittest.TestCase):
    def read(self, resource: Queues) -> Any:
        reader = ManagementReader(StubTreq(resource), "http://127.0.0.1:15672/", "/", "monitor", "s3cret")
        return reader.read()

    def test_reads_queues_with_basic_auth(self) -> None:
        """GET /api/queues/%2F with the columns and basic auth; figures not sampled yet count as 0."""
        resource = Queues(
            body=[
                {
                    "name": "email_senders",
                    "messages": 7,
                    "messages_ready": 5,
                    "messages_unacknowledged": 2,
                    "consumers": 1,
                },
                {"name": "fresh"},
                {"name": 3},
            ]
        )
        rows = self.successResultOf(self.read(resource))
        self.assertEqual(rows, [QueueCount("email_senders", 7, 1, 5, 2), QueueCount("fresh", 0, 0, 0, 0)])
        uri, auth = resource.requests[0]
        self.assertTrue(uri.startswith(b"/api/queues/%2F?columns=name,messages,consumers"))
        self.assertEqual(auth, b"Basic " + b64encode(b"monitor:s3cret"))

    def test_errors_are_one_line(self) -> None:
        """401, 404, another status, invalid JSON or not a list: a QueueReadError saying which."""
        cases = {
            (401, b"{}"): "refused the credentials (401)",
            (404, b"{}"): "no vhost '/' (404)",
            (500, b"{}"): "answered 500",
            (200, b"<html>"): "invalid JSON",
            (200, b"{}"): "expected a list of queues",
        }
        for (code, body), text in cases.items():
            failure = self.failureResultOf(self.read(Queues(code, body)), QueueReadError)
            self.assertIn(text, str(failure.value))

    def test_unreachable(self) -> None:
        """A connection error is a QueueReadError naming the API."""

        class Down:
            def get(self, *args: Any, **kwargs: Any) -> Any:
                raise ConnectionRefusedError("refused")

        failure = self.failureResultOf(ManagementReader(Down(), "http://127.0.0.1:1", "/", "u", "p").read())
        self.assertIn("management API at http://127.0.0.1:1: ConnectionRefusedError", str(failure.value))


class ReaderForTests(unittest.TestCase):
    def test_rabbitmqctl_by_default(self) -> None:
        """Without management_url the check reads rabbitmqctl, on the broker URL's vhost."""
        config = Config(broker=BrokerSettings(url="amqp://g:g@127.0.0.1/zulip"))
        reader = reader_for(config, Clock())
        assert isinstance(reader, RabbitmqctlReader)
        self.assertEqual((reader.vhost, reader.source), ("zulip", "rabbitmqctl"))

    def test_management_api_credentials(self) -> None:
        """With management_url: its own user and password, else the broker URL's."""
        config = Config(
            broker=BrokerSettings(url="amqp://zulip:pw@127.0.0.1/%2F"),
            sections={"check": CheckSettings(management_url="http://127.0.0.1:15672")},
        )
        reader = reader_for(config, Clock(), http=object())
        assert isinstance(reader, ManagementReader)
        self.assertEqual(reader._auth, b"Basic " + b64encode(b"zulip:pw"))
        self.assertEqual(reader.source, "http://127.0.0.1:15672")
        config = config.replace(
            sections={
                "check": CheckSettings(
                    management_url="http://127.0.0.1:15672", management_user="mon", management_password="x1"
                )
            }
        )
        reader = reader_for(config, Clock(), http=object())
        assert isinstance(reader, ManagementReader)
        self.assertEqual(reader._auth, b"Basic " + b64encode(b"mon:x1"))
