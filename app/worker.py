"""Everything a worker runs, imported once so Faust registers every agent, table and view."""

from __future__ import annotations

import agents.scoring
import agents.sink
import agents.sweep
import web.events
import web.health
import web.leads
import web.projects
from app.topology import app

__all__ = ["app", "modules"]

modules = (
    agents.scoring,
    agents.sink,
    agents.sweep,
    web.events,
    web.health,
    web.leads,
    web.projects,
)
