"""Types for what the runtime needs of a reactor, so that fakes can stand in."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

# The full reactor (time, TCP, TLS, core).  zope interfaces do not compose into
# one static type, so the composition root passes the reactor and classes that
# need only time take an IReactorTime.
ReactorLike = Any

__all__ = ["IReactorTime", "ReactorLike"]
