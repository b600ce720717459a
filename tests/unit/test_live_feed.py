"""app.live: which notice a lead change becomes, and the fan-out's bounds (pure, no Kafka)."""

from __future__ import annotations

from typing import Any

import orjson

from app.live import QUEUE_SIZE, LiveFeed, notice_of


def change(lead: str, stage: str, score: float, count: int, kind: str = "upsert") -> bytes:
    body: dict[str, Any] = {
        "schema": 1,
        "kind": kind,
        "lead": {
            "projectId": "p1",
            "leadId": lead,
            "leadStage": stage,
            "currentScore": score,
            "eventCount": count,
        },
        "history": [{"eventId": f"e{count}", "eventType": "x", "points": 5, "timestamp": "t"}],
    }
    return orjson.dumps(body)


def test_new_lead_then_score_move_then_stage_change() -> None:
    feed = LiveFeed()
    sub = feed.subscribe("p1")
    feed.publish(change("a", "cold", 5, 1))
    feed.publish(change("a", "cold", 10, 2))
    feed.publish(change("a", "warm", 40, 3))
    got = [sub.queue.get_nowait() for _ in range(3)]
    assert [n["type"] for n in got] == ["lead.created", "lead.score_changed", "lead.stage_changed"]
    assert got[2]["previousStage"] == "cold" and got[2]["leadStage"] == "warm"
    assert got[2]["event"]["eventId"] == "e3"


def test_only_the_project_s_subscribers_hear_of_its_leads() -> None:
    feed = LiveFeed()
    mine, other = feed.subscribe("p1"), feed.subscribe("p2")
    feed.publish(change("a", "cold", 5, 1))
    assert mine.queue.qsize() == 1 and other.queue.qsize() == 0


def test_removals_and_garbage_are_no_notices() -> None:
    assert notice_of({"kind": "remove", "lead": {"projectId": "p1"}}, None) is None
    assert notice_of(["not", "a", "change"], None) is None
    feed = LiveFeed()
    sub = feed.subscribe("p1")
    feed.publish(b"{not json")
    feed.publish(b'{"lead": 3}')
    assert sub.queue.empty()


def test_a_slow_subscriber_is_dropped_and_the_others_keep_reading() -> None:
    feed = LiveFeed()
    slow, fast = feed.subscribe("p1"), feed.subscribe("p1")
    for i in range(QUEUE_SIZE + 1):
        feed.publish(change("a", "cold", i, i + 1))
        if not fast.queue.empty():
            fast.queue.get_nowait()  # a reader keeping up
    assert slow.dropped and not fast.dropped
    assert feed.subscribers("p1") == 1 and feed.dropped == 1


def test_remembered_stages_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr("app.live.REMEMBERED_LEADS", 2)
    feed = LiveFeed()
    sub = feed.subscribe("p1")
    for lead in ("a", "b", "c"):
        feed.publish(change(lead, "cold", 5, 1))
    feed.publish(change("a", "warm", 40, 2))  # "a" was forgotten: no previous stage to compare
    notices = [sub.queue.get_nowait() for _ in range(4)]
    assert notices[-1]["type"] == "lead.score_changed" and notices[-1]["previousStage"] is None


def test_a_change_of_a_project_nobody_watches_is_skipped_and_its_stage_forgotten() -> None:
    feed = LiveFeed()
    feed.publish(change("a", "cold", 5, 1), b"p1:a")  # nobody watches p1: not remembered
    sub = feed.subscribe("p1")
    feed.publish(change("a", "warm", 40, 2), b"p1:a")
    notice = sub.queue.get_nowait()
    assert notice["previousStage"] is None  # never a stage change against a stale stage
    feed.unsubscribe(sub)
    feed.publish(change("a", "hot", 60, 3), b"p1:a")  # forgotten again while unwatched
    sub = feed.subscribe("p1")
    feed.publish(change("a", "hot", 61, 4), b"p1:a")
    assert sub.queue.get_nowait()["previousStage"] is None
