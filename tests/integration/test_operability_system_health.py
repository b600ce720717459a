"""system-health for big projects (issue #15): the table state is read in key-ordered pages,
and the consumer lag comes from the workers' metrics."""

from __future__ import annotations

import uuid

from tests.integration.support import Api, eventually


async def test_table_state_pages_cover_every_key_once_in_order(api: Api) -> None:
    tag = uuid.uuid4().hex[:6]
    leads = [f"p{tag}-{n:02d}" for n in range(11)]
    await api.send_events(
        [{"eventId": f"{lead}-e", "eventType": "signup", "leadId": lead} for lead in leads]
    )
    status, whole = await eventually(
        lambda: api.get("/api/internal/table-leads"),
        lambda r: r[0] == 200 and len(r[1]["leads"]) == len(leads),
        timeout=90,
    )
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        query = "?limit=4" + (f"&after={after}" if after else "")
        status, page = await api.get(f"/api/internal/table-leads{query}")
        assert status == 200, page
        pages += 1
        assert len(page["entries"]) <= 4
        seen += [e["key"] for e in page["entries"]]
        assert all(e["lead"] == whole["leads"][e["key"]] for e in page["entries"])
        assert set(page["lag"]) <= {str(p) for p in range(8)}
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(leads) and pages == 3

    status, health = await eventually(
        lambda: api.get("/api/admin/system-health"),
        lambda r: r[0] == 200 and r[1]["status"] == "HEALTHY",
        timeout=60,
    )
    assert health["leadsChecked"] == len(leads) and health["violationsTotal"] == 0
    assert health["consumerLag"] and all(v >= 0 for v in health["consumerLag"].values())
