"""Tests for zqtwisted.webhooks.payload: event validation and Zulip's request bodies."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import parse_qsl

from twisted.trial.unittest import TestCase

from zqtwisted.errors import MalformedEventError
from zqtwisted.webhooks.payload import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    SLACK_DIRECT_MESSAGE_REFUSAL,
    Realm,
    Refusal,
    Service,
    WebhookRequest,
    build_request,
    encode_form,
    realm_of,
    services_of,
    topic_of,
    validate_event,
)


def stream_event(**changes: Any) -> dict[str, Any]:
    """The event of the issue: a mention of Helper Bot in #devel > builds."""
    event: dict[str, Any] = {
        "trigger": "mention",
        "user_profile_id": 7,
        "bot_email": "helper-bot@example.com",
        "bot_full_name": "Helper Bot",
        "message": {
            "id": 11,
            "type": "stream",
            "content": "@**Helper Bot** ping",
            "sender_id": 3,
            "sender_email": "iago@example.com",
            "sender_full_name": "Iago",
            "stream_id": 4,
            "display_recipient": "devel",
            "subject": "builds",
            "timestamp": 1700000000,
        },
        "services": [
            {"name": "ci", "base_url": "https://bots.example.com/hook", "token": "s3cret", "interface": "generic"}
        ],
    }
    event.update(changes)
    return event


def private_event() -> dict[str, Any]:
    event = stream_event(trigger="direct_message")
    message = event["message"]
    for key in ("stream_id", "subject"):
        del message[key]
    message["type"] = "private"
    message["display_recipient"] = [
        {"id": 3, "email": "iago@example.com", "full_name": "Iago"},
        {"id": 7, "email": "helper-bot@example.com", "full_name": "Helper Bot"},
    ]
    return event


SERVICE = Service("ci", "https://bots.example.com/hook", "s3cret")
SLACK_SERVICE = Service("ci", "https://bots.example.com/hook", "s3cret", "slack")
REALM = Realm(id=2, url="https://chat.example.com")


class ValidateEventTests(TestCase):
    def assertMalformed(self, event: Any, words: str) -> None:
        with self.assertRaises(MalformedEventError) as raised:
            validate_event(event)
        self.assertIn(words, str(raised.exception))

    def test_accepts_the_documented_event(self) -> None:
        """The event of the documentation is valid and returned as the same object."""
        event = stream_event()
        self.assertIs(validate_event(event), event)

    def test_accepts_a_direct_message(self) -> None:
        """A private message with a list of recipients is valid: returned as the same object, unchanged."""
        event = private_event()
        before = copy.deepcopy(event)
        self.assertIs(validate_event(event), event)
        self.assertEqual(event, before)

    def test_accepts_topic_instead_of_subject(self) -> None:
        """message.topic may stand in for message.subject: the event is valid and its topic is read from it."""
        event = stream_event()
        event["message"]["topic"] = event["message"].pop("subject")
        self.assertIs(validate_event(event), event)
        self.assertEqual(topic_of(event["message"]), "builds")

    def test_rejects_a_non_object(self) -> None:
        """An event that is not a dict is malformed."""
        self.assertMalformed([1], "not an object")

    def test_rejects_missing_fields_by_name(self) -> None:
        """Each required field missing is reported by its name."""
        for key in ("user_profile_id", "bot_email", "bot_full_name", "trigger", "message", "services"):
            event = stream_event()
            del event[key]
            self.assertMalformed(event, key)

    def test_rejects_bad_message_fields(self) -> None:
        """Message fields of the wrong type or missing are reported with their path."""
        for key, value in (("id", "11"), ("content", None), ("stream_id", None), ("display_recipient", 4)):
            event = stream_event()
            event["message"][key] = value
            self.assertMalformed(event, f"message.{key}")

    def test_rejects_a_stream_message_without_topic(self) -> None:
        """A stream message needs subject (or topic)."""
        event = stream_event()
        del event["message"]["subject"]
        self.assertMalformed(event, "message.subject")

    def test_rejects_an_unknown_message_type(self) -> None:
        """message.type must be stream or private."""
        event = stream_event()
        event["message"]["type"] = "huddle"
        self.assertMalformed(event, "message.type")

    def test_rejects_private_recipients_without_email(self) -> None:
        """Each recipient of a direct message needs an email."""
        event = private_event()
        event["message"]["display_recipient"] = [{"id": 3}]
        self.assertMalformed(event, "display_recipient[0]")

    def test_rejects_a_boolean_id(self) -> None:
        """True is not an integer id."""
        self.assertMalformed(stream_event(user_profile_id=True), "user_profile_id")

    def test_rejects_no_services(self) -> None:
        """A bot without services has nothing to call."""
        self.assertMalformed(stream_event(services=[]), "no services")

    def test_rejects_bad_service_urls(self) -> None:
        """Only http(s) URLs with a host and a valid port are accepted."""
        for url in ("ftp://bots.example.com/", "https:///hook", "not a url", "http://bots.example.com:99999/"):
            event = stream_event()
            event["services"][0]["base_url"] = url
            self.assertMalformed(event, "services[0].base_url")

    def test_rejects_an_unknown_interface(self) -> None:
        """The interface must be generic or slack (or Zulip's names of them)."""
        event = stream_event()
        event["services"][0]["interface"] = "teams"
        self.assertMalformed(event, "services[0].interface")

    def test_rejects_duplicate_service_names(self) -> None:
        """Service names identify services across retries, so they must be unique."""
        event = stream_event()
        event["services"].append(dict(event["services"][0]))
        self.assertMalformed(event, "appears twice")

    def test_rejects_bad_completed_services(self) -> None:
        """completed_services must be a list of names."""
        self.assertMalformed(stream_event(completed_services="ci"), "completed_services")

    def test_rejects_mistyped_optional_fields(self) -> None:
        """Optional fields, when present, must have the right type."""
        self.assertMalformed(stream_event(realm_id="2"), "realm_id")
        self.assertMalformed(stream_event(bot_owner_email=5), "bot_owner_email")


