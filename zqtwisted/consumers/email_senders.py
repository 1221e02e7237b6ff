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

The mailer is the shared one of :class:`zqtwisted.resources.Resources` (both
queues send through it); its owner closes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from zqtwisted.mail.backends import Mailer
from zqtwisted.mail.render import Renderer, validate
from zqtwisted.mail.settings import MailSettings
from zqtwisted.mail.smtp import SMTPUnavailable
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import BatchFailures, ConsumerSpec, Event, LoopQueueProcessingWorker, WorkerContext
from zqtwisted.runtime.redact import redact_event


class EmailSendingWorker(LoopQueueProcessingWorker):
    """Renders and sends email events through the mailer it is given."""

    batch_size = 100
    sleep_delay = 1.0

    def __init__(self, context: WorkerContext, *, settings: MailSettings, mailer: Mailer) -> None:
        super().__init__(context)
        self.settings = settings
        self.mailer = mailer
        self.renderer = renderer_for(settings)

    def validate(self, event: Event) -> Event:
        return validate(event)

    def start(self) -> None:
        self.log.info(
            "{queue}: sending email with the {backend} backend", queue=self.queue, backend=self.settings.backend
        )

    def consume_batch(self, events: Sequence[Event]) -> Deferred[BatchFailures | None]:
        return Deferred.fromCoroutine(self._send_batch(events))

    async def _send_batch(self, events: Sequence[Event]) -> BatchFailures | None:
        failures: dict[int, BaseException] = {}
        unavailable: SMTPUnavailable | None = None
        for index, event in enumerate(events):
            if unavailable is not None:
                failures[index] = unavailable
                continue
            try:
                message = self.renderer.render(event, now=self.context.clock.seconds())
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


class ImmediateEmailSenderWorker(EmailSendingWorker):
    """Zulip's ``email_senders`` queue."""


class DeferredEmailSenderWorker(EmailSendingWorker):
    """Zulip's ``deferred_email_senders`` queue (same work, lower priority)."""


def renderer_for(settings: MailSettings) -> Renderer:
    """The renderer of ``[mail]``: its templates and addresses."""
    return Renderer(
        settings.effective_template_dir,
        from_address=settings.from_address,
        from_name=settings.from_name,
        support_address=settings.support_address,
        message_id_domain=settings.message_id_domain,
    )


def _build_immediate(context: WorkerContext, settings: MailSettings, resources: Resources) -> EmailSendingWorker:
    return ImmediateEmailSenderWorker(context, settings=settings, mailer=resources.mailer())


def _build_deferred(context: WorkerContext, settings: MailSettings, resources: Resources) -> EmailSendingWorker:
    return DeferredEmailSenderWorker(context, settings=settings, mailer=resources.mailer())


# Both queues send through the one mailer of the shared resources.
SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec("email_senders", ImmediateEmailSenderWorker, _build_immediate, section="mail", settings=MailSettings),
    ConsumerSpec(
        "deferred_email_senders", DeferredEmailSenderWorker, _build_deferred, section="mail", settings=MailSettings
    ),
)


def _template_name(event: Event) -> str:
    prefix = event.get("template_prefix")
    return prefix.rsplit("/", 1)[-1] if isinstance(prefix, str) else "pre-rendered"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
