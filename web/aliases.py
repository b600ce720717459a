"""Paths of the system leadscore replaces, kept so its users' scripts and SDK snippet work.

`POST /api/events/ingest` is the SDK route (`/api/ingest/event`). The other aliases live next
to what they alias: `GET|POST /api/scoring-rules` (web/projects.py), `POST
/api/auth/generate-api-key` (web/keys.py); `POST /api/auth/login` and `X-API-Key` are the routes
and header themselves.
"""

from __future__ import annotations

from app.topology import app
from web.events import SdkIngestView

__all__ = ["SeedSdkIngestView"]


@app.page("/api/events/ingest")
class SeedSdkIngestView(SdkIngestView):
    """Alias of `POST /api/ingest/event`."""
