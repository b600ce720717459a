"""Everything a worker runs, imported once so Faust registers every agent, table and view."""

from __future__ import annotations

import importlib

from app.settings import settings
from app.topology import app

__all__ = ["app", "modules"]

if settings.role == "ingest":  # HTTP ingest only: produces events, consumes nothing
    _MODULES = [
        "web.security",
        "web.events",
        "web.aliases",
        "web.health",
        "web.metrics",
        "web.request_ids",
    ]
elif settings.role == "sink":  # lead-changes -> MongoDB, in a consumer group of its own
    _MODULES = ["web.security", "agents.sink", "web.health", "web.metrics", "web.request_ids"]
elif settings.role == "delivery":  # automation firings: decided and delivered, nothing else
    _MODULES = ["web.security", "agents.firing", "web.health", "web.metrics", "web.request_ids"]
else:
    _MODULES = [
        "agents.scoring",
        "agents.identity",
        "agents.sweep",
        "agents.dead_letters",
        "web.security",
        "web.events",
        "web.aliases",
        "web.health",
        "web.leads",
        "web.projects",
        "web.keys",
        "web.users",
        "web.auth",
        "web.audit",
        "web.admin",
        "web.system_health",
        "web.metrics",
        "web.request_ids",
        "web.dead_letters",
        "web.data_rights",
        "web.automations",
        "web.stream",
        "web.dashboard.pages",
    ]
    if settings.sink_enabled:
        _MODULES.append("agents.sink")
    if settings.delivery_enabled:
        _MODULES.append("agents.firing")

modules = tuple(importlib.import_module(name) for name in _MODULES)
