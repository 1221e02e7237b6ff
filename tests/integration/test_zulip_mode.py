"""Zulip mode as a Zulip server uses it: a real ``twistd zqworkers`` child on a database loaded from the fixture.

Events are built as Zulip's publishers build them (tests/zulip_events.py); the bot's
endpoint, Zulip's REST API and the push bouncer are local servers on 127.0.0.1;
PostgreSQL is reached through a cuttable TCP proxy (the shared server is never stopped).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from tests.contract import inline
from tests.helpers import free_port
from tests.integration.base import IntegrationCase
from tests.integration.proxy import CuttableProxy
from tests.integration.test_missedmessage_postgres import require_postgres
from tests.integration.zulip_servers import Recorded, Recorder, serve
from tests.zulip_db import ZulipTestDatabase
from tests.zulip_events import outgoing_webhook_event, push_add_event, push_remove_event
from zqtwisted.push.testing import serve_bouncer

REPO = Path(__file__).resolve().parents[2]
WEBHOOKS = "outgoing_webhooks"
PUSH = "missedmessage_mobile_notifications"
SERVER_UUID = "6cde5f7a-1f7e-4978-9716-49f69ebfc9fe"
SERVER_KEY = "bouncer-api-key"
READ, MENTIONED = 1, 8


def bot_answer(request: Recorded) -> Any:
    if request.headers.get("content-type", "").startswith("application/json"):
        return {"content": "pong"}
    return {"text": "slack pong"}


class ZulipModeTests(IntegrationCase):
    timeout = 240

    def setUp(self):  # type: ignore[no-untyped-def]
        require_postgres(self)
        self.children: list[subprocess.Popen[bytes]] = []
        self.addCleanup(self._kill_children)
        self.db = ZulipTestDatabase()
        self.addCleanup(self.db.drop)
        self.pg = CuttableProxy(reactor, port=5432)
        self.pg.start()
        self.addCleanup(lambda: ensureDeferred(self.pg.stop()))
        self.bot_server = Recorder(bot_answer)
        self.api = Recorder()
        for resource in (self.bot_server, self.api):
            port, number = serve(reactor, resource)
            self.addCleanup(port.stopListening)
            resource.port = number
        self.bouncer = serve_bouncer(reactor, {SERVER_UUID: SERVER_KEY})
        self.addCleanup(lambda: ensureDeferred(self.bouncer.stop()))
        return super().setUp()

    def _kill_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait(10)

    async def purge(self) -> None:
        session = await self.direct.session(30)
        for queue in (WEBHOOKS, PUSH, f"{WEBHOOKS}.failed", f"{PUSH}.failed"):
            await session.declare_queue(queue)
            await session.purge(queue)

    def spawn(self, http_port: int = 0) -> subprocess.Popen[bytes]:
        config = Path(self.tmp) / "zqtwisted.toml"
        config.write_text(
            f"""
