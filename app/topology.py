"""The whole topology in one place: every topic, table, agent and role of leadscore.

::

    leadscore.events ─────────┐ key "{projectId}:{leadKey}" (any Kafka client, HTTP ingest)
    leadscore.lead-commands ──┤ misrouted records re-keyed, alias forwards, identity replies
                              ▼
    agents.scoring ── table lead-state (RocksDB + changelog): summaries, facts, event ids
       │ invalid ──────► leadscore.dead-letter (with the reason) ──► agents.dead_letters
       │ identify ─────► leadscore.identity-claims (key "{projectId}:{email}")
       │                   └─► agents.identity ── table email-owners
       │                         reply promote | merge ──► leadscore.lead-commands
       │ merge: the absorbed lead sends its events (absorb) to the owner ──► lead-commands
       │ erase (DELETE /api/leads) ──► leadscore.erasures (compacted, read whole by every worker)
       ▼
    leadscore.lead-changes (key: lead) ──► agents.sink ──► MongoDB leads, score_history
    agents.sweep (timer) ──► leadscore.lead-changes (refresh of decayed scores)
       │ a rule's trigger met ──► leadscore.automation-firings (key: firing id)
       │                            └─► agents.firing: first wins (MongoDB automation_firings,
       │                                unique _id) ──► app.delivery: webhook / Slack / SMTP
    leadscore.projects (compacted) ──► app.projects.ProjectDirectory (every worker, in memory)
       projects with their API keys (hashes, scopes): a revoked key leaves every process at once
    leadscore.control (compacted) ──► the epoch (app version) every process starts in (replay)
    MongoDB users / sessions (app.users, short per-process cache), audit_log, key_usage (batched)
    web.* — Faust web views; single-lead reads proxied to the worker owning the lead

Read top to bottom: the topics (with partitions, retention, compaction), the tables, the agents
and which role runs them — plain data, which `app.topics` (creation), `app.replay` (changelogs
of an epoch) and `app.worker` (what a process imports) derive from — then the Faust objects of
this process, made from those declarations. The records on leadscore's own topics are typed in
`app.wire` (docs/adr/0022).

The Faust objects are made on first use, not on import: a worker first reads the declarations
(to create the topics) and the epoch from the control topic, and only then builds the Faust app,
whose version is that epoch (app/cli.py). A table is made only in a process that uses it, so an
ingest or sink process never consumes a changelog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust
    from faust.types import TableT, TopicT

    from app.audit import AuditLog
    from app.firings import FiringLog
    from app.key_usage import KeyUsage
    from app.mongo import Mongo
    from app.projects import ProjectDirectory
    from app.users import UserStore

__all__ = [
    "AGENTS",
    "ROLES",
    "TABLES",
    "TOPICS",
    "AgentDecl",
    "TableDecl",
    "TopicDecl",
    "app",
    "audit_log",
    "claims_topic",
    "commands_topic",
    "dead_letter_topic",
    "directory",
    "email_owners",
    "erasures_topic",
    "events_topic",
    "firing_log",
    "firings_topic",
    "key_usage",
    "lead_changes_topic",
    "leads_table",
    "modules_of",
    "mongo",
    "projects_topic",
    "scoring_source",
    "topic_decl",
    "users",
]

DAY_MS = 86_400_000


# -- topics ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopicDecl:
    """A topic: its name after the deployment's prefix (`settings.topic(name)`), its partition
    count (None: LEADSCORE_PARTITIONS, co-partitioned with the events topic and the tables) and
    its broker config."""

    name: str
    why: str
    config: Mapping[str, str] = field(default_factory=dict)
    partitions: int | None = None


FOREVER = {"retention.ms": "-1"}
COMPACTED = {"cleanup.policy": "compact"}

TOPICS: tuple[TopicDecl, ...] = (
    TopicDecl(
        "events", "the log of record: kept forever so any state can be rebuilt by replay", FOREVER
    ),
    TopicDecl(
        "lead-commands",
        "records re-keyed to the partition that owns their lead (misrouted records, alias "
        "forwards, identity replies, merges, erasures); co-partitioned with events",
        FOREVER,
    ),
    TopicDecl(
        "identity-claims",
        'claims keyed "{projectId}:{email}": one partition decides each email',
        FOREVER,
    ),
    TopicDecl(
        "lead-changes",
        "the state of each lead after a change, for the sink (MongoDB) and the live feed",
        {"retention.ms": str(7 * DAY_MS)},
    ),
    TopicDecl(
        "dead-letter",
        "records that cannot be processed, with the reason (indexed into MongoDB)",
        {"retention.ms": str(30 * DAY_MS)},
    ),
    TopicDecl("projects", "projects, rules, API keys: read whole by every process", COMPACTED, 1),
    TopicDecl(
        "automation-firings",
        "automation firing candidates keyed by firing id (SPEC 9); decided once into MongoDB",
        {"retention.ms": str(7 * DAY_MS)},
    ),
    TopicDecl("control", "deployment-wide records: the current app version (epoch)", COMPACTED, 1),
    TopicDecl(
        "erasures",
        "erasures of leads (ADR 0020): kept for ever, read whole by every worker, no epoch",
        COMPACTED,
        1,
    ),
)


def topic_decl(name: str) -> TopicDecl:
    for decl in TOPICS:
        if decl.name == name:
            return decl
    raise KeyError(f"no topic {name!r} in app/topology.py")


# -- tables --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TableDecl:
    """A changelog-backed RocksDB table, co-partitioned with the events topic. Its changelog
    topic is `{app id}-{name}-changelog`, one per epoch (app/replay.py)."""

    name: str
    help: str
    options: Mapping[str, int] = field(default_factory=dict)


LEAD_STATE = TableDecl(
    "lead-state",
    "S+lead -> summary|alias, F+lead+ts+eventId -> fact, E+lead+eventId -> dedup",
    {
        "block_cache_size": 32 * 1024 * 1024,
        "write_buffer_size": 16 * 1024 * 1024,
        "max_write_buffer_number": 2,
    },
)
EMAIL_OWNERS = TableDecl(
    "email-owners",
    '"{projectId}:{email}" -> {owner: the owning claim or None, confirmed, waiting:'
    " claims held until the owner confirms, released: [[lead, eventId]] claims given back}",
)
TABLES: tuple[TableDecl, ...] = (LEAD_STATE, EMAIL_OWNERS)


# -- agents and roles ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentDecl:
    """A consumer (or timer) of a worker: the module that defines it, what it reads, writes and
    keeps. `reads` names topics consumed through Faust (a unit test holds this true)."""

    module: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


AGENTS: Mapping[str, AgentDecl] = {
    "scoring": AgentDecl(
        "agents.scoring",
        reads=("events", "lead-commands"),
        writes=(
            "lead-changes",
            "lead-commands",
            "identity-claims",
            "automation-firings",
            "erasures",
            "dead-letter",
        ),
        tables=("lead-state",),
    ),
    "identity": AgentDecl(
        "agents.identity",
        reads=("identity-claims",),
        writes=("lead-commands", "dead-letter"),
        tables=("email-owners",),
    ),
    "sweep": AgentDecl(  # a timer over the leads of the partitions this worker owns
        "agents.sweep", writes=("lead-changes", "automation-firings"), tables=("lead-state",)
    ),
    "dead_letters": AgentDecl("agents.dead_letters", reads=("dead-letter",)),
    "firing": AgentDecl("agents.firing", reads=("automation-firings",)),
    "sink": AgentDecl("agents.sink", reads=("lead-changes",), writes=("dead-letter",)),
}

ROLES: Mapping[str, tuple[str, ...]] = {
    # scoring, identity, the sweep and the whole API; also the sink unless LEADSCORE_SINK=off
    # (then sink processes run it) and firings unless LEADSCORE_DELIVERY=off (delivery
    # processes run them)
    "worker": (
        "agents.scoring",
        "agents.identity",
        "agents.sweep",
        "agents.dead_letters",
        "agents.firing",
        "web.security",
        "web.events",
        "web.aliases",
        "web.health",
        "web.leads",
        "web.projects",
        "web.keys",
        "web.users",
        "web.auth",
        "web.audit",
        "web.admin",
        "web.system_health",
        "web.metrics",
        "web.request_ids",
        "web.dead_letters",
        "web.data_rights",
        "web.automations",
        "web.stream",
        "web.dashboard.pages",
        "agents.sink",
    ),
    # HTTP ingest only: produces events, consumes nothing, keeps no tables
    "ingest": (
        "web.security",
        "web.events",
        "web.aliases",
        "web.health",
        "web.metrics",
        "web.request_ids",
    ),
    # lead-changes -> MongoDB, in a consumer group of its own
    "sink": ("web.security", "agents.sink", "web.health", "web.metrics", "web.request_ids"),
    # automation firings decided and delivered, nothing else (`leadscore deliver`, next to
    # workers run with LEADSCORE_DELIVERY=off; ADR 0024)
    "delivery": ("web.security", "agents.firing", "web.health", "web.metrics", "web.request_ids"),
}


def modules_of(
    role: str, *, sink_enabled: bool = True, delivery_enabled: bool = True
) -> tuple[str, ...]:
    """The modules a process of `role` imports (which registers its agents, tables, views)."""
    modules = ROLES[role]
    if role == "worker" and not sink_enabled:
        modules = tuple(m for m in modules if m != AGENTS["sink"].module)
    if role == "worker" and not delivery_enabled:
        modules = tuple(m for m in modules if m != AGENTS["firing"].module)
    return modules


# -- the Faust objects of this process, made from the declarations above -------------------------
# Declared here for readers and type checkers; made on first use by `__getattr__` below.
app: faust.App
events_topic: TopicT
commands_topic: TopicT
scoring_source: TopicT  # events and lead-commands, read by one agent
lead_changes_topic: TopicT
dead_letter_topic: TopicT
claims_topic: TopicT
projects_topic: TopicT
firings_topic: TopicT
erasures_topic: TopicT
leads_table: TableT  # LEAD_STATE; `tables.leads.LeadStore` knows its layout
email_owners: TableT  # EMAIL_OWNERS; `agents.identity` knows its entries
directory: ProjectDirectory
mongo: Mongo
users: UserStore
audit_log: AuditLog
firing_log: FiringLog
key_usage: KeyUsage


def _bind_app() -> dict[str, Any]:
    from app.audit import AuditLog
    from app.faust_app import app
    from app.firings import FiringLog
    from app.key_usage import KeyUsage
    from app.mongo import Mongo
    from app.projects import ProjectDirectory
    from app.settings import settings
    from app.users import UserStore

    def topic(*names: str) -> TopicT:
        # Values are our own JSON (decoded by app.wire, bad records dead-lettered), keys raw UTF-8.
        return app.topic(
            *(settings.topic(topic_decl(n).name) for n in names),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    directory = ProjectDirectory(settings)
    app.service(directory)  # type: ignore[arg-type]
    mongo = Mongo(settings)
    key_usage = KeyUsage(mongo, settings)
    app.service(key_usage)  # type: ignore[arg-type]
    return {
        "app": app,
        "events_topic": topic("events"),
        "commands_topic": topic("lead-commands"),
        "scoring_source": topic(*AGENTS["scoring"].reads),
        "lead_changes_topic": topic("lead-changes"),
        "dead_letter_topic": topic("dead-letter"),
        "claims_topic": topic("identity-claims"),
        "projects_topic": topic("projects"),
        "firings_topic": topic("automation-firings"),
        "erasures_topic": topic("erasures"),
        "directory": directory,
        "mongo": mongo,
        "users": UserStore(mongo, settings),
        "audit_log": AuditLog(mongo),
        "firing_log": FiringLog(mongo),
        "key_usage": key_usage,
    }


def _table(decl: TableDecl) -> TableT:
    from app.settings import settings

    return _bound("app").Table(
        decl.name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=dict(decl.options) or None,
        help=decl.help,
    )


_TABLE_BINDINGS = {"leads_table": LEAD_STATE, "email_owners": EMAIL_OWNERS}


def _bound(name: str) -> Any:
    value = globals().get(name)
    if value is None:
        if name in _TABLE_BINDINGS:
            value = _table(_TABLE_BINDINGS[name])
            globals()[name] = value
        else:
            globals().update(_bind_app())
            value = globals()[name]
    return value


_APP_BINDINGS = frozenset(
    {
        "app",
        "events_topic",
        "commands_topic",
        "scoring_source",
        "lead_changes_topic",
        "dead_letter_topic",
        "claims_topic",
        "projects_topic",
        "firings_topic",
        "erasures_topic",
        "directory",
        "mongo",
        "users",
        "audit_log",
        "firing_log",
        "key_usage",
    }
)


def __getattr__(name: str) -> Any:
    if name in _TABLE_BINDINGS or name in _APP_BINDINGS:
        return _bound(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
