"""``outgoing_webhooks``: call bot servers, post their replies (Zulip's OutgoingWebhookWorker).

One POST per service of the bot, all services at once, many events at once
(``concurrency = 100``) with a per-host cap.  What Zulip does with the answers,
this does too:

* 2xx: the bot's reply (if any) is posted where the message came from; an
  invalid answer gets "Failure! Invalid JSON in response" / "... format" and a
  notice to the bot's owner;
* other statuses: "Failure! Third party responded with {status}" and a notice,
  no retry (the event succeeds);
* timeout, connection error, truncated body: :class:`TransientError`, so the
  runtime retries with backoff; after the last try ``on_give_up`` posts
  "Failure! Bot is unavailable" and a notice;
* a URL on a private or disallowed network: a PermanentError (dead-lettered, so
  it can be replayed once allowed); ``on_give_up`` posts Zulip's 407 texts.

Services that succeeded are recorded in the event (``completed_services``), so a
retry calls only the others.

Zulip mode (``[zulip] database`` set): the event is Zulip's own (``message``,
``trigger``, ``user_profile_id``); the bot, its services and the finalized message
come from Zulip's database (:mod:`zqtwisted.zulip.webhook_service`), replies go
through Zulip's REST API as the bot, the message is then marked read for the bot,
and log lines name messages by id, never by content.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from zqtwisted.errors import TransientError
from zqtwisted.resources import Resources
from zqtwisted.runtime.consumer import ConsumerSpec, Event, QueueProcessingWorker, WorkerContext
from zqtwisted.runtime.redact import redact_text
from zqtwisted.webhooks.client import (
    HostBusyError,
    Poster,
    WebhookClient,
    WebhookConnectionError,
    WebhookError,
    WebhookResponse,
    WebhookTimeout,
    build_webhook_client,
    webhook_pool_options,
)
from zqtwisted.webhooks.guard import DisallowedNetworkError
from zqtwisted.webhooks.payload import (
    COMPLETED_KEY,
    Realm,
    Refusal,
    Service,
    build_request,
    command_of,
    realm_of,
    services_of,
    validate_event,
)
from zqtwisted.webhooks.replies import (
    BOT_UNAVAILABLE,
    QueueReplySink,
    Reply,
    ReplyRejected,
    ReplySink,
    bot_reply,
    build_reply_sink,
    build_rest_client,
    failure_reply,
    message_url,
    owner_notice,
    rest_pool_options,
)
from zqtwisted.webhooks.response import BotReply, HttpFailure, InvalidResponse, classify_response
from zqtwisted.webhooks.settings import OutgoingWebhookSettings
from zqtwisted.zulip.pool import ZulipDatabase
from zqtwisted.zulip.rest import ZulipApi, build_api_client
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.webhook_service import Resolved, ZulipWebhooks, validate_zulip_event

CONNECTION_FAILED = "A connection error occurred. Is my bot server down?"
SERVER_ERROR = (
    "The outgoing webhook server attempted to send a message in Zulip, "
    "but that request resulted in the following error:\n> {error}"
)
REQUEST_EXCEPTION = (
    "An exception of type *{name}* occurred for message `{command}`! See the Zulip server logs for more information."
)
DISALLOWED_STATUS = 407  # how Zulip's egress proxy reports a disallowed network
MARKED_READ_KEY = "zq_marked_read"


class ServiceUnavailable(TransientError):
    """A service could not be reached this time; the message is for the bot's owner."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.message = message


