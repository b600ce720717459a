"""Every Prometheus metric of leadscore, defined in this one module (issue #15).

Agents, views and services call the one-line helpers below instead of touching metric objects,
so names, labels and buckets live in one place and the label sets stay small: no metric carries
a lead, a project, a key or a raw path (a label value per lead would grow without bound and
would put personal data in the monitoring system). Every process (worker, `leadscore ingest`,
`leadscore sink`) exports what it does at `GET /metrics` (web/metrics.py); a metric a role never
touches is still listed, at zero, so dashboards and alerts need no special cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "REGISTRY",
    "automation_delivery",
    "automation_firing",
    "dead_letter",
    "dead_letter_class",
    "event_consumed",
    "event_scored",
    "http_request",
    "mongo_error",
    "rate_limited",
    "records_processed",
    "short_topic",
    "sink_batch",
    "watch_consumer_lag",
]

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

EVENTS_CONSUMED = Counter(
    "leadscore_events_consumed",
    "Records read by the scoring agent, by source topic (events or lead-commands).",
    ["source"],
    registry=REGISTRY,
)
EVENTS_SCORED = Counter(
    "leadscore_events_scored",
    "Events that reached their lead, by outcome: scored, duplicate (eventId ignored) "
    "or erased (logged before their key's erasure, dropped).",
    ["outcome"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "leadscore_processing_seconds",
    "Time the scoring agent spends on one record: its share of its batch, from decode to commit.",
    buckets=_FAST,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "leadscore_dead_letters",
    "Records parked on the dead-letter topic, by reason class.",
    ["reason"],
    registry=REGISTRY,
)
SINK_BATCH_SIZE = Histogram(
    "leadscore_sink_batch_size",
    "Lead changes per sink batch (before coalescing).",
    buckets=_BATCH,
    registry=REGISTRY,
)
SINK_BATCH_SECONDS = Histogram(
    "leadscore_sink_batch_seconds",
    "Time to write one sink batch to MongoDB, retries included.",
    buckets=_FAST,
    registry=REGISTRY,
)
MONGO_ERRORS = Counter(
    "leadscore_mongo_errors",
    "MongoDB operations that failed (each retry counts), by where they happened.",
    ["where"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "leadscore_http_requests",
    "HTTP requests by method, route template (not the raw path) and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "leadscore_http_request_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=_FAST,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "leadscore_rate_limited",
    "Requests refused with 429 by the per-credential rate limit, by credential kind.",
    ["credential"],
    registry=REGISTRY,
)
AUTOMATION_FIRINGS = Counter(
    "leadscore_automation_firings",
    "Automation rules that fired on a score change, by status.",
    ["status"],
    registry=REGISTRY,
)
AUTOMATION_DELIVERIES = Counter(
    "leadscore_automation_deliveries",
    "Automation action deliveries (webhooks and the like), by status.",
    ["status"],
    registry=REGISTRY,
)

# The reason classes of dead letters: the first words of a reason, so that the free text after
# a colon (an exception, a JSON error position) never becomes a label value.
_REASON_CLASSES = frozenset(
    {
        "invalid event",
        "invalid JSON",
        "unknown project",
        "command for an unknown project",
        "invalid lead command",
        "invalid identity record",
        "not a lead change",
        "cannot be written to MongoDB",
        "internal error",
    }
)
_CONSUMER_FAILED = re.compile(r"^[a-z-]{1,32} failed$")  # "scoring failed: KeyError: ..." (a bug)


def dead_letter_class(reason: str) -> str:
    """The low-cardinality class of a dead-letter reason ("other" for anything unforeseen)."""
    head = reason.split(":", 1)[0].strip()
    if head in _REASON_CLASSES or _CONSUMER_FAILED.match(head):
        return head
    return "other"


# Children of the per-event metrics, bound once: `labels()` costs about a microsecond a call.
_consumed: dict[str, Any] = {}
_scored: dict[str, Any] = {}


def event_consumed(source: str, n: int = 1) -> None:
    child = _consumed.get(source)
    if child is None:
        child = _consumed[source] = EVENTS_CONSUMED.labels(source)
    child.inc(n)


def event_scored(outcome: str, n: int = 1) -> None:
    child = _scored.get(outcome)
    if child is None:
        child = _scored[outcome] = EVENTS_SCORED.labels(outcome)
    child.inc(n)


def records_processed(seconds: float, n: int) -> None:
    """A batch of `n` records took `seconds`: each is observed at its share of the batch."""
    if n:
        share = seconds / n
        for _ in range(n):
            PROCESSING_SECONDS.observe(share)


def dead_letter(reason: str) -> None:
    DEAD_LETTERS.labels(dead_letter_class(reason)).inc()


def sink_batch(size: int, seconds: float) -> None:
    SINK_BATCH_SIZE.observe(size)
    SINK_BATCH_SECONDS.observe(seconds)


def mongo_error(where: str) -> None:
    MONGO_ERRORS.labels(where).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)


def rate_limited(credential: str) -> None:
    RATE_LIMITED.labels(credential).inc()


def automation_firing(status: str) -> None:
    AUTOMATION_FIRINGS.labels(status).inc()


def automation_delivery(status: str) -> None:
    AUTOMATION_DELIVERIES.labels(status).inc()


# Lag is read at scrape time from what the consumer already knows (its fetched high-water marks
# and its committed offsets): no admin client, no broker round trip per scrape.
LagSource = Callable[[], Iterable[tuple[str, int, int]]]


class _LagCollector(Collector):
    def __init__(self) -> None:
        self.source: LagSource | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "leadscore_consumer_lag",
            "Records in an assigned partition not yet committed by this process "
            "(high-water mark minus committed offset), by topic and partition.",
            labels=["topic", "partition"],
        )
        if self.source is not None:
            for topic, partition, lag in self.source():
                family.add_metric([topic, str(partition)], lag)
        yield family


_LAG = _LagCollector()
REGISTRY.register(_LAG)


def watch_consumer_lag(source: LagSource) -> None:
    """Report lag from `source`: (topic without the deployment prefix, partition, lag)."""
    _LAG.source = source


def short_topic(name: str, prefix: str) -> str:
    """`{prefix}.events` → `events`; Faust's changelogs `{prefix}-x-changelog` → `x-changelog`."""
    return re.sub(rf"^{re.escape(prefix)}[.-]", "", name)
