"""The project's local stack without Docker: the real Apache Kafka broker (KRaft, from Maven
Central jars) and a MongoDB-wire server (SecantusDB), on 127.0.0.1, under ``.local/``.

CLI: ``python -m devstack up|down|status`` (``BROKERS=3`` for a three-node cluster).
Python (test fixtures)::

    info = devstack.ensure_up()          # StackInfo(bootstrap_servers, mongo_url, started)
    ...
    if info.started:
        devstack.shutdown()

Outage helpers: ``stop_mongo()`` / ``start_mongo()``, ``kill_broker(n)`` / ``restart_broker(n)``.
"""

from __future__ import annotations

from devstack.errors import DevstackError
from devstack.stack import (
    ServiceStatus,
    StackInfo,
    ensure_up,
    kill_broker,
    restart_broker,
    shutdown,
    start_mongo,
    status,
    stop_mongo,
)

__all__ = [
    "DevstackError",
    "ServiceStatus",
    "StackInfo",
    "ensure_up",
    "kill_broker",
    "restart_broker",
    "shutdown",
    "start_mongo",
    "status",
    "stop_mongo",
]