class OutgoingWebhookWorker(QueueProcessingWorker):
    """Calls the bot's services through ``client``; replies and notices go to ``sink``."""

    concurrency: ClassVar[int] = 100
    log = Logger()

    def __init__(
        self,
        context: WorkerContext,
        *,
        settings: OutgoingWebhookSettings,
        client: Poster,
        sink: ReplySink,
        zulip: ZulipWebhooks | None = None,
        database: ZulipDatabase | None = None,
        mark_read: bool = True,
    ) -> None:
        super().__init__(context)
        self.settings = settings
        self.realm = Realm(id=settings.realm_id, url=settings.realm_url or settings.site)
        self.client = client
        self.sink = sink
        self.zulip = zulip
        self.database = database
        self.mark_read = mark_read

    def start(self) -> Deferred[None] | None:
        return self.database.open() if self.database is not None else None

    def validate(self, event: Event) -> Event:
        return validate_zulip_event(event) if self.zulip is not None else validate_event(event)

    def consume(self, event: Event) -> Deferred[None]:
        return Deferred.fromCoroutine(self._consume(event))

    async def _resolve(self, event: Event) -> tuple[Event, ReplySink, Resolved | None]:
        """The view to build requests from and where replies go (Zulip mode: from the database)."""
        if self.zulip is None:
            return event, self.sink, None
        resolved = await self.zulip.resolve(event)
        return resolved.view, resolved.sink, resolved

    async def _consume(self, event: Event) -> None:
        view, sink, resolved = await self._resolve(event)
        realm = realm_of(view, self.realm)
        calls = [Deferred.fromCoroutine(self._call(event, view, service, realm, sink)) for service in services_of(view)]
        results = await DeferredList(calls, consumeErrors=True)
        failures = [cast(Failure, result) for ok, result in results if not ok]
        # Cancellation first, then what will never work, then what may work later.
        cancelled = [f for f in failures if f.check(CancelledError)]
        if resolved is not None and not cancelled:
            await self._mark_read(event, resolved)
        permanent = [f for f in failures if not f.check(CancelledError, TransientError)]
        for group in (cancelled, permanent, failures):
            if group:
                group[0].raiseException()

    async def _mark_read(self, event: Event, resolved: Resolved) -> None:
        """Zulip's do_flag_service_bots_messages_as_processed, once per event."""
        if not self.mark_read or event.get(MARKED_READ_KEY) or self.zulip is None:
            return
        try:
            await self.zulip.api.mark_read(resolved.bot, int(event["message"]["id"]))
        except Exception as e:  # noqa: BLE001 - the webhooks were called: never fail the event for this
            self.log.warn(
                "Could not mark message {message_id} read for bot {bot}: {error}",
                message_id=event["message"]["id"],
                bot=resolved.bot.id,
                error=str(e),
            )
            return
        event[MARKED_READ_KEY] = True

    def _described(self, view: Event) -> str:
        """How log lines name the triggering message: its id in Zulip mode (no private data)."""
        if self.zulip is not None:
            return f"message {view['message']['id']}"
        return redact_text(command_of(view))[:200]

    async def _call(self, event: Event, view: Event, service: Service, realm: Realm, sink: ReplySink) -> None:
        request = build_request(view, service, realm)
        if isinstance(request, Refusal):
            await self._deliver(sink, failure_reply(view, request.message, service.name))
            _completed(event, service)
            return
        command = self._described(view)
        started = self.context.clock.seconds()
        try:
            response = await self.client.post(request.url, request.body, request.content_type)
        except WebhookTimeout:
            self.log.info(
                "Trigger event {command} on {service} timed out. Retrying", command=command, service=service.name
            )
            raise ServiceUnavailable(
                service.name, f"Request timed out after {self.client.timeout:g} seconds."
            ) from None
        except (WebhookConnectionError, HostBusyError) as e:
            self.log.info(
                "Trigger event {command} on {service} resulted in a connection error ({error}). Retrying",
                command=command,
                service=service.name,
                error=str(e),
            )
            raise ServiceUnavailable(service.name, CONNECTION_FAILED) from None
        except WebhookError as e:
            self.log.error("Outhook trigger failed on {service}: {error}", service=service.name, error=str(e))
            await self._deliver(
                sink,
                failure_reply(
                    view, REQUEST_EXCEPTION.format(name=type(e).__name__, command=command_of(view)), service.name
                ),
            )
            await self._deliver(sink, owner_notice(view, realm.url, exception=e, service_name=service.name))
            _completed(event, service)
            return
        self.log.info(
            "Outgoing webhook request from {bot}@{service} took {seconds:f} seconds",
            bot=view["user_profile_id"],
            service=service.name,
            seconds=self.context.clock.seconds() - started,
        )
        await self._handle_response(view, sink, service, realm, response)
        _completed(event, service)

    async def _handle_response(
        self, event: Event, sink: ReplySink, service: Service, realm: Realm, response: WebhookResponse
    ) -> None:
        status, body = response.status, response.body
        outcome = classify_response(service.interface, status, body, response.content_type)
        if isinstance(outcome, BotReply):
            await self._deliver(sink, bot_reply(event, outcome.content, outcome.widget_content, service.name))
        elif isinstance(outcome, InvalidResponse):
            await self._deliver(sink, failure_reply(event, outcome.message, service.name))
            await self._deliver(
                sink,
                owner_notice(
                    event,
                    realm.url,
                    response_content=outcome.text,
                    failure_message=SERVER_ERROR.format(error=outcome.message),
                    service_name=service.name,
                ),
            )
        elif isinstance(outcome, HttpFailure):
            self.log.warn(
                "Message {url} triggered an outgoing webhook, returning status code {status}.",
                url=message_url(realm.url, event["message"]) if self.zulip is None else self._described(event),
                status=status,
            )
            await self._deliver(sink, failure_reply(event, outcome.message, service.name))
            await self._deliver(
                sink,
                owner_notice(event, realm.url, status_code=status, response_content=body, service_name=service.name),
            )

    async def _deliver(self, sink: ReplySink, reply: Reply) -> None:
        try:
            await sink.send(reply)
        except ReplyRejected as e:
            self.log.error(
                "A {kind} of bot {bot} was rejected: {error}", kind=reply.kind, bot=reply.bot_user_id, error=str(e)
            )

    # -- the failure handler ----------------------------------------------------------

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> Deferred[None] | None:
        """Zulip's failure processor: tell the user and the bot's owner."""
        try:
            self.validate(event)
        except Exception:  # noqa: BLE001 - a malformed event has nobody to tell
            return None
        return Deferred.fromCoroutine(self._give_up(event, failure, reason))

    async def _give_up(self, original: Event, failure: Failure, reason: str) -> None:
        try:
            event, sink, _ = await self._resolve(original)
        except Exception as e:  # noqa: BLE001 - the event is dead-lettered anyway
            self.log.error(
                "Could not tell the users of bot {bot} that it failed: {error}",
                bot=original.get("user_profile_id"),
                error=str(e),
            )
            return
        realm = realm_of(event, self.realm)
        error = failure.value
        service = getattr(error, "service", None)
        if isinstance(error, DisallowedNetworkError):
            replies = [
                failure_reply(event, HttpFailure(DISALLOWED_STATUS, b"").message),
                owner_notice(event, realm.url, status_code=DISALLOWED_STATUS),
            ]
        elif isinstance(error, TransientError) or reason in ("retries-exhausted", "timeout"):
            if isinstance(error, ServiceUnavailable):
                notice = error.message
            else:
                notice = (
                    f"Request timed out after {self.client.timeout:g} seconds." if reason == "timeout" else str(error)
                )
            replies = [
                failure_reply(event, BOT_UNAVAILABLE, service),
                owner_notice(event, realm.url, failure_message=notice or None, service_name=service),
            ]
            self.log.warn(
                "Maximum retries exceeded for trigger:{bot} event:{command}",
                bot=event["bot_email"] if self.zulip is None else event["user_profile_id"],
                command=self._described(event),
            )
        else:
            name = type(error).__name__
            replies = [
                failure_reply(event, REQUEST_EXCEPTION.format(name=name, command=command_of(event))),
                owner_notice(event, realm.url, exception=error if isinstance(error, Exception) else None),
            ]
        for reply in replies:
            try:
                await self._deliver(sink, reply)
            except Exception as e:  # noqa: BLE001 - the event is dead-lettered anyway
                self.log.error(
                    "Could not deliver a {kind} of bot {bot}: {error}",
                    kind=reply.kind,
                    bot=reply.bot_user_id,
                    error=str(e),
                )


