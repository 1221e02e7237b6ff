"""The missedmessage_emails event: validation with reasons, shard routing, the publish helper."""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial import unittest

from tests.missedmessage_fixtures import FakePublisher, private_event, stream_event
from zqtwisted.errors import MalformedEventError
from zqtwisted.missedmessage import publish_missedmessage
from zqtwisted.missedmessage.events import queue_for_user, shard_of, stored_form, validate_event


def broken(change: Any) -> dict[str, Any]:
    event = stream_event(10, 501)
    change(event)
    return event


class ValidateTests(unittest.TestCase):
    def test_issue_example_is_valid(self) -> None:
        """The event of the issue (channel message) and a direct message are valid."""
        self.assertEqual(validate_event(stream_event(10, 501))["message_id"], 501)
        validate_event(private_event(10, 502, others=["Iago"]))

    def assertMalformed(self, event: dict[str, Any], reason: str) -> None:
        with self.assertRaises(MalformedEventError) as caught:
            validate_event(event)
        self.assertIn(reason, str(caught.exception))

    def test_missing_fields(self) -> None:
        """A missing required field is named, with its path."""
        self.assertMalformed(broken(lambda e: e.pop("user_profile_id")), "missing field 'user_profile_id'")
        self.assertMalformed(broken(lambda e: e["user"].pop("email")), "missing field 'user.email'")
        self.assertMalformed(broken(lambda e: e["message"].pop("topic")), "missing field 'message.topic'")
        self.assertMalformed(broken(lambda e: e.pop("message")), "missing field 'message'")

    def test_wrong_types(self) -> None:
        """Wrong types are refused with the expected type (booleans are not ids)."""
        self.assertMalformed(broken(lambda e: e.update(user_profile_id="10")), "expected int, got str")
        self.assertMalformed(broken(lambda e: e.update(message_id=True)), "'message_id': expected int, got bool")
        self.assertMalformed(broken(lambda e: e.update(mentioned_user_group_id="x")), "mentioned_user_group_id")
        self.assertMalformed(broken(lambda e: e["message"].update(timestamp="now")), "message.timestamp")
        self.assertMalformed(broken(lambda e: e["user"].update(batching_period_seconds=-1)), "expected 0..")

    def test_ids_beyond_bigint_are_malformed(self) -> None:
        """Defect 9: a 30-digit user_profile_id (or message / group id) is malformed, not a store failure to retry."""
        huge = 10**29
        self.assertMalformed(broken(lambda e: e.update(user_profile_id=huge)), "'user_profile_id': expected an id")
        self.assertMalformed(broken(lambda e: e.update(message_id=huge)), "'message_id': expected an id")
        self.assertMalformed(broken(lambda e: e.update(mentioned_user_group_id=huge)), "mentioned_user_group_id")
        self.assertMalformed(broken(lambda e: e.update(user_profile_id=0)), "'user_profile_id': expected an id")
        validate_event(dict(stream_event(2**63 - 1, 1)))

    def test_times_must_be_finite_and_in_range(self) -> None:
        """A timestamp or batching period that is infinite or absurd is malformed (it would fail when scheduled)."""
        self.assertMalformed(broken(lambda e: e["message"].update(timestamp=float("inf"))), "message.timestamp")
        self.assertMalformed(broken(lambda e: e["message"].update(timestamp=1e30)), "message.timestamp")
        self.assertMalformed(broken(lambda e: e["user"].update(batching_period_seconds=1e300)), "batching_period")

    def test_inconsistent_event(self) -> None:
        """message.id must match message_id; the type must be stream or private."""
        self.assertMalformed(broken(lambda e: e["message"].update(id=7)), "differs from 'message_id'")
        self.assertMalformed(broken(lambda e: e["message"].update(type="huddle")), "expected one of stream, private")
        self.assertMalformed(broken(lambda e: e["user"].update(email="nobody")), "not an email address")
        self.assertMalformed(broken(lambda e: e["message"].update(stream_name="")), "'message.stream_name' is empty")
        self.assertMalformed(broken(lambda e: e.update(trigger="")), "'trigger' is empty")

    def test_private_recipients_shape(self) -> None:
        """Direct-message recipients must be {email, full_name} objects."""
        event = private_event(10, 5)
        event["message"]["recipients"] = ["iago@example.com"]
        self.assertMalformed(event, "expected a list of {email, full_name}")

    def test_stored_form_drops_runtime_fields(self) -> None:
        """The stored event has no failed_tries and is otherwise the event."""
        event = dict(stream_event(10, 1), failed_tries=2)
        stored = stored_form(event)
        self.assertNotIn("failed_tries", stored)
        self.assertEqual(stored["message"], event["message"])

    def test_validate_returns_a_copy(self) -> None:
        """validate_event returns the event unchanged."""
        event = stream_event(10, 1)
        self.assertEqual(validate_event(copy.deepcopy(event)), event)


class RoutingTests(unittest.TestCase):
    def test_queue_for_user(self) -> None:
        """One shard: the plain queue; S shards: missedmessage_emails_shard{id % S + 1}."""
        self.assertEqual(queue_for_user(10, 1), "missedmessage_emails")
        self.assertEqual(queue_for_user(10, 3), "missedmessage_emails_shard2")
        self.assertEqual(shard_of(12, 3), 1)

    def test_publish_helper(self) -> None:
        """publish_missedmessage publishes to the user's shard queue."""
        publisher = FakePublisher()
        self.successResultOf(publish_missedmessage(publisher, stream_event(11, 1), shards=2))
        self.assertEqual(publisher.published[0][0], "missedmessage_emails_shard2")
