"""Defect 5 of issue 15: RabbitMQ refusing the credentials is one clear line, in the service and in zqctl.

Against the default node: a refused login changes nothing on the broker.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from tests.contract import inline
from tests.helpers import free_port, require_rabbitmq
from tests.integration.trouble import QUEUE, Child, until, zqctl

REFUSED = (
    "RabbitMQ at 127.0.0.1:5672 refused the credentials of user guest (ACCESS_REFUSED): "
    "check [broker] url / password_file"
)
WRONG = "wr0ng-s3cret"


class CredentialsTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        require_rabbitmq(self)
        self.tmp = tempfile.mkdtemp(prefix="zqtest-credentials-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    @inline
    async def test_the_service_says_so_once_per_try_and_keeps_trying(self) -> None:
        """A wrong password: one error line per try naming node and user (never the password), no traceback,
        retried with backoff; /ready 503 says why while /health stays 200; SIGTERM still stops it cleanly."""
        password = Path(self.tmp) / "broker-password"
        password.write_text(WRONG + "\n")
        port = free_port()
        config = (
            f'[broker]\nurl = "amqp://guest@127.0.0.1:5672/%2F"\npassword_file = "{password}"\n'
            "reconnect_initial_delay = 0.2\nreconnect_max_delay = 1.0\n"
            f'[workers]\nconsumer_modules = ["tests.integration.workers"]\nhttp = "tcp:{port}:interface=127.0.0.1"\n'
        )
        child = Child(self.tmp, config, "--queue", QUEUE, port=port)
        self.addCleanup(child.kill)
        await until(lambda: child.log().count(REFUSED) >= 3, 60, "three refused tries")

        async def ready_says_why() -> bool:
            code, body = await child.ready()
            return code == 503 and body.get("reason") == REFUSED

        await until(ready_says_why, 30, "/ready 503 with the refusal")
        _, body = await child.ready()
        self.assertFalse(body["connected"])
        self.assertEqual((await child.get("/health"))[0], 200)
        self.assertIsNone(child.process.poll(), "the service keeps running, and trying")
        status, _ = await child.stop()
        self.assertEqual(status, -signal.SIGTERM)
        log = child.log()
        for noise in ("Traceback", "Unhandled Error", "NoTransition", WRONG, ": 1\n"):
            self.assertNotIn(noise, log)
        lines = [line for line in log.splitlines() if "refused" in line]
        self.assertTrue(all(line.endswith(REFUSED) and "#error]" in line for line in lines), lines)

    @inline
    async def test_zqctl_says_so_in_one_line(self) -> None:
        """zqctl with a wrong password exits 1 at once, its only output the line saying the broker refused it."""
        url = f"amqp://guest:{WRONG}@127.0.0.1:5672/%2F"
        commands: list[tuple[str, ...]] = [("publish", "noop", "{}"), ("purge", "noop"), ("failed", "noop")]
        for command in commands:
            code, out, err, seconds = await zqctl("--broker", url, *command)
            self.assertEqual((code, out, err), (1, "", f"zqctl: {REFUSED}\n"), command)
            self.assertLess(seconds, 10)

    @inline
    async def test_zqctl_names_a_refused_vhost(self) -> None:
        """A vhost the user may not use (here: one that does not exist) is named, in one line."""
        code, _, err, _ = await zqctl("--broker", "amqp://guest:guest@127.0.0.1:5672/no_such_vhost", "purge", "noop")
        expected: Any = (
            "zqctl: RabbitMQ at 127.0.0.1:5672 refused user guest access to vhost 'no_such_vhost' "
            "(NOT_ALLOWED - vhost no_such_vhost not found): "
            "check the vhost in [broker] url and the user's permissions\n"
        )
        self.assertEqual((code, err), (1, expected))
