"""What each queue is declared with: its RabbitMQ type and arguments, read from the configuration.

Every piece that declares queues (the service's consumers and publishes, ``zqctl``, the
blocking publisher) asks one :class:`QueueDeclarations`, so that all of them declare a
queue the same way: RabbitMQ refuses a declaration whose arguments differ from those of
the queue as it exists (channel error 406 PRECONDITION_FAILED, "inequivalent arg
'x-queue-type'"), and a queue's type and arguments never change once it exists.

- ``classic`` (the default): no arguments at all, exactly what Zulip's publishers declare;
- ``quorum``: ``x-queue-type = quorum``; with a ``delivery_limit`` also ``x-delivery-limit``,
  and ``{queue}.failed`` as its dead-letter queue (default exchange), so that a message
  delivered more often than that (a poison message that kills its worker) is dead-lettered
  by the broker itself;
- ``{queue}.failed`` has the type of ``{queue}`` and no other argument.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zqtwisted.config import CLASSIC, QUORUM, Config, QueueSettings, WorkerSettings
from zqtwisted.runtime.deadletter import FAILED_SUFFIX, failed_queue

PRECONDITION_FAILED = 406


class QueueMismatch(Exception):
    """RabbitMQ refused a declaration: the queue exists with other arguments.  The message says what to do."""


@dataclass(frozen=True)
class QueueDeclaration:
    """How one queue is declared (always durable)."""

    name: str
    queue_type: str = CLASSIC
    delivery_limit: int | None = None

    @property
    def dead_letter_queue(self) -> str | None:
        """Where the broker itself dead-letters: ``{queue}.failed`` for a quorum queue with a delivery limit."""
        if self.queue_type == QUORUM and self.delivery_limit is not None:
            return failed_queue(self.name)
        return None

    @property
    def declare_first(self) -> tuple[str, ...]:
        """Queues its consumer declares before it: a quorum queue's ``.failed`` (the broker's dead letters go there)."""
        if self.queue_type == CLASSIC or self.name.endswith(FAILED_SUFFIX):
            return ()
        return (failed_queue(self.name),)

    def arguments(self) -> dict[str, Any] | None:
        """The ``queue_declare`` arguments; None for a classic queue (as Zulip declares it)."""
        if self.queue_type == CLASSIC:
            return None
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        dead_letters = self.dead_letter_queue
        if dead_letters is not None:
            arguments["x-delivery-limit"] = self.delivery_limit
            arguments["x-dead-letter-exchange"] = ""
            arguments["x-dead-letter-routing-key"] = dead_letters
        return arguments

    def describe(self) -> str:
        """``quorum queue 'x' (delivery limit 5)``, for messages."""
        limit = f" (delivery limit {self.delivery_limit})" if self.dead_letter_queue else ""
        return f"{self.queue_type} queue {self.name!r}{limit}"


class QueueDeclarations:
    """The declaration of any queue name, from ``[workers] queue_type`` and ``[queues.NAME]``.

    A shard (``x_shard2``) follows ``[queues.x]``; ``x.failed`` follows the type of ``x``.
    """

    def __init__(self, settings: Callable[[str], QueueSettings], default_type: str = CLASSIC) -> None:
        self._settings = settings
        self._default_type = default_type

    @classmethod
    def from_config(cls, config: Config) -> QueueDeclarations:
        return cls(config.queue, config.workers.queue_type)

    @classmethod
    def classic(cls) -> QueueDeclarations:
        """Every queue classic, no arguments (the defaults; what Zulip declares)."""
        return cls(lambda name: QueueSettings(), WorkerSettings().queue_type)

    def __call__(self, name: str) -> QueueDeclaration:
        if name.endswith(FAILED_SUFFIX) and len(name) > len(FAILED_SUFFIX):
            base = self(name[: -len(FAILED_SUFFIX)])
            return QueueDeclaration(name, base.queue_type)
        settings = self._settings(name)
        queue_type = settings.queue_type or self._default_type
        limit = settings.delivery_limit if queue_type == QUORUM else None
        return QueueDeclaration(name, queue_type, limit)


_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'.*?received (.+?) but current is (.+?)\s*$", re.S)


def _value(text: str) -> str | None:
    """``the value 'quorum' of type 'longstr'`` -> ``quorum``; ``none`` -> None; ``'5'`` -> ``5``."""
    if text == "none":
        return None
    quoted = re.search(r"'([^']*)'", text)
    return quoted.group(1) if quoted else text


def explain_mismatch(wanted: QueueDeclaration, reply_text: str) -> str:
    """What an operator reads when RabbitMQ refused ``wanted``: what differs and what to do."""
    name = wanted.name
    found = _INEQUIVALENT.search(reply_text)
    arg, current = (found.group(1), _value(found.group(3))) if found else ("", None)
    head = f"RabbitMQ refused to declare {wanted.describe()}: {reply_text}."
    how_to_move = (
        f"To change it, stop every consumer and publisher of {name!r}, let it drain (zqctl queues), "
        f"delete it (rabbitmqctl delete_queue {name}) and start them again; every publisher must declare it "
        f"with the same arguments (zqtwisted's own do, from this configuration; Zulip's queue_json_publish "
        f"declares classic queues, with no arguments)."
    )
    if arg == "x-queue-type":
        existing = current or CLASSIC
        return (
            f"{head} The queue exists as a {existing} queue and a queue's type never changes. Either set "
            f'[queues.{name}] queue_type = "{existing}" (or [workers] queue_type) to use it as it is, '
            f"or make it a {wanted.queue_type} queue. {how_to_move}"
        )
    if arg in ("x-delivery-limit", "x-dead-letter-exchange", "x-dead-letter-routing-key"):
        if current is None:  # asked for a limit the queue does not have
            fix = f"remove delivery_limit from [queues.{name}]"
        else:
            quorum = "" if wanted.queue_type == QUORUM else 'queue_type = "quorum" and '
            limit = current if arg == "x-delivery-limit" else "the queue's (rabbitmqctl list_queues name arguments)"
            fix = f"set [queues.{name}] {quorum}delivery_limit = {limit}"
        return (
            f"{head} The queue exists with another delivery limit or dead-letter setting ({arg} is "
            f"{'none' if current is None else repr(current)}), and a queue's arguments never change. Either {fix} "
            f"to use it as it is, or change the queue. {how_to_move}"
        )
    return f"{head} The queue exists with other arguments, which never change. {how_to_move}"
