"""Email events in Zulip mode: Zulip's ``send_immediate_email`` / ``build_email`` over its database.

For each event of ``email_senders`` / ``deferred_email_senders`` (as Zulip's
``EmailSendingWorker`` and zerver/lib/send_email.py handle it):

- the legacy ``to_email`` / ``to_user_id`` become ``to_emails`` / ``to_user_ids``
  (``handle_send_email_format_changes``); exactly one of them is given;
- ``to_user_ids`` are read from ``zerver_userprofile``: ``"Full Name
  <delivery_email>"`` (the name dropped past 320 characters); the realm is
  ``realm_id``'s, or the users' (who must share one);
- the realm gives ``List-Id: "Realm name" <realm host>``; the language is the
  event's, else the first user's ``default_language``;
- Zulip's templates are rendered (:class:`~.email_templates.ZulipTemplates`) with
  the context ``build_email`` adds (:func:`~.email_context.build_email_context`);
- From: ``from_name`` (default "Zulip") and ``from_address`` with Zulip's
  placeholders; Reply-To: ``reply_to_email``, or the bare noreply address for
  noreply mail; the envelope sender is always the noreply address.

A user or realm that does not exist, an event with both or neither recipient
field, a missing template: :class:`~zqtwisted.errors.PermanentError`.  The
database not answering: :class:`~.pool.DatabaseUnavailable` (retried, never
dead-lettered).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from zqtwisted.errors import PermanentError
from zqtwisted.mail.render import assemble, checked_date, parse_address, with_short_name
from zqtwisted.zulip.email_context import FromAddress, build_email_context, generate_key, list_id
from zqtwisted.zulip.email_queries import EmailRealm, EmailUser, fetch_email_realm, fetch_email_users
from zqtwisted.zulip.email_templates import ZulipTemplates
from zqtwisted.zulip.settings import ZulipSettings
from zqtwisted.zulip.urls import realm_host


class Database(Protocol):
    def run(self, name: str, query: Any, *args: Any) -> Deferred[Any]: ...


def format_changes(event: Mapping[str, Any]) -> dict[str, Any]:
    """Zulip's ``handle_send_email_format_changes``: legacy single recipients as lists."""
    job = dict(event)
    if "to_email" in job:
        if job["to_email"] is not None:
            job["to_emails"] = [job["to_email"]]
        del job["to_email"]
    if "to_user_id" in job:
        if job["to_user_id"] is not None:
            job["to_user_ids"] = [job["to_user_id"]]
        del job["to_user_id"]
    return job


class ZulipEmailBuilder:
    """Builds the message of an email event as Zulip's ``build_email`` does."""

    def __init__(
        self,
        db: Database,
        settings: ZulipSettings,
        templates: ZulipTemplates,
        *,
        make_message_id: Callable[[str], str] | None = None,
        make_key: Callable[[], str] = generate_key,
    ) -> None:
        self.db = db
        self.settings = settings
        self.templates = templates
        self.addresses = FromAddress.from_settings(settings)
        self._make_message_id = make_message_id or (lambda domain: email.utils.make_msgid(domain=domain))
        self._make_key = make_key

    @property
    def envelope_from(self) -> str:
        """``build_email``'s envelope sender: ``FromAddress.NOREPLY``."""
        return self.addresses.noreply

    def build(self, event: Mapping[str, Any], now: float) -> Deferred[EmailMessage]:
        return Deferred.fromCoroutine(self._build(event, now))

    async def _build(self, event: Mapping[str, Any], now: float) -> EmailMessage:
        job = format_changes(event)
        to_user_ids, to_emails = job.get("to_user_ids"), job.get("to_emails")
        if (to_user_ids is None) == (to_emails is None):
            raise PermanentError("an email event needs exactly one of to_user_ids and to_emails (Zulip's build_email)")
        if not (to_user_ids or to_emails):
            raise PermanentError("the event has no recipient")
        realm: EmailRealm | None = None
        if job.get("realm_id") is not None:
            realm = await self.db.run("fetch_email_realm", fetch_email_realm, int(job["realm_id"]))
            if realm is None:
                raise PermanentError(f"realm {job['realm_id']} does not exist")
        language = job.get("language")
        if to_user_ids is not None:
            users = await self._users(list(to_user_ids))
            if realm is None:
                realms = {user.realm.id for user in users}
                if len(realms) != 1:
                    raise PermanentError(f"to_user_ids are in {len(realms)} realms and the event has no realm_id")
                realm = users[0].realm
            recipients = [_user_address(user) for user in users]
            if not language and users:
                language = users[0].default_language
        else:
            recipients = [parse_address(value, "to_emails") for value in to_emails or []]
        context = job.get("context") or {}
        subject, text, html = self._content(job, build_email_context(context, self.settings, self.addresses), language)
        from_address = self.addresses.resolve(job.get("from_address"), self._make_key)
        sender = parse_address(from_address, "from_address")
        from_name = job.get("from_name")
        reply_to: Address | None = None
        if job.get("reply_to_email") is not None:
            reply_to = parse_address(job["reply_to_email"], "reply_to_email")
        elif from_address == self.addresses.noreply:
            reply_to = Address(username=sender.username, domain=sender.domain)
        return assemble(
            subject=subject,
            text=text,
            html=html,
            sender=Address("Zulip" if from_name is None else from_name, sender.username, sender.domain),
            recipients=recipients,
            reply_to=reply_to,
            date=checked_date(job.get("date"), now),
            message_id=self._make_message_id(Address(addr_spec=self.addresses.noreply).domain),
            headers=self._headers(job, context, realm),
        )

    async def _users(self, user_ids: list[int]) -> list[EmailUser]:
        found: dict[int, EmailUser] = await self.db.run("fetch_email_users", fetch_email_users, user_ids)
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            raise PermanentError(f"to_user_ids: no user with id {', '.join(map(str, missing))}")
        return [found[uid] for uid in user_ids]

    def _content(
        self, job: Mapping[str, Any], context: Mapping[str, Any], language: str | None
    ) -> tuple[str, str | None, str | None]:
        if "template_prefix" in job:
            return self.templates.render(job["template_prefix"], context, language)
        # A pre-rendered event (not one of Zulip's): as in standalone mode.
        return job["subject"], job.get("body"), job.get("html_body")

    def _headers(self, job: Mapping[str, Any], context: Mapping[str, Any], realm: EmailRealm | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if realm is not None:
            headers["List-Id"] = list_id(realm.name, realm_host(realm.string_id, self.settings))
        for name, header in (("in_reply_to", "In-Reply-To"), ("references", "References")):
            if job.get(name) is not None:
                headers[header] = job[name]
        if "unsubscribe_link" in context:
            link = str(context["unsubscribe_link"])
            if "\n" in link or "\r" in link:
                raise PermanentError("context.unsubscribe_link contains a line break")
            headers["List-Unsubscribe"] = f"<{link}>"
            if not context.get("remote_server_email", False):
                headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        headers.update(job.get("headers") or {})
        return headers


def _user_address(user: EmailUser) -> Address:
    """``"Full Name <delivery_email>"``; the address alone when that is longer than 320 characters."""
    try:
        address = parse_address(user.delivery_email, "to_user_ids")
    except PermanentError:
        raise PermanentError(f"user {user.id} has an invalid delivery_email") from None  # the address is private
    return with_short_name(Address(user.full_name, address.username, address.domain))
