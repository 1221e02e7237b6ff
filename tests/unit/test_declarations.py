"""Queue declarations from the configuration: types, arguments, the .failed queue, and what a refusal says."""

from __future__ import annotations

from twisted.trial import unittest

from zqtwisted.config import parse_config
from zqtwisted.runtime.declarations import QueueDeclaration, QueueDeclarations, explain_mismatch

# RabbitMQ 3.10's replies to inequivalent declarations, as the broker words them.
QUORUM_OVER_CLASSIC = (
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'email_senders' in vhost '/': "
    "received the value 'quorum' of type 'longstr' but current is none"
)
CLASSIC_OVER_QUORUM = (
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'email_senders' in vhost '/': "
    "received none but current is the value 'quorum' of type 'longstr'"
)
OTHER_LIMIT = (
    "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'email_senders' in vhost '/': "
    "received '7' but current is '5'"
)


class DeclarationTests(unittest.TestCase):
    def test_classic_has_no_arguments(self) -> None:
        """A classic queue is declared as Zulip declares it: durable, no arguments."""
        declarations = QueueDeclarations.from_config(parse_config({}))
        declaration = declarations("email_senders")
        self.assertEqual((declaration.queue_type, declaration.arguments()), ("classic", None))
        self.assertEqual(declaration.declare_first, ())
        self.assertIsNone(declaration.dead_letter_queue)

    def test_quorum_by_default_and_per_queue(self) -> None:
        """[workers] queue_type is the default; [queues.NAME] queue_type overrides it either way."""
        config = parse_config(
            {"workers": {"queue_type": "quorum"}, "queues": {"test": {"queue_type": "classic"}}},
        )
        declarations = QueueDeclarations.from_config(config)
        self.assertEqual(declarations("email_senders").arguments(), {"x-queue-type": "quorum"})
        self.assertIsNone(declarations("test").arguments())

    def test_delivery_limit_dead_letters_to_failed(self) -> None:
        """A delivery limit is passed with the .failed queue as the broker's dead-letter target."""
        config = parse_config({"queues": {"push": {"queue_type": "quorum", "delivery_limit": 5}}})
        declaration = QueueDeclarations.from_config(config)("push")
        self.assertEqual(
            declaration.arguments(),
            {
                "x-queue-type": "quorum",
                "x-delivery-limit": 5,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "push.failed",
            },
        )
        self.assertEqual(declaration.describe(), "quorum queue 'push' (delivery limit 5)")

    def test_failed_queue_follows_its_queue(self) -> None:
        """{queue}.failed has its queue's type, without limit or dead-lettering of its own."""
        config = parse_config({"queues": {"push": {"queue_type": "quorum", "delivery_limit": 5}}})
        declarations = QueueDeclarations.from_config(config)
        failed = declarations("push.failed")
        self.assertEqual(failed, QueueDeclaration("push.failed", "quorum"))
        self.assertEqual(failed.arguments(), {"x-queue-type": "quorum"})
        self.assertEqual(failed.declare_first, ())
        self.assertEqual(declarations("push").declare_first, ("push.failed",))
        self.assertIsNone(declarations("other.failed").arguments())
        self.assertEqual(declarations(".failed").queue_type, "classic")

    def test_shards_follow_their_queue(self) -> None:
        """NAME_shardN is declared as [queues.NAME] says."""
        config = parse_config({"queues": {"push": {"queue_type": "quorum"}}})
        declarations = QueueDeclarations.from_config(config)
        self.assertEqual(declarations("push_shard2").queue_type, "quorum")
        self.assertEqual(declarations("push_shard2.failed").queue_type, "quorum")

    def test_classic_table(self) -> None:
        """QueueDeclarations.classic() declares every queue classic."""
        self.assertIsNone(QueueDeclarations.classic()("anything").arguments())


class MismatchTests(unittest.TestCase):
    def test_quorum_wanted_over_a_classic_queue(self) -> None:
        """The message quotes the broker and says both ways out: keep the queue's type, or move the queue."""
        text = explain_mismatch(QueueDeclaration("email_senders", "quorum"), QUORUM_OVER_CLASSIC)
        self.assertIn("inequivalent arg 'x-queue-type'", text)
        self.assertIn("exists as a classic queue", text)
        self.assertIn('[queues.email_senders] queue_type = "classic"', text)
        self.assertIn("rabbitmqctl delete_queue email_senders", text)
        self.assertIn("Zulip's queue_json_publish declares classic queues", text)

    def test_classic_wanted_over_a_quorum_queue(self) -> None:
        """A quorum queue met by a classic declaration is named as quorum."""
        text = explain_mismatch(QueueDeclaration("email_senders"), CLASSIC_OVER_QUORUM)
        self.assertIn("exists as a quorum queue", text)
        self.assertIn('queue_type = "quorum"', text)

    def test_other_delivery_limit(self) -> None:
        """A different delivery limit names the queue's own."""
        text = explain_mismatch(QueueDeclaration("email_senders", "quorum", 7), OTHER_LIMIT)
        self.assertIn("[queues.email_senders] delivery_limit = 5", text)

    def test_limit_wanted_where_there_is_none(self) -> None:
        """A limit (or dead-letter argument) the queue does not have says to set none."""
        reply = (
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': "
            "received the value '' of type 'longstr' but current is none"
        )
        self.assertIn(
            "remove delivery_limit from [queues.q]", explain_mismatch(QueueDeclaration("q", "quorum", 3), reply)
        )

    def test_classic_wanted_over_a_limited_quorum_queue(self) -> None:
        """A classic declaration of a quorum queue with a limit says to declare it quorum with its limit."""
        reply = (
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in vhost '/': "
            "received none but current is the value '' of type 'longstr'"
        )
        text = explain_mismatch(QueueDeclaration("q"), reply)
        self.assertIn('set [queues.q] queue_type = "quorum" and delivery_limit = the queue\'s', text)

    def test_unknown_refusal(self) -> None:
        """Any other refusal still quotes the broker and says how to change the queue."""
        text = explain_mismatch(QueueDeclaration("q", "quorum"), "PRECONDITION_FAILED - something new")
        self.assertIn("something new", text)
        self.assertIn("rabbitmqctl delete_queue q", text)
