"""Bringing the whole local stack up and down: Kafka broker(s) plus the MongoDB-wire server.

Every public function takes the state file's lock, so CLI invocations and test fixtures in
different processes never race; each records what it changed in ``.local/stack.json``.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from devstack import kafka, mongo
from devstack.errors import DevstackError
from devstack.kafka_probe import fetch_brokers, parse_bootstrap
from devstack.layout import Layout
from devstack.ports import choose_ports, port_is_free
from devstack.procs import exit_code, is_running, log_tail, stop_all
from devstack.state import KafkaNode, KafkaState, MongoState, StackState, load, locked, save

__all__ = [
    "KAFKA_ENV",
    "MONGO_ENV",
    "ServiceStatus",
    "StackInfo",
    "ensure_up",
    "kill_broker",
    "restart_broker",
    "shutdown",
    "start_mongo",
    "status",
    "stop_mongo",
]

log = logging.getLogger("devstack")

KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
MONGO_ENV = "MONGO_URL"
#: Seconds a SIGTERM'd service gets before SIGKILL (a broker's controlled shutdown takes a few).
STOP_GRACE = 30.0
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class StackInfo:
    """Where the services are, and whether this call had to start anything."""

    bootstrap_servers: str
    mongo_url: str
    started: bool


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    external: bool
    alive: bool
    answering: bool

    @property
    def up(self) -> bool:
        return self.answering and (self.external or self.alive)


@dataclass
class _Startup:
    """A service process awaited until ``ready()``; ``spawned`` if this call started it."""

    name: str
    pid: int
    marker: str
    log: Path
    ready: Callable[[], bool]
    spawned: bool = True


#: Machine-wide: stacks under different LEADSCORE_LOCAL_DIRs (parallel sessions, CI jobs) must not
#: both pick the same free port before either has bound it, so `up`s take turns choosing.
_MACHINE_LOCK = Path(tempfile.gettempdir()) / "leadscore-devstack-up.lock"


@contextmanager
def _session(machine_wide: bool = False) -> Iterator[tuple[Layout, StackState]]:
    layout = Layout.from_env()
    with (
        locked(_MACHINE_LOCK) if machine_wide else nullcontext(),
        locked(layout.lock_file),
    ):
        yield layout, load(layout.state_file)


def _wait(startups: list[_Startup], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(startups)
    while pending:
        for item in list(pending):
            if item.ready():
                pending.remove(item)
            elif not is_running(item.pid, item.marker):
                code = exit_code(item.pid)
                raise DevstackError(
                    f"{item.name} (pid {item.pid}) exited during start-up"
                    f"{'' if code is None else f' with code {code}'}; "
                    f"last lines of {item.log}:\n{log_tail(item.log)}"
                )
        if not pending:
            return
        if time.monotonic() > deadline:
            item = pending[0]
            raise DevstackError(
                f"{item.name} (pid {item.pid}) did not answer within {timeout:.0f} s; "
                f"last lines of {item.log}:\n{log_tail(item.log)}"
            )
        time.sleep(0.25)


# -- MongoDB-wire server ---------------------------------------------------------------------


def _mongo_up(layout: Layout, recorded: MongoState | None) -> tuple[MongoState, _Startup | None]:
    ours = recorded if recorded is not None and not recorded.external else None
    env = os.environ.get(MONGO_ENV)
    if env and not (ours is not None and ours.url == env):
        if ours is not None and is_running(ours.pid, ours.marker):
            raise DevstackError(
                f"{MONGO_ENV}={env} is set, but devstack runs its own server at {ours.url}; "
                "run `python -m devstack down` first, or unset the variable"
            )
        if not mongo.answers(env, timeout=5.0):
            raise DevstackError(
                f"{MONGO_ENV}={env} is set but nothing answers there; "
                "unset it to let devstack start a local server"
            )
        log.info("mongo: external server at %s answers; starting nothing", env)
        return MongoState(url=env, external=True), None
    if ours is not None and is_running(ours.pid, ours.marker):
        if mongo.answers(ours.url):
            log.info("mongo: already up, pid %s at %s", ours.pid, ours.url)
            return ours, None
        log.warning("mongo: pid %s is running but not answering; restarting it", ours.pid)
        stop_all([(ours.pid or 0, ours.marker)], grace=STOP_GRACE)
    preferred = ours.port if ours is not None and ours.port else mongo.DEFAULT_PORT
    [port] = choose_ports([preferred])
    if port != preferred:
        log.warning("mongo: port %d is taken by another process; using %d", preferred, port)
    return _spawn_mongo(layout, port)


def _spawn_mongo(layout: Layout, port: int) -> tuple[MongoState, _Startup]:
    pid = mongo.start_server(layout, port)
    state = MongoState(
        url=mongo.mongo_url(port), port=port, data_dir=str(layout.mongo_data), pid=pid
    )
    log.info("mongo: started pid %d at %s", pid, state.url)
    return state, _Startup(
        "mongo", pid, state.marker, mongo.log_file(layout), lambda: mongo.answers(state.url)
    )


# -- Kafka -----------------------------------------------------------------------------------


def _kafka_external(env: str) -> KafkaState:
    for host, port in parse_bootstrap(env):
        try:
            brokers = fetch_brokers(host, port, timeout=5.0)
        except (OSError, ValueError):
            continue
        log.info(
            "kafka: external cluster at %s answers (%d broker(s)); starting nothing",
            env,
            len(brokers),
        )
        return KafkaState(bootstrap_servers=env, external=True, brokers=len(brokers))
    raise DevstackError(
        f"{KAFKA_ENV}={env} is set but no broker answers there; "
        "unset it to let devstack start a local broker"
    )


def _node_awaited(layout: Layout, node: KafkaNode, brokers: int, spawned: bool) -> _Startup:
    return _Startup(
        f"kafka node {node.node_id}",
        node.pid or 0,
        node.marker,
        kafka.log_file(layout, node),
        lambda: kafka.answers(node.port, brokers),
        spawned,
    )


def _node_startup(layout: Layout, node: KafkaNode, nodes: list[KafkaNode]) -> _Startup:
    node.pid = kafka.start_node(layout, node, nodes)
    log.info(
        "kafka: started node %d pid %d at %s (controller port %d)",
        node.node_id,
        node.pid,
        node.address,
        node.controller_port,
    )
    return _node_awaited(layout, node, len(nodes), spawned=True)


def _bootstrap(nodes: list[KafkaNode]) -> str:
    return ",".join(node.address for node in nodes)


def _kafka_up(
    layout: Layout, recorded: KafkaState | None, brokers: int
) -> tuple[KafkaState, list[_Startup]]:
    ours = recorded if recorded is not None and not recorded.external else None
    live = [n for n in ours.nodes if is_running(n.pid, n.marker)] if ours else []
    env = os.environ.get(KAFKA_ENV)
    if env and not (ours is not None and ours.bootstrap_servers == env):
        if live:
            raise DevstackError(
                f"{KAFKA_ENV}={env} is set, but devstack runs its own Kafka at "
                f"{ours.bootstrap_servers if ours else '?'}; run `python -m devstack down` "
                "first, or unset the variable"
            )
        return _kafka_external(env), []
    if ours is not None and live and ours.brokers != brokers:
        raise DevstackError(
            f"a {ours.brokers}-broker Kafka is running (pids "
            f"{', '.join(str(n.pid) for n in live)}); run `python -m devstack down` first "
            f"to switch to {brokers}"
        )
    if ours is not None and live:
        dead = [n for n in ours.nodes if n not in live]
        if not dead and all(kafka.answers(n.port, brokers) for n in ours.nodes):
            log.info("kafka: already up, %d broker(s) at %s", brokers, ours.bootstrap_servers)
            return ours, []
        # Restart only the dead nodes, on their recorded ports: the live ones know the quorum by
        # those addresses.
        for node in dead:
            taken = [p for p in (node.port, node.controller_port) if not port_is_free(p)]
            if taken:
                raise DevstackError(
                    f"kafka node {node.node_id} is down and its port(s) {taken} are taken; "
                    "run `python -m devstack down` and `up` again"
                )
        kafka.ensure_libs(layout)
        startups = [_node_startup(layout, node, ours.nodes) for node in dead]
        startups += [_node_awaited(layout, n, brokers, spawned=False) for n in live]
        return ours, startups
    defaults = kafka.default_ports(brokers)
    preferred = (
        [p for n in ours.nodes for p in (n.port, n.controller_port)]
        if ours is not None and ours.brokers == brokers
        else defaults
    )
    ports = choose_ports(preferred)
    for wanted, got in zip(preferred, ports, strict=True):
        if wanted != got:
            log.warning("kafka: port %d is taken by another process; using %d", wanted, got)
    if kafka.ensure_libs(layout):
        log.info("kafka: resolved Kafka %s jars into %s", kafka.KAFKA_VERSION, layout.kafka_libs)
    nodes = kafka.plan_nodes(layout, brokers, ports)
    formatted = kafka.format_storage(layout, nodes)
    if formatted:
        log.info("kafka: formatted %d data dir(s)", formatted)
    startups = [_node_startup(layout, node, nodes) for node in nodes]
    state = KafkaState(bootstrap_servers=_bootstrap(nodes), brokers=brokers, nodes=nodes)
    return state, startups


# -- public API ------------------------------------------------------------------------------


def ensure_up(brokers: int = 1, timeout: float = DEFAULT_TIMEOUT) -> StackInfo:
    """Make sure Kafka (``brokers`` nodes) and the MongoDB-wire server answer; start what is not
    running. Services named by ``KAFKA_BOOTSTRAP_SERVERS`` / ``MONGO_URL`` are only checked."""
    if brokers < 1:
        raise ValueError(f"brokers must be >= 1, got {brokers}")
    began = time.monotonic()
    with _session(machine_wide=True) as (layout, recorded):
        startups: list[_Startup] = []
        spawned: list[tuple[int, str]] = []
        try:
            # Mongo first: it comes up in a second, while Kafka still resolves, formats, starts.
            mongo_state, mongo_startup = _mongo_up(layout, recorded.mongo)
            if mongo_startup is not None:
                startups.append(mongo_startup)
                spawned.append((mongo_startup.pid, mongo_startup.marker))
            kafka_state, kafka_startups = _kafka_up(layout, recorded.kafka, brokers)
            startups += kafka_startups
            spawned += [(s.pid, s.marker) for s in kafka_startups if s.spawned]
            if spawned:
                # Recorded before waiting, so `down` finds them even if this process dies now.
                save(layout.state_file, StackState(kafka=kafka_state, mongo=mongo_state))
            _wait(startups, timeout)
        except BaseException:
            if spawned:
                log.error(
                    "stopping what this attempt started: pids %s",
                    ", ".join(str(pid) for pid, _ in spawned),
                )
                stop_all(spawned, grace=STOP_GRACE)
                save(layout.state_file, recorded)
            raise
        save(layout.state_file, StackState(kafka=kafka_state, mongo=mongo_state))
    if spawned:
        log.info("up in %.1f s", time.monotonic() - began)
    return StackInfo(kafka_state.bootstrap_servers, mongo_state.url, started=bool(spawned))


def _our_processes(state: StackState) -> list[tuple[int, str]]:
    procs: list[tuple[int, str]] = []
    if state.kafka is not None and not state.kafka.external:
        procs += [(n.pid, n.marker) for n in state.kafka.nodes if n.pid]
    if state.mongo is not None and not state.mongo.external and state.mongo.pid:
        procs.append((state.mongo.pid, state.mongo.marker))
    return procs


def shutdown(grace: float = STOP_GRACE) -> list[int]:
    """Stop every process the state file says devstack started (never external services) and
    remove the state file; returns the pids that were still running."""
    with _session() as (layout, state):
        running = [(pid, m) for pid, m in _our_processes(state) if is_running(pid, m)]
        killed = stop_all(running, grace=grace)
        for pid in killed:
            log.warning("pid %d ignored SIGTERM for %.0f s; killed", pid, grace)
        layout.state_file.unlink(missing_ok=True)
    for pid, _ in running:
        log.info("stopped pid %d", pid)
    return [pid for pid, _ in running]


def status() -> list[ServiceStatus]:
    """Each recorded service: pid, address, whether its process lives and whether it answers."""
    with _session() as (_, state):
        rows: list[ServiceStatus] = []
        k = state.kafka
        if k is not None and k.external:
            answering = any(
                kafka.answers(port, 1, host) for host, port in parse_bootstrap(k.bootstrap_servers)
            )
            rows.append(ServiceStatus("kafka", None, k.bootstrap_servers, True, False, answering))
        elif k is not None:
            for n in k.nodes:
                alive = is_running(n.pid, n.marker)
                rows.append(
                    ServiceStatus(
                        f"kafka-{n.node_id}",
                        n.pid,
                        n.address,
                        False,
                        alive,
                        alive and kafka.answers(n.port, 1),
                    )
                )
        m = state.mongo
        if m is not None:
            alive = not m.external and is_running(m.pid, m.marker)
            rows.append(
                ServiceStatus(
                    "mongo",
                    m.pid,
                    m.url,
                    m.external,
                    alive,
                    (m.external or alive) and mongo.answers(m.url),
                )
            )
        return rows


# -- outage helpers for integration tests ----------------------------------------------------


def _our_mongo(state: StackState) -> MongoState:
    m = state.mongo
    if m is None or m.port is None:
        raise DevstackError("no local MongoDB-wire server recorded; run `devstack up` first")
    if m.external:
        raise DevstackError(f"the MongoDB server at {m.url} is external; devstack won't touch it")
    return m


def stop_mongo(graceful: bool = True) -> None:
    """Stop the local MongoDB-wire server (SIGTERM, or SIGKILL as a crash), keeping its port and
    data dir recorded for `start_mongo()`."""
    with _session() as (layout, state):
        m = _our_mongo(state)
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        stop_all([(m.pid or 0, m.marker)], grace=STOP_GRACE if graceful else 0.0, sig=sig)
        m.pid = None
        save(layout.state_file, state)
        log.info("mongo: stopped (%s)", "SIGTERM" if graceful else "SIGKILL")


def start_mongo(timeout: float = DEFAULT_TIMEOUT) -> str:
    """Start the local MongoDB-wire server again on its recorded port and data dir; its URL."""
    with _session() as (layout, state):
        m = _our_mongo(state)
        if is_running(m.pid, m.marker):
            return m.url
        if not port_is_free(m.port or 0):
            raise DevstackError(f"mongo port {m.port} has been taken meanwhile")
        fresh, startup = _spawn_mongo(layout, m.port or 0)
        state.mongo = fresh
        save(layout.state_file, state)
        _wait([startup], timeout)
        return fresh.url


def _our_node(state: StackState, node_id: int) -> tuple[KafkaState, KafkaNode]:
    k = state.kafka
    if k is None or k.external:
        raise DevstackError("no local Kafka recorded; run `devstack up` first")
    for node in k.nodes:
        if node.node_id == node_id:
            return k, node
    raise DevstackError(f"no Kafka node {node_id}; nodes are {[n.node_id for n in k.nodes]}")


def kill_broker(node_id: int, graceful: bool = False) -> None:
    """Stop one broker: SIGKILL (a crash) by default, or SIGTERM (controlled shutdown)."""
    with _session() as (layout, state):
        _, node = _our_node(state, node_id)
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        stop_all([(node.pid or 0, node.marker)], grace=STOP_GRACE if graceful else 0.0, sig=sig)
        node.pid = None
        save(layout.state_file, state)
        log.info("kafka: node %d stopped (%s)", node_id, sig.name)


def restart_broker(node_id: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Start a stopped broker again with its recorded ports and data; returns once it answers
    and sees the whole cluster."""
    with _session() as (layout, state):
        k, node = _our_node(state, node_id)
        if is_running(node.pid, node.marker):
            return
        taken = [p for p in (node.port, node.controller_port) if not port_is_free(p)]
        if taken:
            raise DevstackError(f"kafka node {node_id}'s port(s) {taken} have been taken")
        startup = _node_startup(layout, node, k.nodes)
        save(layout.state_file, state)
        _wait([startup], timeout)
