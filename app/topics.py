"""The topics of leadscore, their names and configs, and their creation before a worker starts.

Faust declares only its internal topics (changelogs); the source topics must exist, with the same
partition count as the tables, before a worker subscribes — so leadscore creates them itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings

__all__ = ["TopicSpec", "ensure_topics", "topic_specs"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    forever = {"retention.ms": "-1"}
    return [
        # The log of record: keep forever so any state can be rebuilt by replay.
        TopicSpec(settings.topic("events"), n, forever),
        # Records re-keyed to the partition that owns their lead (misrouted records, alias
        # forwards, identity replies); co-partitioned with events.
        TopicSpec(settings.topic("lead-commands"), n, forever),
        # Identity claims keyed "{projectId}:{email}": one partition decides each email.
        TopicSpec(settings.topic("identity-claims"), n, forever),
        TopicSpec(settings.topic("lead-changes"), n, {"retention.ms": str(7 * 86_400_000)}),
        TopicSpec(settings.topic("dead-letter"), n, {"retention.ms": str(30 * 86_400_000)}),
        TopicSpec(settings.topic("projects"), 1, {"cleanup.policy": "compact"}),
        # Automation firing candidates keyed by firing id (SPEC 9); decided once into MongoDB.
        TopicSpec(settings.topic("automation-firings"), n, {"retention.ms": str(7 * 86_400_000)}),
        # Deployment-wide control records (the current app version / replay epoch).
        TopicSpec(settings.topic("control"), 1, {"cleanup.policy": "compact"}),
        # Erasures of leads (ADR 0020): kept for ever, read whole by every worker, no epoch.
        TopicSpec(settings.topic("erasures"), 1, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; refuse to run on an events topic with another partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        specs = topic_specs(settings)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                await admin.create_topics(
                    [
                        NewTopic(
                            s.name,
                            num_partitions=s.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=s.config,
                        )
                        for s in missing
                    ]
                )
        described = await admin.describe_topics([s.name for s in specs])
        by_name = {info["topic"]: info for info in described}
        for spec in specs:
            count = len(by_name.get(spec.name, {}).get("partitions", []))
            if count and count != spec.partitions:
                raise RuntimeError(
                    f"topic {spec.name} has {count} partitions but LEADSCORE_PARTITIONS needs "
                    f"{spec.partitions}; the partition count is fixed per deployment"
                )
    finally:
        await admin.close()
