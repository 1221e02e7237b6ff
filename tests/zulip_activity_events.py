"""User-activity events built exactly as the Zulip functions that publish them build them.

* :func:`user_activity_event`: ``update_user_activity`` (zerver/decorator.py), called for every
  authenticated request: ``{"query", "user_profile_id", "time", "client_id"}`` with
  ``time = datetime_to_timestamp(timezone_now())`` (whole epoch seconds), published with
  ``queue_json_publish_rollback_unsafe`` to :func:`user_activity_queue`;
* :func:`user_activity_interval_event`: ``update_user_activity_interval``
  (zerver/actions/user_activity.py), called by the presence view on new user input:
  ``{"user_profile_id", "time": datetime_to_timestamp(log_time)}`` on ``user_activity_interval``.
"""

from __future__ import annotations

import calendar
from datetime import datetime
from typing import Any

PRESENCE_PATH = "/json/users/me/presence"


def datetime_to_timestamp(dt: datetime) -> int:
    """Zulip's ``datetime_to_timestamp`` (zerver/lib/timestamp.py): whole seconds of a UTC datetime."""
    return calendar.timegm(dt.utctimetuple())


def user_activity_queue(user_profile_id: int, shards: int = 1) -> str:
    """The queue ``update_user_activity`` publishes to under ``USER_ACTIVITY_SHARDS = shards``."""
    if shards > 1:
        return f"user_activity_shard{user_profile_id % shards + 1}"
    return "user_activity"


def user_activity_event(
    user_profile_id: int, client_id: int, path: str, now: datetime, query: str | None = None
) -> dict[str, Any] | None:
    """``update_user_activity(request, user_profile, query)``: None for the presence endpoint (nothing published).

    ``query`` is the view's explicit query or ``RequestNotes.query``; otherwise the request's ``PATH_INFO``.
    """
    if path == PRESENCE_PATH:
        return None
    return {
        "query": query if query is not None else path,
        "user_profile_id": user_profile_id,
        "time": datetime_to_timestamp(now),
        "client_id": client_id,
    }


def user_activity_interval_event(user_profile_id: int, log_time: datetime) -> dict[str, Any]:
    """``update_user_activity_interval(user_profile, log_time)``."""
    return {"user_profile_id": user_profile_id, "time": datetime_to_timestamp(log_time)}
