"""The email_senders / deferred_email_senders consumers, with a fake mailer and the real runner."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import Harness
from zqtwisted.config import Config, parse_config
from zqtwisted.consumers.email_senders import (
    DeferredEmailSenderWorker,
    EmailSendingWorker,
    ImmediateEmailSenderWorker,
)
from zqtwisted.errors import MalformedEventError
from zqtwisted.mail.settings import MailSettings
from zqtwisted.mail.smtp import SMTPPermanentError, SMTPTemporaryError, SMTPUnavailable
from zqtwisted.mail.testing import FakeMailer
from zqtwisted.runtime.worker import BatchFailures, get_worker_class


def event(to: str = "hamlet@example.com", **fields: Any) -> dict[str, Any]:
    return {"subject": "Hi", "body": "Hello", "to_emails": [to], **fields}


class EmailHarness:
    """The email worker under the runner (MemoryBroker + Clock), its mailer a FakeMailer."""

    def __init__(self, test: TestCase, worker_cls: type[EmailSendingWorker] = ImmediateEmailSenderWorker) -> None:
        self.logged: list[dict[str, Any]] = []
        self.h = Harness(worker_cls, queue=worker_cls.queue_name)
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        self.mailer = FakeMailer()
        self.factory_calls: list[MailSettings] = []
        mail = MailSettings(from_address="noreply@zulip.example.com")
        config = dataclasses.replace(self.h.config, sections={"mail": mail})
        worker = self.h.worker
        assert isinstance(worker, EmailSendingWorker)
        self.worker = worker
        worker.context = dataclasses.replace(worker.context, config=config, extras={"mailer_factory": self._factory})
        worker.log = Logger(observer=self.logged.append)
        worker.start()

    def _factory(self, reactor: Any, settings: MailSettings) -> FakeMailer:
        self.factory_calls.append(settings)
        return self.mailer

    def consume(self, events: list[dict[str, Any]]) -> Any:
        return self.worker.consume_batch(events)


class WorkerDeclarationTests(TestCase):
    def test_registered_queues(self) -> None:
        """Both queues are registered as batch workers of 100 events / 1 s."""
        self.assertIs(get_worker_class("email_senders"), ImmediateEmailSenderWorker)
        self.assertIs(get_worker_class("deferred_email_senders"), DeferredEmailSenderWorker)
        for cls in (ImmediateEmailSenderWorker, DeferredEmailSenderWorker):
            self.assertEqual((cls.batch_size, cls.sleep_delay), (100, 1.0))


class ConsumeTests(TestCase):
    def test_start_and_stop(self) -> None:
        """start() builds the mailer from [mail]; stop() closes it."""
        e = EmailHarness(self)
        self.assertEqual(e.factory_calls[0].from_address, "noreply@zulip.example.com")
        self.successResultOf(e.worker.stop())
        self.assertTrue(e.mailer.closed)

    def test_batch_sent(self) -> None:
        """Every event of a batch is sent, with the configured envelope sender."""
        e = EmailHarness(self)
        result = self.successResultOf(e.consume([event(f"u{i}@example.com") for i in range(3)]))
        self.assertIsNone(result)
        self.assertEqual([m.envelope.recipients for m in e.mailer.sent], [(f"u{i}@example.com",) for i in range(3)])
        self.assertEqual({m.envelope.sender for m in e.mailer.sent}, {"noreply@zulip.example.com"})

    def test_bad_events_do_not_stop_the_others(self) -> None:
        """Render errors and refused messages are reported per event; the rest are sent."""
        e = EmailHarness(self)
        e.mailer.fail_for["refused@example.com"] = SMTPPermanentError("550 no", 550, "no")
        e.mailer.fail_for["later@example.com"] = SMTPTemporaryError("451 later", 451, "later")
        events = [
            event("a@example.com"),
            event("not an address"),
            event("refused@example.com"),
            event("later@example.com"),
            {"template_prefix": "no/such/template", "to_emails": ["b@example.com"]},
            event("c@example.com"),
        ]
        result = self.successResultOf(e.consume(events))
        assert isinstance(result, BatchFailures)
        self.assertEqual(sorted(result.failures), [1, 2, 3, 4])
        self.assertIsInstance(result.failures[2], SMTPPermanentError)
        self.assertIsInstance(result.failures[3], SMTPTemporaryError)
        self.assertEqual([m.envelope.recipients[0] for m in e.mailer.sent], ["a@example.com", "c@example.com"])

    def test_unavailable_fails_the_rest_at_once(self) -> None:
        """When the SMTP server cannot be reached, the rest of the batch fails with the same error."""
        e = EmailHarness(self)
        down = SMTPUnavailable("cannot connect")
        e.mailer.fail_next(down)
        result = self.successResultOf(e.consume([event(), event(), event()]))
        assert isinstance(result, BatchFailures)
        self.assertEqual(dict(result.failures), {0: down, 1: down, 2: down})
        self.assertEqual(e.mailer.sent, [])

    def test_cancel_stops_the_batch(self) -> None:
        """Cancelling the batch (timeout, shutdown) cancels the send in flight and sends no more."""
        e = EmailHarness(self)
        e.mailer.hold = True
        d = e.consume([event(), event("second@example.com")])
        self.assertEqual(len(e.mailer.held), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(e.mailer.cancelled, 1)
        self.assertEqual(len(e.mailer.held), 1)

    def test_validate(self) -> None:
        """validate() refuses malformed events."""
        e = EmailHarness(self)
        with self.assertRaises(MalformedEventError):
            e.worker.validate({"subject": 1, "to_emails": ["a@example.com"]})

    def test_on_give_up_log_line(self) -> None:
        """The failure handler logs Zulip's line with the exception class, secrets masked."""
        e = EmailHarness(self)
        failure = Failure(SMTPPermanentError("550 no", 550, "no"))
        e.worker.on_give_up(event(context={"password": "hunter2"}), failure, "permanent")
        (line,) = [x for x in e.logged if x.get("log_format", "").startswith("Event ")]
        self.assertEqual(line["exception"], "SMTPPermanentError")
        self.assertEqual(line["event"]["context"]["password"], "***")
        self.assertEqual(line["log_level"].name, "error")