class ReadingTests(TestCase):
    def test_services_default_to_generic_and_accept_zulip_names(self) -> None:
        """A missing interface means generic; Zulip's interface names are understood."""
        event = stream_event(
            services=[
                {"name": "a", "base_url": "http://a.example/", "token": "t"},
                {
                    "name": "b",
                    "base_url": "http://b.example/",
                    "token": "t",
                    "interface": "SlackOutgoingWebhookService",
                },
            ]
        )
        self.assertEqual([s.interface for s in services_of(event)], ["generic", "slack"])

    def test_services_skip_completed_ones(self) -> None:
        """Services recorded as completed by an earlier try are not called again."""
        event = stream_event(completed_services=["ci"])
        self.assertEqual(services_of(event), [])

    def test_realm_comes_from_the_event_first(self) -> None:
        """realm_id and realm_url of the event override the configured realm."""
        realm = realm_of(stream_event(realm_id=9, realm_url="https://other.example/"), REALM)
        self.assertEqual((realm.id, realm.url, realm.host), (9, "https://other.example", "other.example"))
        self.assertEqual(realm_of(stream_event(), REALM), REALM)

    def test_topic_prefers_topic_over_subject(self) -> None:
        """Zulip's get_topic_from_message_info reads topic, else subject."""
        self.assertEqual(topic_of({"topic": "a", "subject": "b"}), "a")
        self.assertEqual(topic_of({"subject": "b"}), "b")


class GenericPayloadTests(TestCase):
    def test_body_is_zulip_generic_json(self) -> None:
        """The generic body has Zulip's fields, in Zulip's order, serialised as requests does."""
        event = stream_event()
        request = build_request(event, SERVICE, REALM)
        assert isinstance(request, WebhookRequest)
        expected = {
            "data": "@**Helper Bot** ping",
            "message": event["message"],
            "bot_email": "helper-bot@example.com",
            "bot_full_name": "Helper Bot",
            "token": "s3cret",
            "trigger": "mention",
        }
        self.assertEqual(request.body, json.dumps(expected).encode())
        self.assertEqual(list(json.loads(request.body)), list(expected))
        self.assertEqual((request.url, request.content_type), ("https://bots.example.com/hook", JSON_CONTENT_TYPE))

    def test_generic_sends_direct_messages(self) -> None:
        """The generic interface forwards direct messages too."""
        request = build_request(private_event(), SERVICE, REALM)
        assert isinstance(request, WebhookRequest)
        self.assertEqual(json.loads(request.body)["trigger"], "direct_message")

    def test_building_does_not_change_the_event(self) -> None:
        """Building a payload leaves the event as it was."""
        event = stream_event()
        before = copy.deepcopy(event)
        build_request(event, SERVICE, REALM)
        build_request(event, SLACK_SERVICE, REALM)
        self.assertEqual(event, before)


class SlackPayloadTests(TestCase):
    def test_form_has_zulip_slack_fields(self) -> None:
        """The Slack body is form-encoded with Zulip's fields and prefixes, in order."""
        request = build_request(stream_event(), SLACK_SERVICE, REALM)
        assert isinstance(request, WebhookRequest)
        self.assertEqual(request.content_type, FORM_CONTENT_TYPE)
        self.assertEqual(
            parse_qsl(request.body.decode(), keep_blank_values=True),
            [
                ("token", "s3cret"),
                ("team_id", "T2"),
                ("team_domain", "chat.example.com"),
                ("channel_id", "C4"),
                ("channel_name", "devel"),
                ("thread_ts", "1700000000"),
                ("timestamp", "1700000000"),
                ("user_id", "U3"),
                ("user_name", "Iago"),
                ("text", "@**Helper Bot** ping"),
                ("trigger_word", "mention"),
                ("service_id", "7"),
            ],
        )

    def test_form_encoding_matches_requests(self) -> None:
        """Spaces become +, UTF-8 is percent-encoded, None values are left out (as requests does)."""
        body = encode_form([("text", "héllo wörld & co"), ("n", 5), ("none", None)])
        self.assertEqual(body, b"text=h%C3%A9llo+w%C3%B6rld+%26+co&n=5")

    def test_slack_refuses_direct_messages(self) -> None:
        """Slack services get no request for a direct message, with Zulip's text."""
        result = build_request(private_event(), SLACK_SERVICE, REALM)
        self.assertEqual(result, Refusal(SLACK_SERVICE, SLACK_DIRECT_MESSAGE_REFUSAL))
        self.assertEqual(SLACK_DIRECT_MESSAGE_REFUSAL, "Slack outgoing webhooks don't support direct messages.")

    def test_unknown_realm_gives_t0_and_empty_domain(self) -> None:
        """Without a configured realm the team fields are T0 and empty."""
        request = build_request(stream_event(), SLACK_SERVICE, Realm())
        assert isinstance(request, WebhookRequest)
        fields = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        self.assertEqual((fields["team_id"], fields["team_domain"]), ("T0", ""))
