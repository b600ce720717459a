"""The Python client's batching, retries and eventIds, with a fake transport (pure: no network).
Against the real stack: tests/integration/test_sdk_python.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from leadscore_client import LeadscoreClient, RejectedError, RetryableError

UUID_LEN = 36


class FakeTransport:
    """Records every attempt; raises the planned outcomes in order, then accepts."""

    def __init__(self, *plan: Exception) -> None:
        self.plan = list(plan)
        self.attempts: list[list[dict[str, Any]]] = []
        self.closed = False
        self.lock = threading.Lock()

    def send(self, events: Sequence[Mapping[str, Any]]) -> None:
        with self.lock:
            self.attempts.append([dict(e) for e in events])
            if self.plan:
                raise self.plan.pop(0)

    def close(self) -> None:
        self.closed = True


def client(transport: FakeTransport, **options: Any) -> LeadscoreClient:
    errors: list[tuple[list[dict[str, Any]], Exception]] = []
    c = LeadscoreClient(
        "lss_test",
        transport=transport,
        retry_base=0.001,
        retry_cap=0.01,
        on_error=lambda events, exc: errors.append((list(events), exc)),
        **options,
    )
    c.errors = errors  # type: ignore[attr-defined]
    return c


def test_events_are_batched_and_carry_ids_made_by_the_client() -> None:
    fake = FakeTransport()
    c = client(fake, flush_interval=5)
    ids = [c.track("page_view", anonymous_id="a1") for _ in range(3)]
    ids.append(c.identify(" ada@example.com ", anonymous_id="a1", traits={"name": "Ada"}))
    ids.append(c.page("https://shop.example/pricing", lead_id="crm-1"))
    assert c.flush(timeout=10)
    assert len(fake.attempts) == 1  # one request for all five, cut short by flush()
    sent = fake.attempts[0]
    assert [e["eventId"] for e in sent] == ids
    assert all(len(i) == UUID_LEN for i in ids) and len(set(ids)) == 5
    assert sent[3]["eventType"] == "identify"
    assert sent[3]["properties"] == {"name": "Ada", "email": "ada@example.com"}
    assert sent[4] == {
        "eventId": ids[4],
        "eventType": "page_view",
        "timestamp": sent[4]["timestamp"],
        "leadId": "crm-1",
        "properties": {"url": "https://shop.example/pricing"},
    }
    assert sent[4]["timestamp"].endswith("+00:00")
    c.close()
    assert fake.closed


def test_no_request_holds_more_than_max_batch_events() -> None:
    fake = FakeTransport()
    c = client(fake, max_batch=4, flush_interval=5)
    for i in range(10):
        c.track("download", lead_id=f"l{i}")
    assert c.flush(timeout=10)
    assert sorted(len(a) for a in fake.attempts) == [2, 4, 4]
    c.close()


def test_no_request_is_larger_than_the_batch_route_takes() -> None:
    from leadscore_client.client import MAX_REQUEST_BYTES

    fake = FakeTransport()
    c = client(fake, flush_interval=5)
    big = {"blob": "é" * 7_000}  # 14 KB of UTF-8: under the 16 KiB a property set may have
    for i in range(150):  # about 2.1 MB in all: three requests, not one the server would refuse
        c.track("download", lead_id=f"l{i}", properties=big)
    assert c.flush(timeout=10)
    sizes = [len(json.dumps({"events": a}, ensure_ascii=False).encode()) for a in fake.attempts]
    assert len(fake.attempts) == 3
    assert all(size <= MAX_REQUEST_BYTES for size in sizes), sizes
    assert sum(len(a) for a in fake.attempts) == 150
    c.close()


def test_a_full_batch_goes_without_waiting_for_the_interval() -> None:
    fake = FakeTransport()
    c = client(fake, max_batch=2, flush_interval=3600)
    c.track("download", lead_id="l")
    c.track("download", lead_id="l")
    deadline = time.monotonic() + 10
    while not fake.attempts and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake.attempts) == 1
    c.close()


def test_a_retried_batch_is_the_same_events_with_the_same_ids() -> None:
    fake = FakeTransport(RetryableError("reset"), RetryableError("HTTP 503"))
    c = client(fake)
    c.track("signup", lead_id="l1")
    c.track("demo_request", lead_id="l1")
    assert c.flush(timeout=10)
    assert len(fake.attempts) == 3
    assert fake.attempts[0] == fake.attempts[1] == fake.attempts[2]
    assert c.errors == []  # type: ignore[attr-defined]
    c.close()


def test_retry_after_from_the_server_is_waited_for() -> None:
    fake = FakeTransport(RetryableError("HTTP 429", retry_after=0.3))
    c = client(fake)
    c.track("signup", lead_id="l1")
    started = time.monotonic()
    assert c.flush(timeout=10)
    assert time.monotonic() - started >= 0.3
    assert len(fake.attempts) == 2
    c.close()


def test_a_batch_is_given_up_after_max_retries_and_reported() -> None:
    fake = FakeTransport(*[RetryableError("down")] * 3)
    c = client(fake, max_retries=2)
    eid = c.track("signup", lead_id="l1")
    assert c.flush(timeout=10)
    assert len(fake.attempts) == 3
    [(events, exc)] = c.errors  # type: ignore[attr-defined]
    assert [e["eventId"] for e in events] == [eid]
    assert isinstance(exc, RetryableError)
    c.track("signup", lead_id="l2")  # the thread goes on with the next batch
    assert c.flush(timeout=10)
    assert len(fake.attempts) == 4
    c.close()


def test_rejected_events_are_reported_and_the_valid_rest_is_sent() -> None:
    fake = FakeTransport(RejectedError("HTTP 422", invalid=[1]))
    c = client(fake)
    first = c.track("signup", lead_id="l1")
    bad = c.track("signup", lead_id="l1", timestamp="not a time")
    third = c.track("signup", lead_id="l1")
    assert c.flush(timeout=10)
    assert [e["eventId"] for e in fake.attempts[1]] == [first, third]
    [(events, _)] = c.errors  # type: ignore[attr-defined]
    assert [e["eventId"] for e in events] == [bad]
    c.close()


def test_a_refused_key_is_not_retried() -> None:
    fake = FakeTransport(RejectedError("HTTP 401"))
    c = client(fake)
    c.track("signup", lead_id="l1")
    assert c.flush(timeout=10)
    assert len(fake.attempts) == 1
    assert len(c.errors) == 1  # type: ignore[attr-defined]
    c.close()


def test_flush_returns_false_when_its_timeout_passes_first() -> None:
    gate = threading.Event()

    class Slow(FakeTransport):
        def send(self, events: Sequence[Mapping[str, Any]]) -> None:
            gate.wait(10)
            super().send(events)

    c = client(Slow())
    c.track("signup", lead_id="l1")
    assert c.flush(timeout=0.2) is False
    assert c.pending() == 1
    gate.set()
    assert c.flush(timeout=10)
    c.close()


def test_bad_calls_raise_at_the_call() -> None:
    c = client(FakeTransport())
    with pytest.raises(ValueError, match="event_type"):
        c.track("has spaces", lead_id="l")
    with pytest.raises(ValueError, match="lead_id or anonymous_id"):
        c.track("signup")
    with pytest.raises(ValueError, match="lead_id"):
        c.track("signup", lead_id="x" * 129)
    with pytest.raises(ValueError, match="e-mail"):
        c.identify(" ", lead_id="l")
    with pytest.raises(ValueError, match="16 KiB"):
        c.track("signup", lead_id="l", properties={"blob": "x" * 16_400})
    with pytest.raises(ValueError, match="finite"):
        c.track("signup", lead_id="l", properties={"ratio": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        c.track("signup", lead_id="l", properties={"when": object()})
    assert c.pending() == 0
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.track("signup", lead_id="l")


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from leadscore_client.transports import _retry_after

    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_retry_after(later) or 0) <= 30


def test_the_kafka_record_is_the_spec_wire_format() -> None:
    pytest.importorskip("aiokafka")
    import json

    from leadscore_client import KafkaTransport

    transport = KafkaTransport("127.0.0.1:1", "prj_1", topic="t")
    try:
        event = {"eventId": "e1", "eventType": "signup", "anonymousId": "a-9", "timestamp": "x"}
        key, value = transport.record(event)
        assert key == b"prj_1:a-9"
        assert json.loads(value) == {**event, "projectId": "prj_1"}
        key, _ = transport.record({**event, "leadId": "crm-1"})
        assert key == b"prj_1:crm-1"  # the leadId wins over the anonymousId (SPEC 1)
    finally:
        transport.close()


def test_events_still_queued_when_the_program_exits_are_sent() -> None:
    import subprocess
    import sys

    program = """
import sys
from leadscore_client import LeadscoreClient

class Printing:
    def send(self, events):
        print(" ".join(e["eventId"] for e in events), flush=True)
    def close(self):
        pass

client = LeadscoreClient("lss_x", transport=Printing(), flush_interval=3600)
print("queued", client.track("signup", lead_id="l1", event_id="exit-1"), flush=True)
sys.exit(0)  # no flush, no close: the daemon thread would die with the interpreter
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    assert out[:2] == ["queued exit-1", "exit-1"], out
