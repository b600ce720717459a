"""`GET /api/audit-log`: the project's audit log, newest first, for owners and admins."""

from __future__ import annotations

from faust.web import Request, Response

from app.topology import app, audit_log
from web.base import ApiView, query_int

__all__ = ["AuditLogView"]


@app.page("/api/audit-log")
class AuditLogView(ApiView):
    async def get(self, request: Request) -> Response:
        caller = await self.authorize(request, "admin")
        limit = query_int(request, "limit", 100, 1, 1000)
        offset = query_int(request, "offset", 0, 0, 1_000_000)
        entries = await audit_log.page(caller.project_id or "", limit, offset)
        return self.reply({"entries": entries, "limit": limit, "offset": offset})