class RunnerTests(TestCase):
    def test_transient_retried_then_delivered(self) -> None:
        """A temporary failure is retried by the runtime (failed_tries+1) and then delivered."""
        e = EmailHarness(self)
        e.mailer.fail_next(SMTPTemporaryError("451 later", 451, "later"))
        e.h.publish(event())
        e.h.advance(1)  # the batch timer
        e.h.advance(60)  # the retry backoff
        e.h.advance(1)
        self.assertEqual(len(e.mailer.sent), 1)
        self.assertEqual(e.h.dead(), [])

    def test_permanent_dead_lettered_others_acked(self) -> None:
        """A 5xx event is dead-lettered with its reply; the others in the batch are delivered."""
        e = EmailHarness(self)
        e.mailer.fail_for["bad@example.com"] = SMTPPermanentError(
            "RCPT TO: the SMTP server replied 550 user unknown", 550, "user unknown"
        )
        e.h.publish(event("a@example.com"), event("bad@example.com"), event("b@example.com"))
        e.h.advance(1)
        self.assertEqual(len(e.mailer.sent), 2)
        ((body, headers),) = e.h.dead()
        self.assertEqual(json.loads(body)["to_emails"], ["bad@example.com"])
        self.assertEqual(headers["x-zq-reason"], "permanent")
        self.assertIn("550 user unknown", headers["x-zq-message"])
        self.assertEqual(e.h.waiting(), [])
        self.assertEqual(len(self.flushLoggedErrors(SMTPPermanentError)), 1)


class DefaultMailerTests(TestCase):
    def test_file_backend_by_default(self) -> None:
        """Without [mail] the worker writes .eml files under file_dir."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        config: Config = parse_config({"mail": {"file_dir": directory}})
        h = Harness(ImmediateEmailSenderWorker, queue="email_senders")
        self.addCleanup(shutil.rmtree, h.tmp, True)
        h.worker.context = dataclasses.replace(h.worker.context, config=config)
        h.worker.start()
        assert isinstance(h.worker, EmailSendingWorker)
        self.assertIsNone(self.successResultOf(h.worker.consume_batch([event()])))
        (name,) = os.listdir(directory)
        self.assertTrue(name.endswith(".eml"))
        self.successResultOf(h.worker.stop())
