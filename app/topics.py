"""The creation of leadscore's topics (declared in `app.topology.TOPICS`) before a worker starts.

Faust declares only its internal topics (changelogs); the source topics must exist, with the same
partition count as the tables, before a worker subscribes — so leadscore creates them itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings
from app.topology import TOPICS

__all__ = ["TopicSpec", "ensure_topics", "topic_specs"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics of `app.topology.TOPICS` as this deployment names and sizes them."""
    return [
        TopicSpec(
            settings.topic(decl.name),
            settings.partitions if decl.partitions is None else decl.partitions,
            dict(decl.config),
        )
        for decl in TOPICS
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
