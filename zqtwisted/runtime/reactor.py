"""Types for what the runtime needs of a reactor, so that fakes can stand in."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorPluggableNameResolver, IReactorTCP, IReactorTime

# The full reactor (time, TCP, TLS, core).  zope interfaces do not compose into
# one static type, so the composition root passes the reactor and classes that
# need only time take an IReactorTime.
ReactorLike = Any


class IConnectingReactor(IReactorTime, IReactorTCP, IReactorPluggableNameResolver):
    """What a network client (HTTP, SMTP) uses of the reactor: time for deadlines, TCP, name resolution.

    The real reactor provides all three; in tests a ``MemoryReactorClock``
    subclass declared ``@implementer(IConnectingReactor)`` stands in.
    """


def untyped_deferred(result: Any) -> Deferred[Any]:
    """``result``, the Deferred a library without types (pika) returned, typed as one."""
    return cast("Deferred[Any]", result)


__all__ = ["IConnectingReactor", "IReactorTime", "ReactorLike", "untyped_deferred"]
