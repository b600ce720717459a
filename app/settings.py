"""Every setting of leadscore, read once from the environment (see README and .env.example)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app import topology

__all__ = ["Settings", "settings"]


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: str) -> int:
    """A whole-number setting; a malformed one is refused at start, naming the setting."""
    value = _env(name, default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def _float(name: str, default: str) -> float:
    """A numeric setting; a malformed one is refused at start, naming the setting."""
    value = _env(name, default)
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str
    """KAFKA_BOOTSTRAP_SERVERS: comma-separated host:port list of the Kafka brokers."""
    mongo_url: str
    """MONGO_URL: MongoDB connection string; the single switch between test server and mongod."""
    mongo_db: str
    """MONGO_DB: database holding leads, score_history and projects."""
    partitions: int
    """LEADSCORE_PARTITIONS: partitions of the events topic and every co-partitioned topic/table.
    Fixed per deployment: it is the ceiling of worker parallelism."""
    replication_factor: int
    """LEADSCORE_REPLICATION: replication factor of the topics leadscore creates (3 in prod)."""
    standby_replicas: int
    """LEADSCORE_STANDBY_REPLICAS: standby copies of each table partition on other workers."""
    web_port: int
    """WEB_PORT: HTTP port of this worker."""
    web_host: str
    """WEB_HOST: host name other workers use to reach this one (table routing)."""
    data_dir: Path
    """LEADSCORE_DATA_DIR: RocksDB table state of this worker (one per worker on a host)."""
    log_level: str
    """LOG_LEVEL: debug, info, warning or error."""
    admin_token: str
    """LEADSCORE_ADMIN_TOKEN: bearer token of the admin routes; empty disables them."""
    topic_prefix: str
    """LEADSCORE_TOPIC_PREFIX: prefix of every topic name and the Faust app id."""
    app_version: int
    """LEADSCORE_APP_VERSION: bump to rebuild every table from the events topic (replay)."""
    sweep_interval: float
    """LEADSCORE_SWEEP_INTERVAL: seconds between decay sweeps of materialized leads."""
    sink_batch_size: int
    """LEADSCORE_SINK_BATCH: most lead changes written to MongoDB in one bulk write."""
    sink_batch_seconds: float
    """LEADSCORE_SINK_WITHIN: longest wait to fill a sink batch."""
    session_timeout: float
    """LEADSCORE_SESSION_TIMEOUT: seconds before the group gives a silent (crashed) worker's
    partitions to the others; lower means faster failover and more false alarms."""
    fixed_now: str
    """LEADSCORE_NOW: an ISO-8601 instant the worker uses as "now" instead of its clock (tests
    only: decay and the 24-hour window are evaluated at it). Empty: the wall clock."""
    sink_enabled: bool
    """LEADSCORE_SINK: `on` (default) or `off` — a worker without the MongoDB sink (benchmarks,
    or a deployment that runs sinks on separate workers)."""

    role: str = "worker"
    """LEADSCORE_ROLE: `worker` (default: scoring, identity, sweep, sink, every API), `ingest`
    (only the ingest endpoints and health: no consumer of leadscore's topics, no tables;
    `leadscore ingest`), `sink` (only the MongoDB sink and health, in a consumer group of its
    own; `leadscore sink`, next to workers run with LEADSCORE_SINK=off) or `delivery` (only
    automation firings: deciding and delivering them, and health, in a consumer group of its
    own; `leadscore deliver`, next to workers run with LEADSCORE_DELIVERY=off)."""
    delivery_enabled: bool = True
    """LEADSCORE_DELIVERY: `on` (default) or `off` — a worker that neither decides nor delivers
    automation firings (its scoring still produces the candidates), for deployments that run
    `leadscore deliver` processes so delivery never shares a core with scoring."""
    max_rules: int = 500
    """LEADSCORE_MAX_RULES: most scoring rules per project. Every change republishes the whole
    project record, which must stay far below the broker's message limit (about 1 MB)."""
    produce_timeout: float = 5.0
    """LEADSCORE_PRODUCE_TIMEOUT: seconds an ingest request waits for Kafka to acknowledge its
    events before answering 503 with Retry-After (instead of hanging while the broker is down)."""
    admin_concurrency: int = 2
    """LEADSCORE_ADMIN_CONCURRENCY: heavy admin requests (rescore, rebuild, system-health) one
    process runs at once; more get 429 with Retry-After."""

    session_ttl: float = 12 * 3600.0
    """LEADSCORE_SESSION_TTL: seconds a login session lasts (ADR 0017)."""
    session_cache_seconds: float = 2.0
    """LEADSCORE_SESSION_CACHE: seconds a process may trust a session it looked up; a logout,
    revocation or role change reaches every process within this time (ADR 0017)."""
    cookie_secure: bool = True
    """LEADSCORE_COOKIE_SECURE: `on` (default) marks the session cookie `Secure` (HTTPS only,
    and http://localhost in browsers); `off` for plain-HTTP development hosts."""
    rate_limit: str = "2000/second"
    """LEADSCORE_RATE_LIMIT: requests per secret key, session or admin token, per process."""
    rate_limit_publishable: str = "200/second"
    """LEADSCORE_RATE_LIMIT_PUBLISHABLE: requests per publishable key, per process."""
    login_slow_after: int = 3
    """LEADSCORE_LOGIN_SLOW_AFTER: failed logins (per e-mail, per client address) in the
    window after which each further attempt is answered slowly."""
    login_lock_after: int = 10
    """LEADSCORE_LOGIN_LOCK_AFTER: failed logins in the window after which logins are refused
    (429) until the window has passed."""
    login_window: float = 900.0
    """LEADSCORE_LOGIN_WINDOW: seconds over which failed logins are counted."""
    max_keys_per_project: int = 50
    """LEADSCORE_MAX_KEYS: most API keys (secret and publishable) one project may hold."""
    key_usage_flush: float = 10.0
    """LEADSCORE_KEY_USAGE_FLUSH: seconds between writes of keys' "last used" times (batched,
    never a write per request)."""
    log_format: str = "text"
    """LEADSCORE_LOG_FORMAT: `text` (Faust's coloured lines) or `json` (one JSON object per line,
    with the request id of the HTTP request a line belongs to; app/logs.py)."""
    access_log: bool = True
    """LEADSCORE_ACCESS_LOG: `on` (default) logs one line per HTTP request (method, route
    template, status, duration, request id) at info; `off` drops those lines (high request
    rates), while other lines keep their request id."""
    max_automations_per_project: int = 50
    """LEADSCORE_MAX_AUTOMATIONS: most automation rules one project may hold (SPEC 9)."""
    automation_max_age: float = 86_400.0
    """LEADSCORE_AUTOMATION_MAX_AGE: seconds; a firing whose causing event is older than this
    when it is decided is recorded as `skipped` and never delivered (SPEC 9 maxTriggerAge)."""
    delivery_attempts: int = 10
    """LEADSCORE_DELIVERY_ATTEMPTS: attempts of a delivery before it is `failed`."""
    delivery_backoff: float = 60.0
    """LEADSCORE_DELIVERY_BACKOFF: seconds before the 2nd attempt; doubles each time (with
    jitter, at least half of it), up to LEADSCORE_DELIVERY_BACKOFF_MAX."""
    delivery_backoff_max: float = 3600.0
    """LEADSCORE_DELIVERY_BACKOFF_MAX: longest wait between two attempts, in seconds."""
    delivery_timeout: float = 10.0
    """LEADSCORE_DELIVERY_TIMEOUT: seconds one attempt may take (connect to answer)."""
    delivery_concurrency: int = 256
    """LEADSCORE_DELIVERY_CONCURRENCY: deliveries in flight per process, all destinations."""
    delivery_per_destination: int = 32
    """LEADSCORE_DELIVERY_PER_DESTINATION: deliveries in flight per process to one host."""
    delivery_poll: float = 1.0
    """LEADSCORE_DELIVERY_POLL: seconds between looks for due retries (new firings decided by
    this process are picked up at once)."""
    breaker_failures: int = 5
    """LEADSCORE_BREAKER_FAILURES: consecutive failures that open a destination's breaker."""
    breaker_cooldown: float = 30.0
    """LEADSCORE_BREAKER_COOLDOWN: seconds a destination stays paused before one trial."""
    smtp_host: str = ""
    """SMTP_HOST: server for `email` actions; empty: e-mail actions fail with that reason."""
    smtp_port: int = 587
    """SMTP_PORT: port of the SMTP server."""
    smtp_tls: str = "starttls"
    """SMTP_TLS: `starttls` (default), `tls` (implicit, port 465) or `none`."""
    smtp_user: str = ""
    """SMTP_USER: login, if the server needs one."""
    smtp_password: str = ""
    """SMTP_PASSWORD: password of SMTP_USER."""
    smtp_from: str = "leadscore@localhost"
    """SMTP_FROM: sender address of automation e-mails."""
    scoring_batch: int = 2_000
    """LEADSCORE_SCORING_BATCH: most records the scoring agent applies and commits as one batch
    (one table write batch, one LeadChange per lead). Larger batches amortize the commit."""
    scoring_wait: float = 0.05
    """LEADSCORE_SCORING_WAIT: longest wait, in seconds, to fill a scoring batch: the latency a
    lone event pays before it is scored."""
    fetch_max_wait_ms: int = 100
    """LEADSCORE_FETCH_MAX_WAIT_MS: longest time the broker holds a worker's fetch while its
    partitions have no new records (Faust fixes 1,500 ms; app/faust_patches.py patch 8): the
    longest a busy partition can wait behind idle ones. From 10 to 1,000."""
    max_message_bytes: int = 900_000
    """LEADSCORE_MAX_MESSAGE_BYTES: largest message leadscore produces to its own topics; bigger
    outputs (a lead change rewriting thousands of history rows, a merge's events) are split.
    Keep it below the producer's and the broker's limits (1 MB by default), with headroom."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            mongo_url=_env("MONGO_URL", "mongodb://127.0.0.1:27017"),
            mongo_db=_env("MONGO_DB", "leadscore"),
            partitions=_int("LEADSCORE_PARTITIONS", "8"),
            replication_factor=_int("LEADSCORE_REPLICATION", "1"),
            standby_replicas=_int("LEADSCORE_STANDBY_REPLICAS", "1"),
            web_port=_int("WEB_PORT", "6066"),
            web_host=_env("WEB_HOST", "127.0.0.1"),
            data_dir=Path(_env("LEADSCORE_DATA_DIR", ".local/worker-data")),
            log_level=_env("LOG_LEVEL", "info"),
            admin_token=_env("LEADSCORE_ADMIN_TOKEN", ""),
            topic_prefix=_env("LEADSCORE_TOPIC_PREFIX", "leadscore"),
            app_version=_int("LEADSCORE_APP_VERSION", "1"),
            sweep_interval=_float("LEADSCORE_SWEEP_INTERVAL", "3600"),
            sink_batch_size=_int("LEADSCORE_SINK_BATCH", "1000"),
            sink_batch_seconds=_float("LEADSCORE_SINK_WITHIN", "0.2"),
            session_timeout=_float("LEADSCORE_SESSION_TIMEOUT", "30"),
            fixed_now=_env("LEADSCORE_NOW", ""),
            sink_enabled=_env("LEADSCORE_SINK", "on").lower() not in ("off", "0", "false", "no"),
            role=_role(_env("LEADSCORE_ROLE", "worker")),
            delivery_enabled=_env("LEADSCORE_DELIVERY", "on").lower()
            not in ("off", "0", "false", "no"),
            session_ttl=_float("LEADSCORE_SESSION_TTL", str(12 * 3600)),
            session_cache_seconds=_float("LEADSCORE_SESSION_CACHE", "2"),
            cookie_secure=_env("LEADSCORE_COOKIE_SECURE", "on").lower()
            not in ("off", "0", "false", "no"),
            rate_limit=_rate("LEADSCORE_RATE_LIMIT", _env("LEADSCORE_RATE_LIMIT", "2000/second")),
            rate_limit_publishable=_rate(
                "LEADSCORE_RATE_LIMIT_PUBLISHABLE",
                _env("LEADSCORE_RATE_LIMIT_PUBLISHABLE", "200/second"),
            ),
            login_slow_after=_int("LEADSCORE_LOGIN_SLOW_AFTER", "3"),
            login_lock_after=_int("LEADSCORE_LOGIN_LOCK_AFTER", "10"),
            login_window=_float("LEADSCORE_LOGIN_WINDOW", "900"),
            max_keys_per_project=_int("LEADSCORE_MAX_KEYS", "50"),
            key_usage_flush=_float("LEADSCORE_KEY_USAGE_FLUSH", "10"),
            log_format=_choice(
                "LEADSCORE_LOG_FORMAT", _env("LEADSCORE_LOG_FORMAT", "text"), LOG_FORMATS
            ),
            access_log=_env("LEADSCORE_ACCESS_LOG", "on").lower()
            not in ("off", "0", "false", "no"),
            max_automations_per_project=_int("LEADSCORE_MAX_AUTOMATIONS", "50"),
            automation_max_age=_float("LEADSCORE_AUTOMATION_MAX_AGE", "86400"),
            delivery_attempts=_int("LEADSCORE_DELIVERY_ATTEMPTS", "10"),
            delivery_backoff=_float("LEADSCORE_DELIVERY_BACKOFF", "60"),
            delivery_backoff_max=_float("LEADSCORE_DELIVERY_BACKOFF_MAX", "3600"),
            delivery_timeout=_float("LEADSCORE_DELIVERY_TIMEOUT", "10"),
            delivery_concurrency=_int("LEADSCORE_DELIVERY_CONCURRENCY", "256"),
            delivery_per_destination=_int("LEADSCORE_DELIVERY_PER_DESTINATION", "32"),
            delivery_poll=_float("LEADSCORE_DELIVERY_POLL", "1"),
            breaker_failures=_int("LEADSCORE_BREAKER_FAILURES", "5"),
            breaker_cooldown=_float("LEADSCORE_BREAKER_COOLDOWN", "30"),
            smtp_host=_env("SMTP_HOST", ""),
            smtp_port=_int("SMTP_PORT", "587"),
            smtp_tls=_smtp_tls(_env("SMTP_TLS", "starttls")),
            smtp_user=_env("SMTP_USER", ""),
            smtp_password=_env("SMTP_PASSWORD", ""),
            smtp_from=_env("SMTP_FROM", "leadscore@localhost"),
            max_rules=_int("LEADSCORE_MAX_RULES", "500"),
            produce_timeout=_float("LEADSCORE_PRODUCE_TIMEOUT", "5"),
            admin_concurrency=_int("LEADSCORE_ADMIN_CONCURRENCY", "2"),
            scoring_batch=max(1, _int("LEADSCORE_SCORING_BATCH", "2000")),
            scoring_wait=max(0.001, _float("LEADSCORE_SCORING_WAIT", "0.05")),
            max_message_bytes=max(64 * 1024, _int("LEADSCORE_MAX_MESSAGE_BYTES", "900000")),
            fetch_max_wait_ms=min(1_000, max(10, _int("LEADSCORE_FETCH_MAX_WAIT_MS", "100"))),
        )

    @property
    def kafka_url(self) -> str:
        return ",".join(f"kafka://{s.strip()}" for s in self.kafka_bootstrap_servers.split(","))

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def app_id(self) -> str:
        """The Faust app id of this process, i.e. its consumer group (see `app_id_of`)."""
        return self.app_id_of(self.role)

    def app_id_of(self, role: str) -> str:
        """Workers share one app id; ingest, sink and delivery processes, which must not be
        assigned the workers' partitions, get their own. Faust appends `-v{N}` from app
        version 2 on."""
        return self.topic_prefix if role == "worker" else f"{self.topic_prefix}-{role}"


ROLES = tuple(topology.ROLES)  # worker, ingest, sink, delivery
LOG_FORMATS = ("text", "json")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _role(value: str) -> str:
    if value not in ROLES:
        raise ValueError(f"LEADSCORE_ROLE must be one of {', '.join(ROLES)}, not {value!r}")
    return value


def _smtp_tls(value: str) -> str:
    if value not in ("starttls", "tls", "none"):
        raise ValueError(f"SMTP_TLS must be starttls, tls or none, not {value!r}")
    return value


def _rate(name: str, value: str) -> str:
    """Refuse a malformed limit at start, naming the setting, rather than on the first request."""
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValueError(
            f"{name} must look like 2000/second or 100/minute, not {value!r}"
        ) from None
    return value


settings = Settings.from_env()
