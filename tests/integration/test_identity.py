"""SPEC 5 (identity resolution) end to end: HTTP ingest → Kafka → Faust workers → MongoDB.

Every test compares what the system shows (single-lead reads from the owning worker's table,
`leads` documents and `score_history` rows in MongoDB) with `Model`, which applies SPEC 3-5 to the
events the test sent: the distinct events of each canonical lead scored from scratch with
`core.lead.score_events`, merged leads moved into their owner (the owner's copy of an eventId
wins). Tests on the shared worker run on the wall clock with whole-second timestamps whose age in
days cannot change during a test; the deployments of their own pin the worker's clock with
LEADSCORE_NOW, so their expectations are exact.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo.errors import DuplicateKeyError

from app.partitioning import partition_for
from core.config import ScoringConfig, default_config
from core.lead import NewEvent, score_events
from core.scoring import decay, in_velocity_window, report, stage_for, velocity_score
from core.timeutil import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_SECOND,
    format_timestamp,
    from_datetime,
    parse_timestamp,
)
from tests.integration.support import (
    ROOT,
    Api,
    Deployment,
    WorkerProcess,
    create_project,
    eventually,
)

pytestmark = pytest.mark.integration

GOLDEN_PATH = ROOT / "tests" / "data" / "spec-golden.json"
PINNED_NOW = "2026-06-01T12:00:00Z"  # the clock of the two-worker deployment
US_PER_MINUTE = 60 * US_PER_SECOND


# -- events and the reference model ----------------------------------------------------------


def wall_now() -> int:
    return time.time_ns() // 1_000


def ago(now: int, days: int = 0, hours: int = 0, minutes: int = 0) -> int:
    """A whole-second instant before `now`. With `hours` in 1..22 the age in whole days (decay)
    and membership of the 24 h window stay the same for the next hour of wall clock."""
    base = now // US_PER_SECOND * US_PER_SECOND
    return base - days * US_PER_DAY - hours * US_PER_HOUR - minutes * US_PER_MINUTE


def ev(
    event_id: str,
    event_type: str,
    timestamp: int,
    *,
    lead: str | None = None,
    anon: str | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """An event as a client sends it (no projectId: the API key names the project)."""
    body: dict[str, Any] = {
        "eventId": event_id,
        "eventType": event_type,
        "timestamp": format_timestamp(timestamp),
    }
    if lead is not None:
        body["leadId"] = lead
    if anon is not None:
        body["anonymousId"] = anon
    if properties:
        body["properties"] = properties
    return body


def key_of(event: dict[str, Any]) -> str:
    return str(event.get("leadId") or event["anonymousId"])


@dataclass
class Expected:
    lead_id: str
    rows: list[Any]
    current_score: float
    stage: str
    events_last_24h: int


@dataclass
class Model:
    """SPEC 3-5 over what a test sent. Call `add` in log order and `merge` when the test knows
    a lead was merged (the owner of an email is decided by the system; the test reads it)."""

    config: ScoringConfig = field(default_factory=default_config)
    events: dict[str, dict[str, NewEvent]] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)  # alias -> the lead it was merged into
    traits: dict[str, dict[str, Any]] = field(default_factory=dict)
    never_leads: set[str] = field(default_factory=set)  # aliases that had no document of their own

    def canonical(self, key: str) -> str:
        while key in self.merged:
            key = self.merged[key]
        return key

    def add(self, event: dict[str, Any]) -> None:
        per_lead = self.events.setdefault(self.canonical(key_of(event)), {})
        if event["eventId"] not in per_lead:
            et = event["eventType"]
            per_lead[event["eventId"]] = NewEvent(
                parse_timestamp(event["timestamp"]),
                event["eventId"],
                et,
                self.config.points_for(et),
            )

    def add_all(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def merge(self, alias: str, into: str) -> None:
        owner = self.events.setdefault(self.canonical(into), {})
        for event_id, event in self.events.pop(alias, {}).items():
            owner.setdefault(event_id, event)  # the owner's copy wins
        self.merged[alias] = into

    def aliases_of(self, lead: str) -> list[str]:
        return sorted(a for a in self.merged if self.canonical(a) == lead)

    def leads(self) -> list[str]:
        return sorted(self.events)

    def distinct_events(self) -> int:
        return sum(len(events) for events in self.events.values())

    def expected(self, lead: str, now: int) -> Expected:
        _, rows = score_events(self.events[lead].values(), self.config)
        c = self.config
        current = decay(rows[-1].score_after, now - rows[-1].timestamp, c.grace_days, c.daily_rate)
        return Expected(
            lead_id=lead,
            rows=rows,
            current_score=report(current),
            stage=stage_for(current, c.thresholds),
            events_last_24h=sum(1 for r in rows if in_velocity_window(r.timestamp, now)),
        )


def _us(value: Any) -> int:
    """An instant as microseconds: an ISO string (API), µs (MongoDB `*Us`) or a datetime."""
    if isinstance(value, str):
        return parse_timestamp(value)
    return int(value) if isinstance(value, int) else from_datetime(value)


def lead_diffs(
    got: dict[str, Any] | None, exp: Expected, where: str, traits: dict[str, Any] | None = None
) -> list[str]:
    """Differences between a lead (API body or MongoDB document) and the model."""
    if got is None:
        return [f"{where}: missing"]
    out: list[str] = []

    def differ(name: str, value: Any, want: Any) -> None:
        if value != want:
            out.append(f"{where}.{name}: got {value!r}, want {want!r}")

    differ("leadId", got.get("leadId"), exp.lead_id)
    differ("eventCount", got.get("eventCount"), len(exp.rows))
    score = got.get("currentScore")
    if not isinstance(score, int | float) or abs(score - exp.current_score) > 1e-9:
        out.append(f"{where}.currentScore: got {score!r}, want {exp.current_score!r}")
    differ("leadStage", got.get("leadStage"), exp.stage)
    differ("eventsLast24h", got.get("eventsLast24h"), exp.events_last_24h)
    differ("velocityScore", got.get("velocityScore"), velocity_score(exp.events_last_24h))
    first = got.get("firstEventAtUs", got.get("firstEventAt"))
    last = got.get("lastEventAtUs", got.get("lastEventAt"))
    differ("firstEventAt", None if first is None else _us(first), exp.rows[0].timestamp)
    differ("lastEventAt", None if last is None else _us(last), exp.rows[-1].timestamp)
    for name, want in (traits or {}).items():
        value = got.get(name)
        differ(name, sorted(value or []) if name == "aliases" else value, want)
    return out


def row_diffs(rows: list[dict[str, Any]], exp: Expected, where: str) -> list[str]:
    got_ids = [r.get("eventId") for r in rows]
    want_ids = [r.event_id for r in exp.rows]
    if got_ids != want_ids:
        return [f"{where}: history eventIds {got_ids!r}, want {want_ids!r}"]
    out: list[str] = []
    for got, want in zip(rows, exp.rows, strict=True):
        for name, value, expected in (
            ("eventType", got.get("eventType"), want.event_type),
            ("timestamp", got.get("timestampUs"), want.timestamp),
            ("points", got.get("points"), want.points),
        ):
            if value != expected:
                out.append(f"{where}/{want.event_id}.{name}: got {value!r}, want {expected!r}")
        for name, expected_score in (
            ("scoreBefore", want.score_before),
            ("scoreAfter", want.score_after),
        ):
            value = got.get(name)
            if not isinstance(value, int | float) or abs(value - expected_score) > 1e-9:
                out.append(f"{where}/{want.event_id}.{name}: got {value!r}, want {expected_score}")
    return out


def is_tombstone(doc: dict[str, Any] | None, into: str) -> bool:
    """The document of a merged-away lead: marked merged (`merged: true`, or `mergedInto` its
    owner), without the email (the owner holds it)."""
    if doc is None or doc.get("email") is not None:
        return False
    return doc.get("merged") is True or doc.get("mergedInto") == into


async def history_rows(db: Any, project_id: str, lead: str) -> list[dict[str, Any]]:
    cursor = db.score_history.find({"projectId": project_id, "leadId": lead})
    return list(await cursor.sort([("timestampUs", 1), ("eventId", 1)]).to_list(None))


async def state_diffs(
    api: Api,
    db: Any,
    project_id: str,
    model: Model,
    now: Callable[[], int] = wall_now,
    leads: Iterable[str] | None = None,
) -> list[str]:
    """Everything SPEC 3-6 say about the model's leads and aliases, as read from the system:
    table reads by key and by alias, `leads` documents, tombstones, `score_history` rows."""
    out: list[str] = []
    if leads is None:  # lists show exactly the canonical leads (SPEC 5: L is no lead of its own)
        status, body = await api.get("/api/leads?limit=1000")
        listed = sorted(lead["leadId"] for lead in body["leads"]) if status == 200 else body
        if listed != model.leads():
            out.append(f"GET /api/leads: {listed!r}, want {model.leads()!r}")
    for lead in leads if leads is not None else model.leads():
        exp = model.expected(lead, now())
        traits = {**model.traits.get(lead, {}), "aliases": model.aliases_of(lead)}
        status, body = await api.get(f"/api/leads/{lead}")
        if status != 200:
            out.append(f"GET {lead}: {status} {body!r}")
        else:
            out += lead_diffs(body, exp, f"api:{lead}", traits)
        for alias in model.aliases_of(lead):
            status, body = await api.get(f"/api/leads/{alias}")
            if status != 200:
                out.append(f"GET {alias}: {status} {body!r}")
            else:
                out += lead_diffs(body, exp, f"api:{alias}", traits)
                if body.get("requestedKey") != alias:
                    out.append(f"api:{alias}.requestedKey: got {body.get('requestedKey')!r}")
            tomb = await db.leads.find_one({"projectId": project_id, "leadId": alias})
            if not (tomb is None and alias in model.never_leads) and not is_tombstone(tomb, lead):
                out.append(f"mongo:{alias}: want a tombstone (merged into {lead!r}), got {tomb!r}")
            left = await db.score_history.count_documents(
                {"projectId": project_id, "leadId": alias}
            )
            if left:
                out.append(f"mongo:{alias}: {left} score_history rows left under the alias")
        doc = await db.leads.find_one({"projectId": project_id, "leadId": lead})
        out += lead_diffs(doc, exp, f"mongo:{lead}", traits)
        if doc is not None and (doc.get("merged") or "mergedInto" in doc):
            out.append(f"mongo:{lead}: canonical lead is a tombstone {doc!r}")
        out += row_diffs(await history_rows(db, project_id, lead), exp, f"mongo:{lead}")
    return out


async def wait_state(
    api: Api,
    db: Any,
    project_id: str,
    model: Model,
    now: Callable[[], int] = wall_now,
    timeout: float = 60.0,
) -> None:
    async def probe() -> list[str]:
        return await state_diffs(api, db, project_id, model, now)

    await eventually(probe, lambda diffs: not diffs, timeout=timeout, interval=0.4)


async def send(api: Api, events: list[dict[str, Any]], model: Model | None = None) -> None:
    """One batch through POST /api/events/batch (202 = durable on the events topic)."""
    for start in range(0, len(events), 500):
        status, body = await api.post("/api/events/batch", {"events": events[start : start + 500]})
        assert status == 202, body
    if model is not None:
        model.add_all(events)


async def send_one(api: Api, event: dict[str, Any]) -> None:
    status, body = await api.post("/api/events", event)
    assert status == 202, body
    assert body["eventId"] == event["eventId"]


async def read(api: Api, key: str) -> tuple[int, Any]:
    return await api.get(f"/api/leads/{key}")


async def wait_owner(api: Api, key: str, email: str, timeout: float = 60.0) -> None:
    """Until `key` is a lead of its own that owns `email` (its claim was decided: promoted)."""
    await eventually(
        lambda: read(api, key),
        lambda r: r[0] == 200 and r[1].get("leadId") == key and r[1].get("email") == email,
        timeout=timeout,
    )


async def wait_merged(api: Api, alias: str, into: str, timeout: float = 60.0) -> None:
    await eventually(
        lambda: read(api, alias),
        lambda r: r[0] == 200 and r[1].get("leadId") == into,
        timeout=timeout,
    )


async def wait_count(api: Api, key: str, count: int, timeout: float = 60.0) -> None:
    await eventually(
        lambda: read(api, key),
        lambda r: r[0] == 200 and r[1].get("eventCount") == count,
        timeout=timeout,
    )


async def project_id_of(api: Api) -> str:
    status, body = await api.get("/api/projects/current")
    assert status == 200, body
    return str(body["projectId"])


async def start_workers(*workers: WorkerProcess) -> None:
    for w in workers:
        w.start()
    try:
        await asyncio.gather(*(w.wait_healthy() for w in workers))
    except BaseException:
        for w in workers:
            w.kill()
        raise


# -- the golden example ----------------------------------------------------------------------


def _golden_view(lead: dict[str, Any]) -> dict[str, Any]:
    fields = (
        "leadId",
        "currentScore",
        "leadStage",
        "eventsLast24h",
        "velocityScore",
        "eventCount",
        "email",
        "name",
        "company",
    )
    return {**{k: lead.get(k) for k in fields}, "aliases": sorted(lead.get("aliases") or [])}


def _golden_row(row: dict[str, Any]) -> dict[str, Any]:
    ts = row["timestampUs"] if "timestampUs" in row else parse_timestamp(row["timestamp"])
    return {
        "eventId": row["eventId"],
        "eventType": row["eventType"],
        "timestamp": format_timestamp(ts),
        "points": row["points"],
        "scoreBefore": round(row["scoreBefore"], 4),
        "scoreAfter": round(row["scoreAfter"], 4),
    }


async def test_spec5_golden_example_end_to_end(
    stack: tuple[str, str], http: aiohttp.ClientSession, mongo_db: Any, tmp_path: Path
) -> None:
    golden = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
    deployment = Deployment.on(stack, LEADSCORE_NOW=golden["now"])
    db = mongo_db.client[deployment.prefix]
    worker = WorkerProcess(deployment, tmp_path, "golden")
    await start_workers(worker)
    try:
        pid, api_key = await create_project(http, worker.url, deployment.admin_token, "golden")
        api = Api(http, worker.url, api_key)
        # One by one, in log order. An identify's claim is decided before the next event is
        # sent, so "first claimant" is the first in the log, as the example assumes.
        for raw in golden["events"]:
            event = {k: v for k, v in raw.items() if k != "projectId"}
            await send_one(api, event)
            if event["eventType"] == "identify":
                key = key_of(event)
                await eventually(
                    lambda key=key: read(api, key),
                    lambda r, key=key: (
                        r[0] == 200 and (r[1]["leadId"] != key or r[1].get("email") is not None)
                    ),
                )

        expected = {lead["leadId"]: lead for lead in golden["leads"]}

        async def diffs() -> list[str]:
            out: list[str] = []
            for lead_id, want in expected.items():
                want_view = _golden_view(want)
                status, body = await read(api, lead_id)
                if status != 200 or _golden_view(body) != want_view:
                    out.append(f"api:{lead_id}: {status} {body!r}, want {want_view!r}")
                doc = await db.leads.find_one({"projectId": pid, "leadId": lead_id})
                if doc is None or _golden_view(doc) != want_view:
                    out.append(f"mongo:{lead_id}: {doc!r}, want {want_view!r}")
                rows = [_golden_row(r) for r in await history_rows(db, pid, lead_id)]
                if rows != want["history"]:
                    out.append(f"mongo:{lead_id} history: {rows!r}")
            return out

        await eventually(diffs, lambda d: not d, timeout=60, interval=0.5)

        # anon-C is an alias: reads return crm-B, naming the key that was asked for
        status, body = await read(api, "anon-C")
        assert status == 200, body
        assert _golden_view(body) == _golden_view(expected["crm-B"])
        assert body["requestedKey"] == "anon-C"
        status, body = await api.get("/api/leads/anon-C/timeline")
        assert status == 200, body
        assert body["leadId"] == "crm-B"
        assert [_golden_row(r) for r in body["history"]] == expected["crm-B"]["history"]
        tomb = await db.leads.find_one({"projectId": pid, "leadId": "anon-C"})
        assert is_tombstone(tomb, "crm-B"), tomb
        assert await db.score_history.count_documents({"projectId": pid, "leadId": "anon-C"}) == 0
        distinct_rows = sum(len(lead["history"]) for lead in golden["leads"])
        assert await db.score_history.count_documents({"projectId": pid}) == distinct_rows

        # lists, leaderboard and stage counts: exactly the two canonical leads
        status, body = await api.get("/api/leads")
        assert status == 200, body
        assert body["total"] == 2
        assert [lead["leadId"] for lead in body["leads"]] == ["crm-B", "anon-A"]
        status, body = await api.get("/api/leaderboard")
        assert status == 200, body
        board = [(lead["rank"], lead["leadId"], lead["currentScore"]) for lead in body["leads"]]
        assert board == [(1, "crm-B", 170.0), (2, "anon-A", 75.35)]
        assert body["total"] == 2
        status, body = await api.get("/api/leaderboard/by-stage")
        assert status == 200, body
        assert body["stages"] == {"qualified": 1, "hot": 1, "warm": 0, "cold": 0}
        assert body["total"] == 2
    finally:
        worker.stop()


# -- SPEC 5 rules on the shared worker -------------------------------------------------------


async def test_spec5_promotion_keeps_the_key_and_sets_email_name_company(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    events = [
        ev("p1", "page_view", ago(now, 3, 2), anon="anon-pat"),
        ev("p2", "identify", ago(now, 2, 5), anon="anon-pat", email="not-an-email", name="X"),
        ev("p3", "signup", ago(now, 1, 3), anon="anon-pat"),
        ev(
            "p4",
            "identify",
            ago(now, 0, 4),
            anon="anon-pat",
            email="  Pat.Lee@Example.COM ",
            name="Pat",
            company="Initech",
        ),
    ]
    await send(api, events, model)
    await wait_owner(api, "anon-pat", "pat.lee@example.com")
    model.traits["anon-pat"] = {
        "email": "pat.lee@example.com",
        "name": "Pat",
        "company": "Initech",
    }
    await wait_state(api, mongo_db, pid, model)
    status, body = await read(api, "anon-pat")
    assert status == 200, body
    assert body["requestedKey"] == "anon-pat"
    assert body["aliases"] == []


async def test_spec5_identified_lead_with_another_email_is_not_merged_and_event_is_scored(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    # crm-1 owns one@..., crm-2 owns two@...
    await send(
        api,
        [
            ev("a1", "demo_request", ago(now, 4, 2), lead="crm-1"),
            ev("a2", "identify", ago(now, 3, 2), lead="crm-1", email="one@example.com", name="One"),
            ev("b1", "page_view", ago(now, 4, 3), lead="crm-2"),
            ev("b2", "identify", ago(now, 3, 3), lead="crm-2", email="two@example.com"),
        ],
        model,
    )
    await wait_owner(api, "crm-1", "one@example.com")
    await wait_owner(api, "crm-2", "two@example.com")
    # crm-1 now says it is two@... (owned by crm-2): no merge either way, the event counts
    await send(
        api,
        [
            ev("a3", "identify", ago(now, 1, 2), lead="crm-1", email="two@example.com", name="Z"),
            ev("a4", "email_open", ago(now, 0, 2), lead="crm-1"),
        ],
        model,
    )
    model.traits["crm-1"] = {"email": "one@example.com"}
    model.traits["crm-2"] = {"email": "two@example.com"}
    await wait_state(api, mongo_db, pid, model)
    rows = await history_rows(mongo_db, pid, "crm-1")
    assert [r["eventId"] for r in rows] == ["a1", "a2", "a3", "a4"]
    assert await emails_held_twice(mongo_db, pid) == []


async def emails_held_twice(db: Any, pid: str) -> list[Any]:
    """Emails held by more than one live lead document of the project (must be none)."""
    pipeline = [
        {"$match": {"projectId": pid, "email": {"$type": "string"}}},
        {"$group": {"_id": "$email", "n": {"$sum": 1}}},
        {"$match": {"n": {"$gt": 1}}},
    ]
    return [row async for row in db.leads.aggregate(pipeline)]


async def _two_anonymous_leads_merged(api: Api, db: Any, pid: str, model: Model) -> int:
    """anon-K claims kay@... first; anon-L, which also scored, claims it next and is merged.
    Returns the time base used."""
    now = wall_now()
    await send(
        api,
        [
            ev("k1", "signup", ago(now, 20, 2), anon="anon-K"),
            ev("k2", "page_view", ago(now, 9, 5), anon="anon-K"),
            ev(
                "k3", "identify", ago(now, 2, 1), anon="anon-K", email="Kay@Example.com", name="Kay"
            ),
        ],
        model,
    )
    await wait_owner(api, "anon-K", "kay@example.com")
    # K's values win, L's fill the gaps
    model.traits["anon-K"] = {"email": "kay@example.com", "name": "Kay", "company": "KCo"}
    # L scored on its own first (a decayed signup long before, then a demo request in between)
    await send(
        api,
        [
            ev("l1", "demo_request", ago(now, 30, 3), anon="anon-L"),
            ev("l2", "download", ago(now, 12, 4), anon="anon-L"),
            ev("l3", "webinar_attendance", ago(now, 0, 6), anon="anon-L"),
        ],
        model,
    )
    await wait_count(api, "anon-L", 3)
    status, body = await read(api, "anon-L")
    assert status == 200 and body["leadId"] == "anon-L" and body["currentScore"] > 0, body
    await send(
        api,
        [
            ev(
                "l4",
                "identify",
                ago(now, 0, 5),
                anon="anon-L",
                email="kay@example.com",
                name="Lou",
                company="KCo",
            )
        ],
        model,
    )
    await wait_merged(api, "anon-L", "anon-K")
    model.merge("anon-L", "anon-K")
    await wait_state(api, db, pid, model)
    return now


async def test_spec5_merge_moves_all_events_of_the_merged_lead_and_rescores_the_union(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    model = Model()
    await _two_anonymous_leads_merged(api, mongo_db, pid, model)
    # reference over the union, explicitly
    union = model.events["anon-K"]
    assert sorted(union) == ["k1", "k2", "k3", "l1", "l2", "l3", "l4"]
    assert "anon-L" not in model.events
    # the merged lead is gone from lists, leaderboard and stage counts
    for path in ("/api/leads", "/api/leaderboard"):
        status, body = await api.get(path)
        assert status == 200, body
        assert [lead["leadId"] for lead in body["leads"]] == ["anon-K"], body
        assert body["total"] == 1
    status, body = await api.get("/api/leaderboard/by-stage")
    assert body["total"] == 1, body
    status, body = await api.get("/api/leads/anon-L/timeline")
    assert status == 200, body
    assert body["leadId"] == "anon-K"
    assert [r["eventId"] for r in body["history"]] == [
        r.event_id for r in model.expected("anon-K", wall_now()).rows
    ]


async def test_spec5_later_events_with_the_alias_key_count_for_the_canonical_lead(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    model = Model()
    now = await _two_anonymous_leads_merged(api, mongo_db, pid, model)
    tomb_before = await mongo_db.leads.find_one({"projectId": pid, "leadId": "anon-L"})
    later = [
        ev("l5", "pricing_page_visit", ago(now, 0, 3), anon="anon-L"),
        ev("l1", "contract_signed", ago(now, 0, 2), anon="anon-L"),  # L's own, again: ignored
        ev("k2", "contract_signed", ago(now, 0, 2), anon="anon-L"),  # K's, via the alias: ignored
        ev("l6", "page_view", ago(now, 5, 2), anon="anon-L"),  # late: inserted in place
    ]
    await send(api, later, model)
    assert sorted(model.events["anon-K"]) == [
        "k1", "k2", "k3", "l1", "l2", "l3", "l4", "l5", "l6"
    ]  # fmt: skip
    await wait_count(api, "anon-K", 9)
    await wait_state(api, mongo_db, pid, model)
    tomb = await mongo_db.leads.find_one({"projectId": pid, "leadId": "anon-L"})
    assert tomb == tomb_before  # never resurrected as a lead of its own


async def test_spec5_anonymous_ids_of_the_merged_lead_become_aliases_of_the_owner(
    api: Api, mongo_db: Any
) -> None:
    """crm-N was seen with the browser id dev-N; once crm-N is merged into crm-O, both keys are
    aliases of crm-O: reads by either return crm-O, and an event sent with only the
    anonymousId (lead key dev-N) counts for crm-O (SPEC 1: an alias is a key that resolves to
    its canonical lead)."""
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    await send(
        api,
        [ev("o1", "identify", ago(now, 3, 2), lead="crm-O", email="own@example.com")],
        model,
    )
    await wait_owner(api, "crm-O", "own@example.com")
    model.traits["crm-O"] = {"email": "own@example.com"}
    await send(
        api,
        [
            ev("n1", "signup", ago(now, 2, 2), lead="crm-N", anon="dev-N"),
            ev(
                "n2",
                "identify",
                ago(now, 1, 2),
                lead="crm-N",
                anon="dev-N",
                email="own@example.com",
            ),
        ],
        model,
    )
    await wait_merged(api, "crm-N", "crm-O")
    model.merge("crm-N", "crm-O")
    model.merged["dev-N"] = "crm-O"  # listed as an alias and read as crm-O
    model.never_leads.add("dev-N")
    # dev-N adds itself once it is merged too (one hop after crm-N)
    await eventually(
        lambda: read(api, "crm-O"),
        lambda r: r[0] == 200 and sorted(r[1]["aliases"]) == ["crm-N", "dev-N"],
        timeout=30,
    )
    # the anonymousId alone now names crm-O
    await send(api, [ev("n3", "page_view", ago(now, 0, 2), anon="dev-N")], model)
    assert sorted(model.events["crm-O"]) == ["n1", "n2", "n3", "o1"]
    await eventually(
        lambda: read(api, "dev-N"),
        lambda r: r[0] == 200 and r[1]["leadId"] == "crm-O" and r[1]["eventCount"] == 4,
        timeout=20,
    )
    await wait_state(api, mongo_db, pid, model, timeout=20)


async def test_spec5_duplicates_present_in_both_leads_are_counted_once(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    await send(
        api,
        [
            ev("d-shared", "form_submit", ago(now, 3, 2), lead="crm-D"),
            ev("d-1", "signup", ago(now, 4, 2), lead="crm-D"),
            ev("d-2", "identify", ago(now, 2, 2), lead="crm-D", email="dup@example.com"),
        ],
        model,
    )
    await wait_owner(api, "crm-D", "dup@example.com")
    model.traits["crm-D"] = {"email": "dup@example.com"}
    await send(
        api,
        [
            # the same eventIds, another copy: the absorbing lead's copy wins
            ev("d-shared", "contract_signed", ago(now, 1, 2), anon="anon-E"),
            ev("d-1", "signup", ago(now, 4, 2), anon="anon-E"),
            ev("e-1", "page_view", ago(now, 1, 5), anon="anon-E"),
        ],
        model,
    )
    await wait_count(api, "anon-E", 3)
    await send(
        api, [ev("e-2", "identify", ago(now, 0, 3), anon="anon-E", email="DUP@example.com")], model
    )
    await wait_merged(api, "anon-E", "crm-D")
    model.merge("anon-E", "crm-D")
    assert len(model.events["crm-D"]) == 5
    assert model.events["crm-D"]["d-shared"].event_type == "form_submit"
    await wait_state(api, mongo_db, pid, model)


async def test_spec5_concurrent_claims_of_one_email_one_owner_others_merged(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    keys = [f"anon-c{i}" for i in range(5)]
    events = []
    for i, key in enumerate(keys):
        events += [
            ev(f"c{i}-a", "page_view", ago(now, 6 + i, 2), anon=key),
            ev(f"c{i}-b", "download", ago(now, 1, 2 + i), anon=key),
            # one event every lead has (same id and content): one event in the end
            ev("c-shared", "webinar_attendance", ago(now, 3, 3), anon=key),
        ]
    await send(api, events, model)
    for key in keys:
        await wait_count(api, key, 3)

    email = "race@example.com"
    identifies = [
        ev(f"c{i}-id", "identify", ago(now, 0, 2), anon=key, email=email, name=f"N{i}")
        for i, key in enumerate(keys)
    ]
    await asyncio.gather(*(send_one(api, e) for e in identifies))
    model.add_all(identifies)

    async def owners() -> list[tuple[str, str | None]]:
        out = []
        for key in keys:
            status, body = await read(api, key)
            out.append((body.get("leadId"), body.get("email")) if status == 200 else (key, body))
        return out

    seen = await eventually(
        owners, lambda o: len({lead for lead, _ in o}) == 1 and o[0][1] == email, timeout=60
    )
    owner = seen[0][0]
    assert owner in keys
    for key in keys:
        if key != owner:
            model.merge(key, owner)
    assert model.leads() == [owner]
    model.traits[owner] = {"email": email}
    await wait_state(api, mongo_db, pid, model)
    status, body = await read(api, owner)
    assert status == 200, body
    assert body["eventCount"] == model.distinct_events() == 5 * 2 + 1 + 5
    assert body["name"] == f"N{keys.index(owner)}"  # the owner's own name, not a merged one's

    # the unique (projectId, email) index holds in MongoDB
    assert await mongo_db.leads.count_documents({"projectId": pid, "email": email}) == 1
    indexes = await mongo_db.leads.index_information()
    unique = [
        spec
        for spec in indexes.values()
        if spec.get("unique") and [k for k, _ in spec["key"]] == ["projectId", "email"]
    ]
    assert unique, indexes
    with pytest.raises(DuplicateKeyError):
        await mongo_db.leads.insert_one(
            {"projectId": pid, "leadId": "intruder", "email": email, "merged": True}
        )
    await mongo_db.leads.delete_one({"projectId": pid, "leadId": "intruder"})


async def _owner_then_backdated_claim(api: Api, model: Model, email: str) -> int:
    """crm-K owns `email` (promoted); anon-L claims it later and is merged into crm-K; then
    anon-M claims it with an identify whose *timestamp* is older than crm-K's. Returns when the
    system has merged one of crm-K and anon-M into the other."""
    now = wall_now()
    await send(
        api,
        [
            ev("k1", "demo_request", ago(now, 5, 2), lead="crm-K"),
            ev("k2", "identify", ago(now, 1, 2), lead="crm-K", email=email, name="Kim"),
        ],
        model,
    )
    await wait_owner(api, "crm-K", email)
    await send(
        api,
        [
            ev("l1", "download", ago(now, 4, 2), anon="anon-L"),
            ev("l2", "identify", ago(now, 0, 2), anon="anon-L", email=email),
        ],
        model,
    )
    await wait_merged(api, "anon-L", "crm-K")
    model.merge("anon-L", "crm-K")
    await send(
        api,
        [
            ev("m1", "signup", ago(now, 6, 2), anon="anon-M"),
            ev("m2", "identify", ago(now, 3, 2), anon="anon-M", email=email, name="Mo"),
        ],
        model,
    )

    async def leads_of_k_and_m() -> list[Any]:
        return [(await read(api, key))[1].get("leadId") for key in ("crm-K", "anon-M")]

    await eventually(leads_of_k_and_m, lambda ids: ids[0] == ids[1] and None not in ids)
    return now


async def test_spec5_an_owner_is_not_merged_away_by_a_later_identify_with_an_older_timestamp(
    api: Api, mongo_db: Any
) -> None:
    """SPEC 5: when anon-M's identify is processed, crm-K owns the email, so anon-M is merged
    into crm-K (and an identified lead is never merged away) — whatever the identify's
    timestamp says. The log decides, as for every other rule of SPEC 3-5."""
    pid = await project_id_of(api)
    model = Model()
    email = "owner@example.com"
    await _owner_then_backdated_claim(api, model, email)
    status, body = await read(api, "anon-M")
    assert status == 200, body
    assert body["leadId"] == "crm-K", f"crm-K (the owner) was merged away into {body['leadId']!r}"
    model.merge("anon-M", "crm-K")
    model.traits["crm-K"] = {"email": email, "name": "Kim"}
    await wait_state(api, mongo_db, pid, model)


async def test_spec5_every_key_merged_along_the_way_reads_as_the_canonical_lead(
    api: Api, mongo_db: Any
) -> None:
    """Whoever ends up owning the email, every key that was merged (directly or through a lead
    that was itself merged) reads as the canonical lead, lists its aliases, and forwards later
    events to it."""
    pid = await project_id_of(api)
    model = Model()
    email = "chain@example.com"
    now = await _owner_then_backdated_claim(api, model, email)
    _, body = await read(api, "crm-K")
    canonical = body["leadId"]
    assert canonical in ("crm-K", "anon-M")
    for key in ("crm-K", "anon-M"):
        if key != canonical:
            model.merge(key, canonical)
    model.traits[canonical] = {"email": email}
    later = [ev("l3", "pricing_page_visit", ago(now, 0, 1), anon="anon-L")]
    await send(api, later, model)
    assert sorted(model.events[canonical]) == ["k1", "k2", "l1", "l2", "l3", "m1", "m2"]
    await wait_state(api, mongo_db, pid, model, timeout=30)


async def test_spec5_events_in_flight_during_the_merge_are_counted_once_for_the_owner(
    api: Api, mongo_db: Any
) -> None:
    pid = await project_id_of(api)
    now = wall_now()
    model = Model()
    await send(
        api,
        [
            ev("o-1", "signup", ago(now, 2, 2), lead="crm-O"),
            ev("o-2", "identify", ago(now, 2, 1), lead="crm-O", email="burst@example.com"),
        ],
        model,
    )
    await wait_owner(api, "crm-O", "burst@example.com")
    model.traits["crm-O"] = {"email": "burst@example.com"}
    first = [ev(f"f-{i}", "page_view", ago(now, 3, 2, i), anon="anon-F") for i in range(5)]
    await send(api, first, model)
    await wait_count(api, "anon-F", 5)

    rng = random.Random(7)
    types = ["page_view", "email_open", "download", "feature_used", "unsubscribe"]
    burst = [
        ev(
            f"f-burst-{i}",
            rng.choice(types),
            ago(now, rng.randrange(0, 12), rng.randrange(1, 22), rng.randrange(60)),
            anon="anon-F",
        )
        for i in range(200)
    ]
    burst += burst[:20]  # some sent twice
    identify = ev("f-id", "identify", ago(now, 0, 1), anon="anon-F", email="burst@example.com")
    gate = asyncio.Semaphore(16)

    async def post(event: dict[str, Any]) -> None:
        async with gate:
            await send_one(api, event)

    tasks = [post(e) for e in burst]
    tasks.insert(40, post(identify))  # the claim goes out while the burst is being sent
    await asyncio.gather(*tasks)
    model.add_all([identify, *burst])

    await wait_merged(api, "anon-F", "crm-O")
    model.merge("anon-F", "crm-O")
    assert model.distinct_events() == 2 + 5 + 200 + 1
    await wait_count(api, "crm-O", model.distinct_events(), timeout=90)
    await wait_state(api, mongo_db, pid, model, timeout=90)
    assert await mongo_db.score_history.count_documents({"projectId": pid}) == 208


async def test_spec5_same_email_in_two_projects_does_not_merge_across_projects(
    api: Api,
    mongo_db: Any,
    http: aiohttp.ClientSession,
    worker: WorkerProcess,
    deployment: Deployment,
) -> None:
    pid1 = await project_id_of(api)
    pid2, key2 = await create_project(http, worker.url, deployment.admin_token, "tenant-two")
    api2 = api.with_key(key2)
    now = wall_now()
    m1, m2 = Model(), Model()
    email = "shared@example.com"
    await send(
        api,
        [
            ev("t1", "signup", ago(now, 2, 2), lead="crm-T"),
            ev("t2", "identify", ago(now, 1, 2), lead="crm-T", email=email, name="One"),
        ],
        m1,
    )
    await wait_owner(api, "crm-T", email)
    # same email (and the same lead key for good measure) in project two: its own owner
    await send(
        api2,
        [
            ev("u1", "page_view", ago(now, 2, 3), lead="crm-U"),
            ev("u2", "identify", ago(now, 1, 3), lead="crm-U", email=email, name="Two"),
            ev("v1", "download", ago(now, 2, 4), lead="crm-T"),
        ],
        m2,
    )
    await wait_owner(api2, "crm-U", email)
    # within project one the email still merges
    await send(
        api,
        [
            ev("w1", "form_submit", ago(now, 1, 4), anon="anon-W"),
            ev("w2", "identify", ago(now, 0, 2), anon="anon-W", email=email),
        ],
        m1,
    )
    await wait_merged(api, "anon-W", "crm-T")
    m1.merge("anon-W", "crm-T")
    m1.traits["crm-T"] = {"email": email, "name": "One"}
    m2.traits["crm-U"] = {"email": email, "name": "Two"}
    m2.traits["crm-T"] = {"email": None}
    await wait_state(api, mongo_db, pid1, m1)
    await wait_state(api2, mongo_db, pid2, m2)
    assert (await read(api2, "anon-W"))[0] == 404
    assert (await read(api, "crm-U"))[0] == 404
    for pid in (pid1, pid2):
        assert await mongo_db.leads.count_documents({"projectId": pid, "email": email}) == 1


# -- two workers in one deployment -----------------------------------------------------------


@dataclass
class Cluster:
    """The two-worker deployment, seen through one project of its own (see `tenant`)."""

    deployment: Deployment
    workers: list[WorkerProcess]
    http: aiohttp.ClientSession
    db: Any
    api: Api | None = None  # through the first worker
    project_id: str = ""
    model: Model = field(default_factory=Model)

    async def tenant(self, name: str) -> Cluster:
        pid, key = await create_project(
            self.http, self.workers[0].url, self.deployment.admin_token, name
        )
        return replace(
            self, api=Api(self.http, self.workers[0].url, key), project_id=pid, model=Model()
        )

    def now(self) -> int:
        return parse_timestamp(PINNED_NOW)

    def partition(self, key: str) -> int:
        return partition_for(f"{self.project_id}:{key}".encode(), self.deployment.partitions)

    def key_on(self, prefix: str, partition: int) -> str:
        for n in range(10_000):
            key = f"{prefix}-{n}"
            if self.partition(key) == partition:
                return key
        raise AssertionError("no key found")

    async def owners(self) -> dict[int, str]:
        """partition -> URL of the worker actively owning it (Faust's /router/), if known."""
        out: dict[int, str] = {}
        async with aiohttp.ClientSession() as http:
            for w in self.workers:
                try:
                    async with http.get(f"{w.url}/router/leads/") as resp:
                        if resp.status != 200:
                            continue
                        hosts = await resp.json(content_type=None)
                except aiohttp.ClientError:
                    continue
                for host, topics in hosts.items():
                    for partitions in topics.values():
                        for p in partitions:
                            out[p] = host
        return out


@pytest.fixture(scope="module")
async def cluster(
    stack: tuple[str, str],
    http: aiohttp.ClientSession,
    mongo_db: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    deployment = Deployment.on(
        stack,
        LEADSCORE_NOW=PINNED_NOW,
        # a killed member is noticed in seconds, not the default minute
        BROKER_SESSION_TIMEOUT="10",
        BROKER_HEARTBEAT_INTERVAL="2",
    )
    tmp = tmp_path_factory.mktemp("identity-cluster")
    workers = [WorkerProcess(deployment, tmp, f"w{i}") for i in (1, 2)]
    await start_workers(*workers)
    try:
        c = await Cluster(deployment, workers, http, mongo_db.client[deployment.prefix]).tenant("p")
        await wait_routable(c)
        yield c
    finally:
        for w in workers:
            w.stop()


async def wait_routable(c: Cluster, timeout: float = 90.0) -> None:
    """Until both workers answer a lead read for every partition (404: routed, no such lead)."""
    probes = [c.key_on("probe", p) for p in range(c.deployment.partitions)]

    async def statuses() -> list[int]:
        out = []
        for w in c.workers:
            for key in probes:
                status, _ = await c.api.at(w.url).get(f"/api/leads/{key}")
                out.append(status)
        return out

    await eventually(statuses, lambda s: all(x == 404 for x in s), timeout=timeout, interval=0.5)


@dataclass
class Pair:
    canonical: str
    alias: str
    email: str


def make_pairs(c: Cluster, tag: str) -> list[Pair]:
    """One (canonical, alias) pair for every ordered pair of distinct partitions: whatever the
    assignment, some aliases live on one worker and their owner on the other."""
    parts = range(c.deployment.partitions)
    return [
        Pair(c.key_on(f"crm-{tag}{p}{q}", p), c.key_on(f"anon-{tag}{p}{q}", q), f"{tag}{p}{q}@x.io")
        for p in parts
        for q in parts
        if p != q
    ]


async def claim_owners(c: Cluster, pairs: list[Pair], tag: str, alias_events: int) -> None:
    """Canonical leads score and claim their email; aliases score on their own (not yet merged)."""
    now = c.now()
    events: list[dict[str, Any]] = []
    for i, pr in enumerate(pairs):
        events += [
            ev(f"{tag}{i}-k1", "demo_request", ago(now, 10, 2), lead=pr.canonical),
            ev(f"{tag}{i}-dup", "form_submit", ago(now, 3, 2), lead=pr.canonical),
            ev(f"{tag}{i}-k2", "identify", ago(now, 2), lead=pr.canonical, email=pr.email),
        ]
        events += [
            ev(
                f"{tag}{i}-a{n}",
                ["page_view", "signup", "email_open", "unsubscribe"][n % 4],
                ago(now, 20 - n % 20, 1 + n % 22, n),
                anon=pr.alias,
            )
            for n in range(alias_events)
        ]
        # the alias' copy of the shared eventId differs: the owner's copy must win
        events.append(ev(f"{tag}{i}-dup", "contract_signed", ago(now, 1), anon=pr.alias))
    await send(c.api, events, c.model)
    for pr in pairs:
        await wait_owner(c.api, pr.canonical, pr.email, timeout=90)
        c.model.traits[pr.canonical] = {"email": pr.email}
        await wait_count(c.api, pr.alias, alias_events + 1, timeout=90)


def merge_events(c: Cluster, pairs: list[Pair], tag: str) -> list[dict[str, Any]]:
    """Each alias claims its owner's email, followed at once by events still in flight."""
    now = c.now()
    out: list[dict[str, Any]] = []
    for i, pr in enumerate(pairs):
        out += [
            ev(f"{tag}{i}-id", "identify", ago(now, 0, 5), anon=pr.alias, email=pr.email),
            ev(f"{tag}{i}-f1", "webinar_attendance", ago(now, 0, 3), anon=pr.alias),
            ev(f"{tag}{i}-f2", "page_view", ago(now, 6, 3), anon=pr.alias),  # late
        ]
    return out


def later_events(c: Cluster, pairs: list[Pair], tag: str) -> list[dict[str, Any]]:
    """Sent with the alias key once merged (or while merging): they count for the owner."""
    now = c.now()
    out: list[dict[str, Any]] = []
    for i, pr in enumerate(pairs):
        out += [
            ev(f"{tag}{i}-g1", "pricing_page_visit", ago(now, 0, 1), anon=pr.alias),
            ev(f"{tag}{i}-a0", "contract_signed", ago(now, 0, 1), anon=pr.alias),  # a repeat
        ]
    return out


async def test_spec5_merge_across_two_workers(cluster: Cluster) -> None:
    c = await cluster.tenant("merge-two-workers")
    pairs = make_pairs(c, "m")
    owners = await c.owners()
    if len(set(owners.values())) == 2:  # both workers active: some pairs cross them
        assert any(owners[c.partition(p.canonical)] != owners[c.partition(p.alias)] for p in pairs)
    await claim_owners(c, pairs, "m", alias_events=4)
    await send(c.api, merge_events(c, pairs, "m"), c.model)
    for pr in pairs:
        await wait_merged(c.api, pr.alias, pr.canonical, timeout=90)
        c.model.merge(pr.alias, pr.canonical)
    await send(c.api, later_events(c, pairs, "m"), c.model)
    await wait_state(c.api, c.db, c.project_id, c.model, now=c.now, timeout=90)
    for pr in pairs:  # reads through the second worker agree
        status, body = await c.api.at(c.workers[1].url).get(f"/api/leads/{pr.alias}")
        assert status == 200 and body["leadId"] == pr.canonical, body


async def test_spec5_merge_with_a_worker_killed_mid_merge_loses_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    c = await cluster.tenant("merge-kill")
    pairs = make_pairs(c, "x")
    await claim_owners(c, pairs, "x", alias_events=40)
    await send(c.api, merge_events(c, pairs, "x"), c.model)

    # kill as soon as the first merge shows: the others are still under way
    def merged(reads: list[tuple[int, Any]]) -> int:
        return sum(
            r[0] == 200 and r[1]["leadId"] != pr.alias for r, pr in zip(reads, pairs, strict=True)
        )

    reads = await eventually(
        lambda: asyncio.gather(*(read(c.api, pr.alias) for pr in pairs)),
        lambda reads: merged(reads) > 0,
        interval=0.02,
    )
    victim = c.workers[1]
    victim.kill()  # SIGKILL: no commit, no flush
    print(f"killed {victim.url} with {merged(reads)} of {len(pairs)} merges visible")
    # events for the aliases keep coming while it is down (ingest is on the first worker)
    await send(c.api, later_events(c, pairs, "x"), c.model)
    victim.start()  # same data dir and port
    await victim.wait_healthy()
    await wait_routable(c)
    for pr in pairs:
        c.model.merge(pr.alias, pr.canonical)
    await wait_state(c.api, c.db, c.project_id, c.model, now=c.now, timeout=90)
    total = await c.db.score_history.count_documents({"projectId": c.project_id})
    assert total == c.model.distinct_events()
    status, body = await c.api.get("/api/leads?limit=1000")
    assert status == 200, body
    assert sorted(lead["leadId"] for lead in body["leads"]) == c.model.leads()
