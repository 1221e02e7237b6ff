"""The dashboard in a real browser (headless Chromium) against a running ``twistd zqworkers`` on the real RabbitMQ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.contract import inline
from tests.helpers import free_port
from tests.integration.browser import chromium, console_errors, page_fetch, require_browser
from tests.integration.dashboard_base import QUEUE, TOKEN, DashboardCase

REPO = Path(__file__).resolve().parents[2]
# What the browser logs when the page's own fetch is refused (the test asks for it).
REFUSED = ("status of 401",)


class BrowserTests(DashboardCase):
    timeout = 240

    def setUp(self):  # type: ignore[no-untyped-def]
        require_browser(self)
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        return super().setUp()

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(10)

    def spawn_service(self) -> None:
        """``twistd -n zqworkers --queue zq_itest_dashboard`` with the dashboard on a free port and a token file."""
        self.port = free_port()
        token_file = Path(self.tmp) / "http-token"
        token_file.write_text(TOKEN + "\n")
        config = Path(self.tmp) / "zqtwisted.toml"
        config.write_text(
            "[workers]\n"
            'consumer_modules = ["tests.integration.workers"]\n'
            "drain_timeout = 10\n"
            f'http = "tcp:{self.port}:interface=127.0.0.1"\n'
            f'http_token_file = "{token_file}"\n'
            "[paths]\n"
            f'stats_dir = "{self.tmp}"\nerror_dir = "{self.tmp}"\n'
            f'test_queue_file = "{self.tmp}/test_queue.jsonl"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config), "ZQ_ITEST_OUT": self.out}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / "twistd.log", "wb")
        self.addCleanup(log.close)
        twistd = "from twisted.scripts.twistd import run; run()"
        command = [sys.executable, "-c", twistd, "-n", "--pidfile=", "zqworkers", "--queue", QUEUE]
        self.children.append(subprocess.Popen(command, env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT))

    def log_text(self) -> str:
        return (Path(self.tmp) / "twistd.log").read_text(errors="replace")

    async def until_page(self, driver: Any, script: str, timeout: float = 30) -> Any:
        """Wait (bounded) until ``script`` (a JS expression) is truthy in the page; its value."""
        for _ in range(int(timeout / 0.1)):
            value = driver.execute_script(f"return {script};")
            if value:
                return value
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"the page never had {script} within {timeout}s; log:\n{self.log_text()[-2000:]}")

    async def service_answers(self) -> None:
        for _ in range(300):
            try:
                if (await self.call("GET", "/ready"))[0] == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"the service did not get ready:\n{self.log_text()[-3000:]}")

    def row_depth(self) -> str:
        return f"(document.querySelector('tr[data-queue=\"{QUEUE}\"]') || {{dataset: {{}}}}).dataset.depth"

    @inline
    async def test_the_page_follows_the_queue_and_replays_a_dead_letter(self) -> None:
        """In Chromium: no console error, depth follows publishes, a dead letter shows its reason, replay needs
        the token and brings the event back to be processed."""
        self.spawn_service()
        await self.service_answers()
        with chromium() as driver:
            driver.get(f"http://127.0.0.1:{self.port}/")
            await self.until_page(driver, "document.getElementById('connection').textContent === 'RabbitMQ connected'")
            await self.until_page(driver, f"{self.row_depth()} === '0'")
            self.assertEqual(console_errors(driver), [])

            # The depth on the page follows events being published (and drained: 1 s each, 10 at a time).
            await self.publish(QUEUE, [{"id": i, "delay": 1.0} for i in range(100)])
            depth = await self.until_page(driver, f"Number({self.row_depth()}) >= 40 && {self.row_depth()}")
            self.assertLessEqual(int(depth), 100)
            await self.until_page(driver, f"{self.row_depth()} === '0'", timeout=60)
            self.assertEqual(sorted(map(int, self.recorded())), list(range(100)))

            # A dead letter appears with its reason.
            marker = Path(self.tmp) / "failing"
            await self.make_dead_letters(1, marker, first=1000)
            reason = await self.until_page(driver, "(document.querySelector('.letter .reason') || {}).textContent")
            self.assertEqual(reason, "permanent")
            message = driver.execute_script("return document.querySelector('.letter .msg').textContent;")
            self.assertIn("event 1000 fails while", message)
            self.assertEqual(driver.find_element("id", "dead-count").text, "1")
            self.assertEqual(console_errors(driver), [])

            # An action without the token is refused, from the page itself and through the page's dialog.
            self.assertEqual(page_fetch(driver, "POST", f"/api/failed/{QUEUE}/replay"), 401)
            driver.find_element("css selector", ".letter .replay").click()
            await self.until_page(driver, "document.getElementById('token-dialog').open")
            driver.find_element("id", "token-input").send_keys("not-the-right-token")
            driver.find_element("id", "token-submit").click()
            await self.until_page(driver, "document.getElementById('token-error').textContent === 'Wrong token.'")
            driver.find_element("id", "token-cancel").click()
            self.assertEqual((await self.counts(f"{QUEUE}.failed"))[0], 1)
            self.assertNotIn("1000", self.recorded())

            # Replay from the page, with the token: the event goes back and is processed.
            os.unlink(marker)
            driver.find_element("css selector", ".letter .replay").click()
            await self.until_page(driver, "document.getElementById('token-dialog').open")
            driver.find_element("id", "token-input").send_keys(TOKEN)
            driver.find_element("id", "token-submit").click()
            await self.until(lambda: "1000" in self.recorded(), timeout=30)
            await self.until_page(driver, "document.querySelector('#letters .empty-state') !== null")
            toasts = "Array.from(document.querySelectorAll('.toast'), t => t.textContent).join(' | ')"
            await self.until_page(driver, f"{toasts}.includes('Replayed 1 event to {QUEUE}')")
            self.assertEqual((await self.counts(f"{QUEUE}.failed"))[0], 0)
            self.assertEqual(console_errors(driver, allowed=REFUSED), [])

    @inline
    async def test_the_page_on_a_phone(self) -> None:
        """On a phone-sized screen the page shows the queue as a card, without horizontal scrolling."""
        self.spawn_service()
        await self.service_answers()
        with chromium(390, 844, mobile=True) as driver:
            driver.get(f"http://127.0.0.1:{self.port}/")
            await self.until_page(driver, f"{self.row_depth()} === '0'")
            width = driver.execute_script("return document.documentElement.scrollWidth;")
            self.assertLessEqual(width, 390)
            self.assertEqual(
                driver.execute_script("return getComputedStyle(document.querySelector('thead')).display;"), "none"
            )
            self.assertEqual(console_errors(driver), [])
