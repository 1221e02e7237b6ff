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
"""

from __future__ import annotations

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

CONNECTION_FAILED = "A connection error occurred. Is my bot server down?"
SERVER_ERROR = (
    "The outgoing webhook server attempted to send a message in Zulip, "
    "but that request resulted in the following error:\n> {error}"
)
REQUEST_EXCEPTION = (
    "An exception of type *{name}* occurred for message `{command}`! See the Zulip server logs for more information."
)
DISALLOWED_STATUS = 407  # how Zulip's egress proxy reports a disallowed network


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
        self, context: WorkerContext, *, settings: OutgoingWebhookSettings, client: Poster, sink: ReplySink
    ) -> None:
        super().__init__(context)
        self.settings = settings
        self.realm = Realm(id=settings.realm_id, url=settings.realm_url or settings.site)
        self.client = client
        self.sink = sink

    def validate(self, event: Event) -> Event:
        return validate_event(event)

    def consume(self, event: Event) -> Deferred[None]:
        return Deferred.fromCoroutine(self._consume(event))

    async def _consume(self, event: Event) -> None:
        realm = realm_of(event, self.realm)
        calls = [Deferred.fromCoroutine(self._call(event, service, realm)) for service in services_of(event)]
        results = await DeferredList(calls, consumeErrors=True)
        failures = [cast(Failure, result) for ok, result in results if not ok]
        # Cancellation first, then what will never work, then what may work later.
        cancelled = [f for f in failures if f.check(CancelledError)]
        permanent = [f for f in failures if not f.check(CancelledError, TransientError)]
        for group in (cancelled, permanent, failures):
            if group:
                group[0].raiseException()

    async def _call(self, event: Event, service: Service, realm: Realm) -> None:
        request = build_request(event, service, realm)
        if isinstance(request, Refusal):
            await self._deliver(failure_reply(event, request.message, service.name))
            _completed(event, service)
            return
        command = redact_text(command_of(event))[:200]
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
                failure_reply(
                    event, REQUEST_EXCEPTION.format(name=type(e).__name__, command=command_of(event)), service.name
                )
            )
            await self._deliver(owner_notice(event, realm.url, exception=e, service_name=service.name))
            _completed(event, service)
            return
        self.log.info(
            "Outgoing webhook request from {bot}@{service} took {seconds:f} seconds",
            bot=event["user_profile_id"],
            service=service.name,
            seconds=self.context.clock.seconds() - started,
        )
        await self._handle_response(event, service, realm, response.status, response.body, response.content_type)
        _completed(event, service)

    async def _handle_response(
        self, event: Event, service: Service, realm: Realm, status: int, body: bytes, content_type: str | None
    ) -> None:
        outcome = classify_response(service.interface, status, body, content_type)
        if isinstance(outcome, BotReply):
            await self._deliver(bot_reply(event, outcome.content, outcome.widget_content, service.name))
        elif isinstance(outcome, InvalidResponse):
            await self._deliver(failure_reply(event, outcome.message, service.name))
            await self._deliver(
                owner_notice(
                    event,
                    realm.url,
                    response_content=outcome.text,
                    failure_message=SERVER_ERROR.format(error=outcome.message),
                    service_name=service.name,
                )
            )
        elif isinstance(outcome, HttpFailure):
            self.log.warn(
                "Message {url} triggered an outgoing webhook, returning status code {status}.",
                url=message_url(realm.url, event["message"]),
                status=status,
            )
            await self._deliver(failure_reply(event, outcome.message, service.name))
            await self._deliver(
                owner_notice(event, realm.url, status_code=status, response_content=body, service_name=service.name)
            )

    async def _deliver(self, reply: Reply) -> None:
        try:
            await self.sink.send(reply)
        except ReplyRejected as e:
            self.log.error(
                "A {kind} of bot {bot} was rejected: {error}", kind=reply.kind, bot=reply.bot_email, error=str(e)
            )

    # -- the failure handler ----------------------------------------------------------

    def on_give_up(self, event: Event, failure: Failure, reason: str) -> Deferred[None] | None:
        """Zulip's failure processor: tell the user and the bot's owner."""
        try:
            validate_event(event)
        except Exception:  # noqa: BLE001 - a malformed event has nobody to tell
            return None
        return Deferred.fromCoroutine(self._give_up(event, failure, reason))

    async def _give_up(self, event: Event, failure: Failure, reason: str) -> None:
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
                bot=event["bot_email"],
                command=redact_text(command_of(event))[:200],
            )
        else:
            name = type(error).__name__
            replies = [
                failure_reply(event, REQUEST_EXCEPTION.format(name=name, command=command_of(event))),
                owner_notice(event, realm.url, exception=error if isinstance(error, Exception) else None),
            ]
        for reply in replies:
            try:
                await self._deliver(reply)
            except Exception as e:  # noqa: BLE001 - the event is dead-lettered anyway
                self.log.error(
                    "Could not deliver a {kind} of bot {bot}: {error}",
                    kind=reply.kind,
                    bot=reply.bot_email,
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
    """The worker over the shared ``"webhooks"`` pool (and ``"webhook_replies"`` for the REST sink)."""
    reactor = resources.reactor
    client = build_webhook_client(reactor, settings, resources.http_pool("webhooks", webhook_pool_options(settings)))

    def rest_client() -> WebhookClient:
        return build_rest_client(reactor, settings, resources.http_pool("webhook_replies", rest_pool_options(settings)))

    sink = build_reply_sink(settings, resources.publisher, rest_client)
    return OutgoingWebhookWorker(context, settings=settings, client=client, sink=sink)


SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(
        "outgoing_webhooks",
        OutgoingWebhookWorker,
        build_worker,
        section="outgoing_webhooks",
        settings=OutgoingWebhookSettings,
    ),
)
