"""`app.topology` is the one place the topology is declared: what Faust registers must match it."""

from __future__ import annotations

import subprocess
import sys

from app import topology
from app.settings import Settings
from app.topics import topic_specs


def test_every_agent_reads_the_topics_its_declaration_names() -> None:
    from app.worker import app  # registers every agent and table of a worker

    settings = Settings.from_env()
    by_module: dict[str, set[str]] = {}
    for agent in app.agents.values():
        by_module.setdefault(agent.fun.__module__, set()).update(agent.channel.topics)
    declared = {
        decl.module: {settings.topic(name) for name in decl.reads}
        for decl in topology.AGENTS.values()
        if decl.reads
    }
    assert by_module == declared


def test_the_worker_registers_exactly_the_declared_tables_with_their_options() -> None:
    from app.worker import app

    assert sorted(app.tables) == sorted(t.name for t in topology.TABLES)
    for decl in topology.TABLES:
        assert app.tables[decl.name].help == decl.help
        assert dict(app.tables[decl.name].options or {}) == dict(decl.options)


def test_every_declared_agent_and_table_is_run_by_some_role() -> None:
    modules = {m for role in topology.ROLES for m in topology.modules_of(role)}
    assert {a.module for a in topology.AGENTS.values()} <= modules
    used = {t for a in topology.AGENTS.values() for t in (*a.reads, *a.writes)}
    names = {t.name for t in topology.TOPICS}
    assert used <= names
    assert {t for a in topology.AGENTS.values() for t in a.tables} == {
        t.name for t in topology.TABLES
    }


def test_roles_choose_their_modules() -> None:
    assert "agents.sink" not in topology.modules_of("worker", sink_enabled=False)
    assert "agents.sink" in topology.modules_of("worker")
    assert not [m for m in topology.modules_of("ingest") if m.startswith("agents.")]
    assert [m for m in topology.modules_of("sink") if m.startswith("agents.")] == ["agents.sink"]
    assert "agents.firing" not in topology.modules_of("worker", delivery_enabled=False)
    assert [m for m in topology.modules_of("delivery") if m.startswith("agents.")] == [
        "agents.firing"
    ]


def test_topic_specs_follow_the_declarations() -> None:
    settings = Settings.from_env()
    specs = {s.name: s for s in topic_specs(settings)}
    assert len(specs) == len(topology.TOPICS)
    for decl in topology.TOPICS:
        spec = specs[settings.topic(decl.name)]
        assert spec.partitions == (decl.partitions or settings.partitions)
        assert spec.config == dict(decl.config)
    assert specs[settings.topic("events")].config == {"retention.ms": "-1"}
    assert specs[settings.topic("projects")].config == {"cleanup.policy": "compact"}


def test_reading_the_declarations_builds_no_faust_app() -> None:
    """`leadscore worker` creates the topics and reads the epoch before it builds the Faust app
    (whose version is that epoch): the declarations must be readable without it."""
    code = (
        "import sys, app.topology, app.topics, app.replay\n"
        "assert 'app.faust_app' not in sys.modules, 'the Faust app was built'\n"
        "assert 'faust' not in sys.modules, 'faust was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