def _completed(event: Event, service: Service) -> None:
    """Remember in the event that ``service`` is done (travels with a retry)."""
    done = event.setdefault(COMPLETED_KEY, [])
    if service.name not in done:
        done.append(service.name)


def build_worker(
    context: WorkerContext, settings: OutgoingWebhookSettings, resources: Resources
) -> OutgoingWebhookWorker:
    """The worker over the shared ``"webhooks"`` pool; in Zulip mode, with the database and the REST API."""
    reactor = resources.reactor
    zulip = resources.config.section("zulip", ZulipSettings)
    if zulip.enabled and not settings.user_agent_version:
        settings = dataclasses.replace(settings, user_agent_version=zulip.version)
    client = build_webhook_client(reactor, settings, resources.http_pool("webhooks", webhook_pool_options(settings)))

    def rest_client() -> WebhookClient:
        return build_rest_client(reactor, settings, resources.http_pool("webhook_replies", rest_pool_options(settings)))

    if not zulip.enabled:
        sink = build_reply_sink(settings, resources.publisher, rest_client)
        return OutgoingWebhookWorker(context, settings=settings, client=client, sink=sink)
    database = resources.zulip_database()
    api = ZulipApi(
        build_api_client(reactor, zulip, resources.http_pool("webhook_replies", rest_pool_options(settings))), zulip
    )
    return OutgoingWebhookWorker(
        context,
        settings=settings,
        client=client,
        sink=QueueReplySink(resources.publisher),  # unused: Zulip mode replies as each bot
        zulip=ZulipWebhooks(database, api, zulip, zulip.salt()),
        database=database,
        mark_read=zulip.mark_processed_messages_read,
    )


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(
        "outgoing_webhooks",
        OutgoingWebhookWorker,
        build_worker,
        section="outgoing_webhooks",
        settings=OutgoingWebhookSettings,
    ),
)
