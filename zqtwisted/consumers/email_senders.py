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

Zulip mode (``[zulip] database`` set): each event is built as Zulip's
``build_email`` builds it (:mod:`zqtwisted.zulip.email_service`): ``to_user_ids``
read from Zulip's database, Zulip's templates from ``[zulip] templates_dir``, the
realm's ``List-Id``.  While the database does not answer, the events wait (retried
without counting as a try).
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
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
from zqtwisted.zulip.email_service import ZulipEmailBuilder
from zqtwisted.zulip.email_templates import ZulipTemplates
from zqtwisted.zulip.pool import DatabaseUnavailable, ZulipDatabase
from zqtwisted.zulip.settings import ZulipSettings


class EmailSendingWorker(LoopQueueProcessingWorker):
    """Renders and sends email events through the mailer it is given."""

    batch_size = 100
    sleep_delay = 1.0

    def __init__(
        self,
        context: WorkerContext,
        *,
        settings: MailSettings,
        mailer: Mailer,
        zulip: ZulipEmailBuilder | None = None,
        database: ZulipDatabase | None = None,
    ) -> None:
        """``zulip`` (with its ``database``): Zulip mode."""
        super().__init__(context)
        self.settings = settings
        self.mailer = mailer
        self.renderer = renderer_for(settings)
        self.zulip = zulip
        self.database = database

    def validate(self, event: Event) -> Event:
        return validate(event)

    def start(self) -> Deferred[None] | None:
        self.log.info(
            "{queue}: sending email with the {backend} backend{mode}",
            queue=self.queue,
            backend=self.settings.backend,
            mode=" (Zulip mode)" if self.zulip is not None else "",
        )
        return self.database.open() if self.database is not None else None

    async def build(self, event: Event) -> EmailMessage:
        """The message of ``event``: Zulip's ``build_email`` in Zulip mode, else the renderer's."""
        now = self.context.clock.seconds()
        if self.zulip is not None:
            return await self.zulip.build(event, now)
        return self.renderer.render(event, now=now)

    @property
    def envelope_from(self) -> str:
        return self.zulip.envelope_from if self.zulip is not None else self.settings.from_address

    def consume_batch(self, events: Sequence[Event]) -> Deferred[BatchFailures | None]:
        return Deferred.fromCoroutine(self._send_batch(events))

    async def _send_batch(self, events: Sequence[Event]) -> BatchFailures | None:
        failures: dict[int, BaseException] = {}
        unavailable: SMTPUnavailable | DatabaseUnavailable | None = None
        for index, event in enumerate(events):
            if unavailable is not None:
                failures[index] = unavailable
                continue
            try:
                message = await self.build(event)
                self.log.info(
                    "Sending {template} email to {to}", template=_template_name(event), to=_recipients(event, message)
                )
                await self.mailer.send(message, envelope_from=self.envelope_from)
            except CancelledError:
                raise  # the batch timed out or the worker stops: stop sending
            except SMTPUnavailable as e:
                self.log.warn("{queue}: SMTP server unavailable: {error}", queue=self.queue, error=e)
                failures[index] = unavailable = e
            except DatabaseUnavailable as e:
                # The rest of the batch would wait for the same deadline: retry it all (not counted as tries).
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


def zulip_email_builder(settings: MailSettings, resources: Resources) -> tuple[ZulipEmailBuilder, ZulipDatabase] | None:
    """Zulip mode's builder over the shared database (None in standalone mode)."""
    zulip = resources.config.section("zulip", ZulipSettings)
    if not zulip.enabled:
        return None
    database = resources.zulip_database()
    templates = ZulipTemplates(zulip.templates_dir or settings.effective_template_dir, zulip.locale_dir)
    return ZulipEmailBuilder(database, zulip, templates), database


def _build(
    worker: type[EmailSendingWorker], context: WorkerContext, settings: MailSettings, resources: Resources
) -> EmailSendingWorker:
    zulip = zulip_email_builder(settings, resources)
    builder, database = zulip if zulip is not None else (None, None)
    return worker(context, settings=settings, mailer=resources.mailer(), zulip=builder, database=database)


def _build_immediate(context: WorkerContext, settings: MailSettings, resources: Resources) -> EmailSendingWorker:
    return _build(ImmediateEmailSenderWorker, context, settings, resources)


def _build_deferred(context: WorkerContext, settings: MailSettings, resources: Resources) -> EmailSendingWorker:
    return _build(DeferredEmailSenderWorker, context, settings, resources)


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


def _recipients(event: Event, message: EmailMessage) -> str:
    """Who an email goes to, for the log: user ids for ``to_user_ids`` (their addresses are private)."""
    user_ids = event.get("to_user_ids")
    if user_ids is None and event.get("to_user_id") is not None:
        user_ids = [event["to_user_id"]]
    if user_ids is not None:
        return "user " + ", ".join(str(uid) for uid in user_ids)
    return ", ".join(str(a) for a in message.get_all("To", []))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