[workers]
drain_timeout = 5
http = "tcp:{http_port}:interface=127.0.0.1"
[paths]
stats_dir = "{self.tmp}"
error_dir = "{self.tmp}"
[outgoing_webhooks]
allow_networks = ["127.0.0.0/8"]
timeout = 5
[push]
bouncer_url = "{self.bouncer.url}"
server_uuid = "{SERVER_UUID}"
api_key = "{SERVER_KEY}"
[zulip]
database = "host=127.0.0.1 port={self.pg.listen_port} dbname={self.db.name} user=postgres"
external_host = "zulip.example.com"
uri_scheme = "http://"
api_url = "http://127.0.0.1:{self.api.port}"
version = "11.4"
query_timeout = 3
connect_timeout = 2
[queues.{WEBHOOKS}]
retry_base = 0.2
retry_cap = 1.0
[queues.{PUSH}]
retry_base = 0.2
retry_cap = 1.0
"""
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "ZQ_CONFIG": str(config)}
        env.pop("ZQ_BROKER_URL", None)
        log = open(Path(self.tmp) / f"twistd-{len(self.children)}.log", "wb")
        self.addCleanup(log.close)
        child = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "zqworkers",
             "--queue", WEBHOOKS, "--queue", PUSH],
            env=env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.children.append(child)
        return child

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(Path(self.tmp).glob("twistd-*.log")))

    async def stop(self, child: subprocess.Popen[bytes]) -> None:
        child.send_signal(signal.SIGTERM)
        await self.until(lambda: child.poll() is not None, timeout=30)

    async def ready(self, port: int) -> tuple[int, Any]:
        """The child's /ready: status and the dependencies it names unavailable."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(f"http://127.0.0.1:{port}/ready", timeout=5, pool=pool)
        body = json.loads(await response.text())
        return response.code, body.get("unavailable")

    def world(self) -> dict[str, Any]:
        """A realm, a sender whose real address is hidden, a bot with two services, a channel, a user with devices."""
        db = self.db
        realm = db.realm("zulip", "Zulip Dev")
        hamlet = db.user(realm, "user10@zulip.example.com", "King Hamlet", delivery_email="hamlet@private.example.org")
        owner = db.user(realm, "cordelia@zulip.example.com", "Cordelia")
        bot = db.user(
            realm, "pong-bot@zulip.example.com", "Pong Bot", is_bot=True, bot_type=3, bot_owner_id=owner,
            api_key="botapikey0123456789abcdef012345",
        )  # fmt: skip
        othello = db.user(realm, "othello@zulip.example.com", "Othello")
        stream_id, stream_recipient = db.stream(realm, "Denmark", [hamlet, bot, othello, owner])
        return {
            "realm": realm, "hamlet": hamlet, "owner": owner, "bot": bot, "othello": othello,
            "stream_id": stream_id, "stream_recipient": stream_recipient,
        }  # fmt: skip

    @inline
    async def test_outgoing_webhooks_as_zulip_publishes_them(self) -> None:
        """do_send_messages' event reaches the bot's endpoints (generic and Slack) and the reply goes to Zulip's API."""
        await self.purge()
        w = self.world()
        db = self.db
        db.service(w["bot"], "generic", f"http://127.0.0.1:{self.bot_server.port}/generic", "generic-token", 1)
        db.service(w["bot"], "slack", f"http://127.0.0.1:{self.bot_server.port}/slack", "slack-token", 2)
        message = db.message(
            w["realm"], w["hamlet"], w["stream_recipient"], "@**Pong Bot** ping", "<p>ping</p>", topic="castle",
            receivers={w["hamlet"]: READ, w["bot"]: MENTIONED, w["othello"]: 0},
        )  # fmt: skip
        event = outgoing_webhook_event(db, message, w["bot"], "mention")
        self.assertEqual(event["message"]["sender_delivery_email"], "hamlet@private.example.org")
        child = self.spawn()
        await self.publish(WEBHOOKS, [event])
        await self.until(lambda: len(self.bot_server.requests) == 2, timeout=60)
        await self.until(lambda: len(self.api.requests) >= 3, timeout=30)
        await self.stop(child)

        generic = next(r for r in self.bot_server.requests if r.path == "/generic")
        body = generic.json()
        self.assertNotIn(b"hamlet@private.example.org", generic.body)
        self.assertEqual(generic.headers["user-agent"], "ZulipOutgoingWebhook/11.4")
        self.assertEqual(
            {k: body[k] for k in ("data", "bot_email", "bot_full_name", "token", "trigger")},
            {
                "data": "@**Pong Bot** ping",
                "bot_email": "pong-bot@zulip.example.com",
                "bot_full_name": "Pong Bot",
                "token": "generic-token",
                "trigger": "mention",
            },
        )
        sent = body["message"]
        self.assertNotIn("sender_delivery_email", sent)
        self.assertEqual(sent["content_type"], "text/x-markdown")
        self.assertTrue(sent["avatar_url"].startswith("https://secure.gravatar.com/avatar/"))
        self.assertEqual((sent["id"], sent["display_recipient"], sent["subject"]), (message, "Denmark", "castle"))

        slack = dict(parse_qsl(next(r for r in self.bot_server.requests if r.path == "/slack").body.decode()))
        self.assertEqual(slack["token"], "slack-token")
        self.assertEqual(slack["team_id"], f"T{w['realm'].id}")
        self.assertEqual(slack["team_domain"], "zulip.zulip.example.com")
        self.assertEqual(slack["channel_id"], f"C{w['stream_id']}")
        self.assertEqual(
            (slack["channel_name"], slack["user_name"], slack["text"]), ("Denmark", "King Hamlet", "@**Pong Bot** ping")
        )
        self.assertEqual((slack["trigger_word"], slack["service_id"]), ("mention", str(w["bot"])))

        auth = "Basic " + base64.b64encode(b"pong-bot@zulip.example.com:botapikey0123456789abcdef012345").decode()
        replies = [r for r in self.api.requests if r.path == "/api/v1/messages"]
        self.assertEqual(len(replies), 2)
        for reply in replies:
            self.assertEqual(reply.headers["authorization"], auth)
            self.assertEqual(reply.headers["host"], "zulip.zulip.example.com")
        fields = [dict(parse_qsl(r.body.decode())) for r in replies]
        self.assertEqual(sorted(f["content"] for f in fields), ["pong", "slack pong"])
        for f in fields:
            self.assertEqual((f["type"], f["to"], f["topic"]), ("stream", str(w["stream_id"]), "castle"))
        flags = [dict(parse_qsl(r.body.decode())) for r in self.api.requests if r.path == "/api/v1/messages/flags"]
        self.assertEqual(flags, [{"messages": json.dumps([message]), "op": "add", "flag": "read"}])
        self.assertNotIn("hamlet@private.example.org", self.log_text())
        self.assertNotIn("@**Pong Bot** ping", self.log_text())

    @inline
    async def test_push_add_read_and_remove(self) -> None:
        """A push add reaches the bouncer with uuids, tokens and content; a read message sends nothing; remove too."""
        await self.purge()
        w = self.world()
        db = self.db
        user = w["othello"]
        db.device_token(user, 1, "apns-token-1", "org.zulip.Zulip")
        db.device_token(user, 2, "fcm-token-1")
        dm = db.recipient_of_user(user)
        unread = db.message(w["realm"], w["hamlet"], dm, "hello", "<p>hello <strong>world</strong></p>",
                            receivers={w["hamlet"]: READ, user: 0})  # fmt: skip
        read = db.message(w["realm"], w["hamlet"], dm, "old", "<p>old</p>", receivers={w["hamlet"]: READ, user: READ})
        child = self.spawn()
        await self.publish(PUSH, [push_add_event(user, read, "direct_message")])
        await self.until(lambda: f"Message {read} is already read" in self.log_text(), timeout=60)
        await self.publish(PUSH, [push_add_event(user, unread, "direct_message")])
        await self.until(lambda: len(self.bouncer.bouncer.requests) == 1, timeout=60)
        await self.publish(PUSH, [push_remove_event(user, [unread])])
        await self.until(lambda: len(self.bouncer.bouncer.requests) == 2, timeout=60)
        await self.stop(child)

        add, remove = (r.body for r in self.bouncer.bouncer.requests)
        ((user_uuid, realm_uuid),) = db.execute(
            "SELECT u.uuid::text, r.uuid::text FROM zerver_userprofile u JOIN zerver_realm r ON r.id = u.realm_id "
            "WHERE u.id = %s", (user,)
        )  # fmt: skip
        self.assertEqual((add["user_uuid"], add["user_id"], add["realm_uuid"]), (user_uuid, user, realm_uuid))
        self.assertEqual((add["apple_devices"], add["android_devices"]), (["apns-token-1"], ["fcm-token-1"]))
        self.assertEqual(add["gcm_payload"]["content"], "hello world")
        self.assertEqual(add["gcm_payload"]["zulip_message_id"], unread)
        self.assertEqual(add["apns_payload"]["alert"], {"title": "King Hamlet", "subtitle": "", "body": "hello world"})
        self.assertEqual(add["gcm_payload"]["realm_url"], "http://zulip.zulip.example.com")
        self.assertEqual(remove["gcm_payload"]["zulip_message_ids"], str(unread))
        self.assertEqual(remove["apns_payload"]["custom"]["zulip"]["event"], "remove")
        self.assertEqual(db.flags(user, unread) & 4096, 0)

    @inline
    async def test_database_cut_mid_stream_loses_nothing(self) -> None:
        """PostgreSQL cut off by the proxy mid-stream: every event is retried and delivered once it is back."""
        await self.purge()
        w = self.world()
        db = self.db
        user = w["othello"]
        db.device_token(user, 1, "apns-token-2", "org.zulip.Zulip")
        db.device_token(user, 2, "fcm-token-2")
        dm = db.recipient_of_user(user)
        ids = [db.message(w["realm"], w["hamlet"], dm, f"m{i}", f"<p>m{i}</p>", receivers={user: 0}) for i in range(20)]
        port = free_port()
        child = self.spawn(port)
        await self.publish(PUSH, [push_add_event(user, ids[0], "direct_message")])
        await self.until(lambda: len(self.bouncer.bouncer.requests) == 1, timeout=60)
        self.assertEqual((await self.ready(port))[0], 200)
        await self.pg.refuse()
        self.pg.cut()
        await self.publish(PUSH, [push_add_event(user, m, "direct_message") for m in ids[1:]])
        await deferLater(reactor, 8, lambda: None)
        self.assertEqual(len(self.bouncer.bouncer.requests), 1)
        self.assertEqual(await self.ready(port), (503, ["zulip_database"]))
        self.pg.start()
        await self.until(lambda: len(self.bouncer.bouncer.requests) == 20, timeout=90)
        await self.stop(child)
        sent = sorted(r.body["gcm_payload"]["zulip_message_id"] for r in self.bouncer.bouncer.requests)
        self.assertEqual(sent, ids)
        self.assertEqual(await self.dead_letters(PUSH), [])
        self.assertIn("does not answer", self.log_text())
