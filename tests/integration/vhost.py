"""A RabbitMQ vhost of a test's own (``rabbitmqctl add_vhost``), deleted afterwards.

Tests that need to see every queue of a vhost, or that must leave the shared
default vhost alone, use one.  ``rabbitmqctl`` needs root (or the rabbitmq user).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from urllib.parse import quote

from twisted.trial import unittest

from tests.helpers import missing_requirement
from zqtwisted.ops.queues import find_rabbitmqctl

RABBITMQCTL_TIMEOUT = 60


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl ARGS`` and return its output (raises on failure)."""
    command = find_rabbitmqctl("rabbitmqctl")
    done = subprocess.run([command, *args], capture_output=True, text=True, timeout=RABBITMQCTL_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def require_rabbitmqctl(test: unittest.TestCase) -> None:
    """rabbitmqctl must be usable: fail under CI, skip (saying so) elsewhere."""
    command = find_rabbitmqctl("rabbitmqctl")
    problem = None
    if shutil.which(command) is None:
        problem = "rabbitmqctl is not installed"
    else:
        try:
            rabbitmqctl("-q", "list_vhosts")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            problem = f"rabbitmqctl does not work here (run the tests as root): {e}"
    if problem is not None:
        missing_requirement(test, problem)


def fresh_vhost(test: unittest.TestCase, user: str = "guest") -> str:
    """A new vhost that ``user`` may use fully, deleted when the test ends; returns its name."""
    name = f"zqtest-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    test.addCleanup(rabbitmqctl, "delete_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    return name


def vhost_url(vhost: str, port: int = 5672) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/{quote(vhost, safe='')}"


def list_queues(vhost: str) -> str:
    """What Zulip's check reads: ``rabbitmqctl list_queues name messages consumers`` (on this vhost)."""
    return rabbitmqctl("list_queues", "-p", vhost, "name", "messages", "consumers")
