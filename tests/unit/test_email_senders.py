"""The email_senders / deferred_email_senders consumers, with a fake mailer and the real runner."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import types
from email.message import EmailMessage
from typing import Any, cast

from twisted.internet.defer import CancelledError
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import Harness
from tests.resource_fakes import memory_resources
from zqtwisted.config import Config, parse_config
from zqtwisted.consumers.email_senders import (
    SPECS,
    DeferredEmailSenderWorker,
    EmailSendingWorker,
    ImmediateEmailSenderWorker,
)
from zqtwisted.errors import MalformedEventError
from zqtwisted.mail.backends import FileMailer
from zqtwisted.mail.settings import MailSettings
from zqtwisted.mail.smtp import SMTPPermanentError, SMTPTemporaryError, SMTPUnavailable
from zqtwisted.mail.testing import FakeMailer
from zqtwisted.runtime.consumer import BatchFailures, LoopQueueProcessingWorker, WorkerContext
from zqtwisted.sections import SECTIONS
from zqtwisted.zulip.pool import DatabaseUnavailable


def event(to: str = "hamlet@example.com", **fields: Any) -> dict[str, Any]:
    return {"subject": "Hi", "body": "Hello", "to_emails": [to], **fields}


class EmailHarness:
    """The email worker under the runner (MemoryBroker + Clock), its mailer a FakeMailer."""

    def __init__(self, test: TestCase, worker_cls: type[EmailSendingWorker] = ImmediateEmailSenderWorker) -> None:
        self.logged: list[dict[str, Any]] = []
        self.mailer = FakeMailer()
        self.settings = MailSettings(from_address="noreply@zulip.example.com")
        queue = {ImmediateEmailSenderWorker: "email_senders", DeferredEmailSenderWorker: "deferred_email_senders"}
        self.h = Harness(
            worker_cls,
            queue=queue[worker_cls],
            build=lambda context: worker_cls(context, settings=self.settings, mailer=self.mailer),
        )
        test.addCleanup(shutil.rmtree, self.h.tmp, True)
        worker = self.h.worker
        assert isinstance(worker, EmailSendingWorker)
        self.worker = worker
        worker.log = Logger(observer=cast(ILogObserver, self.logged.append))
        worker.start()

    def consume(self, events: list[dict[str, Any]]) -> Any:
        return self.worker.consume_batch(events)


class DeclarationTests(TestCase):
    def test_specs(self) -> None:
        """Both queues are declared as batch workers of 100 events / 1 s, with the [mail] section."""
        specs = {spec.queue: spec for spec in SPECS}
        self.assertIs(specs["email_senders"].worker, ImmediateEmailSenderWorker)
        self.assertIs(specs["deferred_email_senders"].worker, DeferredEmailSenderWorker)
        for spec in SPECS:
            self.assertTrue(spec.batched)
            self.assertEqual((spec.section, spec.settings), ("mail", MailSettings))
            assert issubclass(spec.worker, LoopQueueProcessingWorker)
            self.assertEqual((spec.worker.batch_size, spec.worker.sleep_delay), (100, 1.0))

    def test_specs_build_workers_over_one_shared_mailer(self) -> None:
        """Each spec builds its worker from the shared resources; both send through one mailer, closed with them."""
        resources, reactor, publisher = memory_resources()
        workers = [
            spec.build(WorkerContext(spec.queue, reactor, publisher), MailSettings(), resources) for spec in SPECS
        ]
        assert all(isinstance(w, EmailSendingWorker) for w in workers)
        first, second = cast(list[EmailSendingWorker], workers)
        self.assertIsInstance(first.mailer, FileMailer)  # [mail] backend defaults to "file"
        self.assertIs(first.mailer, second.mailer)
        self.assertIs(resources.mailer(), first.mailer)
        closing = resources.close()
        reactor.advance(0)
        self.successResultOf(closing)


class ConsumeTests(TestCase):
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
        events: list[dict[str, Any]] = [
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
        """Without [mail] backend the worker built by its spec writes .eml files under file_dir."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        config = parse_config({"mail": {"file_dir": directory}}, SECTIONS)
        resources, reactor, publisher = memory_resources(config)
        (spec,) = [s for s in SPECS if s.queue == "email_senders"]
        worker = spec.build(
            WorkerContext(spec.queue, reactor, publisher), config.section("mail", MailSettings), resources
        )
        assert isinstance(worker, EmailSendingWorker)
        worker.start()
        self.assertIsNone(self.successResultOf(worker.consume_batch([event()])))
        (name,) = os.listdir(directory)
        self.assertTrue(name.endswith(".eml"))
        closing = resources.close()
        reactor.advance(0)
        self.successResultOf(closing)


