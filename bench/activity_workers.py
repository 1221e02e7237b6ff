"""The shipped ``user_activity`` worker on the benchmark's own queue, loaded by ``[workers] consumer_modules``.

The same declaration as zqtwisted/consumers/user_activity.py (worker class, build over
Zulip's shared database, Zulip mode required), named ``bench_user_activity`` so that the
benchmark never touches a queue a Zulip server may use.
"""

from __future__ import annotations

from typing import Any

from zqtwisted.consumers.user_activity import UserActivityWorker, build_activity_worker, zulip_mode_required
from zqtwisted.runtime.consumer import ConsumerSpec
from zqtwisted.zulip.activity_settings import UserActivitySettings

QUEUE = "bench_user_activity"

SPECS: tuple[ConsumerSpec[Any], ...] = (
    ConsumerSpec(
        QUEUE,
        UserActivityWorker,
        build_activity_worker,
        section="user_activity",
        settings=UserActivitySettings,
        requires=zulip_mode_required,
    ),
)
