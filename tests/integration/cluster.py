"""The local three-node RabbitMQ cluster of ``tools/rabbitmq-cluster``, for the tests that need one.

``tools/test`` starts it before the tests and stops it afterwards.  A test that needs it
calls :func:`require_cluster`: under CI a missing cluster fails the test, elsewhere the
test is skipped, saying how to start it.  ``rabbitmqctl`` runs through the tool (``ctl
N ...``), which names the node with ``-n`` and uses the nodes' Erlang cookie; it never
touches the machine's default node.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from tests.helpers import missing_requirement

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "rabbitmq-cluster"


@dataclass(frozen=True)
class ClusterNode:
    index: int
    name: str
    port: int
    url: str

    @property
    def label(self) -> str:
        """How zqtwisted names the node (``BrokerSession.node``, ``/ready``)."""
        return f"127.0.0.1:{self.port}"


@functools.cache
def layout() -> tuple[ClusterNode, ...]:
    """The cluster's nodes, as the tool defines them (no RabbitMQ call)."""
    import subprocess

    out = subprocess.run([sys.executable, str(TOOL), "layout"], capture_output=True, text=True, check=True, timeout=30)
    return tuple(ClusterNode(n["index"], n["name"], n["port"], n["url"]) for n in json.loads(out.stdout)["nodes"])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def require_cluster(test: unittest.TestCase) -> tuple[ClusterNode, ...]:
    """The cluster's nodes, all answering; otherwise fail under CI and skip elsewhere."""
    nodes = layout()
    down = [n.name for n in nodes if not answers(n.port)]
    if not down:
        return nodes
    missing_requirement(
        test,
        f"the local RabbitMQ cluster is not running ({', '.join(down)} down; start it: tools/rabbitmq-cluster start)",
    )


def node_by_label(label: str) -> ClusterNode:
    return next(n for n in layout() if n.label == label)


async def ctl(index: int, *args: str) -> str:
    """``rabbitmqctl -n <node index> ARGS`` through the tool, without blocking the reactor."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable, [str(TOOL), "ctl", str(index), *args], env=dict(os.environ), reactor=reactor
    )
    if code != 0:
        raise RuntimeError(f"rabbitmq-cluster ctl {index} {' '.join(args)} exited {code}: {out!r} {err!r}")
    return str(out.decode("utf-8", "replace"))


async def running_nodes(index: int) -> list[str]:
    """The cluster's running nodes as node ``index`` sees them."""
    return sorted(json.loads(await ctl(index, "cluster_status", "--formatter", "json"))["running_nodes"])