class ZulipModeTests(TestCase):
    """Zulip mode: the spec builds the worker with Zulip's build_email over the shared database."""

    def zulip_config(self) -> Any:
        from tests.zulip_fakes import SETTINGS

        return dataclasses.replace(SETTINGS, templates_dir="/srv/zulip/templates")

    def test_specs_build_zulip_mode(self) -> None:
        """With [zulip] database both workers get a Zulip builder over the one shared database."""
        zulip = self.zulip_config()
        resources, reactor, publisher = memory_resources(Config(sections=types.MappingProxyType({"zulip": zulip})))
        workers = cast(
            list[EmailSendingWorker],
            [spec.build(WorkerContext(spec.queue, reactor, publisher), MailSettings(), resources) for spec in SPECS],
        )
        for worker in workers:
            assert worker.zulip is not None
            self.assertIs(worker.database, resources.zulip_database())
            self.assertEqual(worker.zulip.templates.templates_dir, "/srv/zulip/templates")
            self.assertEqual(worker.envelope_from, "noreply@zulip.example.com")

    def test_builder_used_and_user_ids_logged(self) -> None:
        """Events are built by the Zulip builder; the log names user ids, never the private addresses."""
        e = EmailHarness(self)
        built = EmailMessage()
        built["Subject"] = "x"
        built["To"] = "Hamlet <hamlet@private.example.org>"
        built.set_content("x")
        builder = FakeBuilder({"a": built})
        e.worker.zulip = cast(Any, builder)
        events: list[dict[str, Any]] = [
            {"template_prefix": "zerver/emails/a", "to_user_ids": [10], "k": "a"},
            {"template_prefix": "zerver/emails/a", "to_user_id": 11, "k": "a"},
        ]
        self.successResultOf(e.consume(events))
        self.assertEqual([m.envelope.sender for m in e.mailer.sent], ["noreply@zulip.example.com"] * 2)
        lines = [entry["log_format"].format(**entry) for entry in e.logged if "Sending" in entry["log_format"]]
        self.assertEqual(lines, ["Sending a email to user 10", "Sending a email to user 11"])

    def test_database_unavailable_fails_the_rest(self) -> None:
        """The database not answering fails the rest of the batch at once with the same (retried) error."""
        e = EmailHarness(self)
        e.worker.zulip = cast(Any, FakeBuilder({}))
        result = self.successResultOf(e.consume([{"k": "down"}, {"k": "x"}, {"k": "y"}]))
        assert isinstance(result, BatchFailures)
        self.assertEqual(sorted(result.failures), [0, 1, 2])
        self.assertTrue(all(isinstance(f, DatabaseUnavailable) for f in result.failures.values()))
        self.assertEqual(e.worker.zulip.calls, 1)  # type: ignore[union-attr]


class FakeBuilder:
    """Stands in for ZulipEmailBuilder: messages by the event's "k", DatabaseUnavailable for "down"."""

    envelope_from = "noreply@zulip.example.com"

    def __init__(self, messages: dict[str, EmailMessage]) -> None:
        self.messages = messages
        self.calls = 0

    def build(self, event: dict[str, Any], now: float) -> Any:
        from twisted.internet.defer import fail, succeed

        self.calls += 1
        if event["k"] == "down":
            return fail(DatabaseUnavailable("query fetch_email_users got no answer within 5s"))
        return succeed(self.messages[event["k"]])
