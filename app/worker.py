"""Everything a process runs, imported once so Faust registers every agent, table and view.

Which modules a role runs is declared in `app.topology.ROLES`.
"""

from __future__ import annotations

import importlib

from app.settings import settings
from app.topology import app, modules_of

__all__ = ["app", "modules"]

modules = tuple(
    importlib.import_module(name)
    for name in modules_of(
        settings.role,
        sink_enabled=settings.sink_enabled,
        delivery_enabled=settings.delivery_enabled,
    )
)
