"""Zulip's ``email_senders`` and ``deferred_email_senders`` queues.

Batch workers (100 events or 1 s).  Each event is rendered
(:mod:`zqtwisted.mail.render`) and handed to the mailer chosen by
``[mail] backend``; over SMTP one connection carries the messages of many
batches.  A failed event is reported on its own (:class:`BatchFailures`), so one
bad message never stops the others: temporary failures are retried with
backoff by the runtime, permanent ones dead-lettered with the SMTP reply.

When the SMTP server cannot be reached at all, the rest of the batch is failed
with the same (temporary) error at once instead of waiting for a connect
timeout per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from zqtwisted.mail.backends import Mailer, build_mailer
from zqtwisted.mail.render import Renderer, validate
from zqtwisted.mail.settings import MailSettings
from zqtwisted.mail.smtp import SMTPUnavailable
from zqtwisted.runtime.redact import redact_event
from zqtwisted.runtime.worker import BatchFailures, Event, LoopQueueProcessingWorker, WorkerContext, assign_queue

MailerFactory = Callable[[Any, MailSettings], Mailer]


class EmailSendingWorker(LoopQueueProcessingWorker):
    """Renders and sends email events.

    ``context.extras["mailer_factory"]`` may replace :func:`build_mailer`
    (``(reactor, settings) -> Mailer``), e.g. with a fake in tests.
    """

    batch_size = 100
    sleep_delay = 1.0

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(context)
        self.settings = MailSettings()
        self.mailer: Mailer | None = None
        self.renderer: Renderer | None = None

    def validate(self, event: Event) -> Event:
        return validate(event)

    def start(self) -> None:
        s = self.settings = self.context.config.section("mail", MailSettings)
        self.renderer = Renderer(
            s.effective_template_dir,
            from_address=s.from_address,
            from_name=s.from_name,
            support_address=s.support_address,
            message_id_domain=s.message_id_domain,
        )
        factory: MailerFactory = self.context.extras.get("mailer_factory", build_mailer)
        self.mailer = factory(self.context.reactor, s)
        self.log.info("{queue}: sending email with the {backend} backend", queue=self.queue, backend=s.backend)

    def stop(self) -> Deferred[None] | None:
        mailer, self.mailer = self.mailer, None
        return mailer.close() if mailer is not None else None

    def consume_batch(self, events: Sequence[Event]) -> Deferred[BatchFailures | None]:
        return Deferred.fromCoroutine(self._send_batch(events))

    async def _send_batch(self, events: Sequence[Event]) -> BatchFailures | None:
        assert self.renderer is not None and self.mailer is not None, "start() was not called"
        failures: dict[int, BaseException] = {}
        unavailable: SMTPUnavailable | None = None
        for index, event in enumerate(events):
            if unavailable is not None:
                failures[index] = unavailable
                continue
            try:
                message = self.renderer.render(event, now=self.context.reactor.seconds())
                self.log.info(
                    "Sending {template} email to {to}",
                    template=_template_name(event),
                    to=", ".join(str(a) for a in message.get_all("To", [])),
                )
                await self.mailer.send(message, envelope_from=self.settings.from_address)
            except CancelledError:
                raise  # the batch timed out or the worker stops: stop sending
            except SMTPUnavailable as e:
                self.log.warn("{queue}: SMTP server unavailable: {error}", queue=self.queue, error=e)
                failures[index] = unavailable = e
            except Exception as e:  # noqa: BLE001 - one event's failure must not stop the others
                self.log.warn("{queue}: could not send an email: {error}", queue=self.queue, error=_describe(e))
                failures[index] = e
        return BatchFailures(failures) if failures else None

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> None:
        """Zulip's failure handler: one error line naming the exception."""
        self.log.error(
            "Event {event} failed due to exception {exception}",
            event=redact_event(event),
            exception=failure.type.__name__ if failure.type is not None else "Exception",
        )


@assign_queue("email_senders")
class ImmediateEmailSenderWorker(EmailSendingWorker):
    """Zulip's ``email_senders`` queue."""


@assign_queue("deferred_email_senders")
class DeferredEmailSenderWorker(EmailSendingWorker):
    """Zulip's ``deferred_email_senders`` queue (same work, lower priority)."""


def _template_name(event: Event) -> str:
    prefix = event.get("template_prefix")
    return prefix.rsplit("/", 1)[-1] if isinstance(prefix, str) else "pre-rendered"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
