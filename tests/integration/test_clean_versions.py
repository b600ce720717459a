"""`leadscore clean-versions` on a real broker: it removes what older epochs left and nothing
else — not the current epoch's changelogs (whose names start like epoch 1's), not another
deployment's whose prefix starts like this one's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.replay import clean_old_versions
from app.settings import Settings
from app.topics import ensure_topics
from tests.integration.support import Deployment, eventually

pytestmark = pytest.mark.integration


async def test_clean_versions_removes_only_older_epochs(
    deployment: Deployment, tmp_path: Path
) -> None:
    prefix = f"{deployment.prefix}cv"
    settings = dataclasses.replace(
        Settings.from_env(),
        kafka_bootstrap_servers=deployment.bootstrap_servers,
        topic_prefix=prefix,
        app_version=2,
        data_dir=tmp_path,
    )
    old = [
        f"{prefix}-lead-state-changelog",
        f"{prefix}-email-owners-changelog",
        f"{prefix}-__assignor-__leader",
        f"{prefix}-ingest-__assignor-__leader",
        f"{prefix}-sink-__assignor-__leader",
    ]
    kept = [
        f"{prefix}-v2-lead-state-changelog",
        f"{prefix}-v2-email-owners-changelog",
        f"{prefix}-v2-__assignor-__leader",
        f"{prefix}-eu-lead-state-changelog",  # another deployment, prefix "{prefix}-eu"
        f"{prefix}.events",
    ]
    for role_dir in (prefix, f"{prefix}-ingest", f"{prefix}-sink"):
        for version in (1, 2):
            (tmp_path / role_dir / f"v{version}" / "tables").mkdir(parents=True)
    await ensure_topics(settings)  # the control topic, where the current epoch is recorded
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in old + kept])
        await eventually(admin.list_topics, lambda topics: set(old + kept) <= set(topics))
        removed = await clean_old_versions(settings)
        # topic deletion completes asynchronously on the broker
        topics = set(
            await eventually(admin.list_topics, lambda topics: set(topics).isdisjoint(old))
        )
    finally:
        await admin.close()

    assert set(kept) <= topics, sorted(set(kept) - topics)
    assert sorted(r for r in removed if r.startswith("topic ")) == sorted(f"topic {t}" for t in old)
    for role_dir in (prefix, f"{prefix}-ingest", f"{prefix}-sink"):
        assert not (tmp_path / role_dir / "v1").exists()
        assert (tmp_path / role_dir / "v2" / "tables").exists()
