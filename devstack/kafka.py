"""The real Apache Kafka broker (KRaft, broker + controller in one), run from Maven Central jars."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from devstack.errors import DevstackError
from devstack.kafka_probe import fetch_brokers
from devstack.layout import Layout
from devstack.ports import HOST
from devstack.procs import log_tail, spawn
from devstack.state import KafkaNode

__all__ = [
    "KAFKA_VERSION",
    "answers",
    "default_ports",
    "ensure_libs",
    "format_storage",
    "log_file",
    "new_cluster_id",
    "plan_nodes",
    "render_server_properties",
    "start_node",
]

KAFKA_VERSION = "4.1.1"
FIRST_PORT = 9092
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_JVM_OPTS = ("-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true")


def _tool(name: str, env_home: str | None = None) -> str:
    if env_home and (home := os.environ.get(env_home)):
        candidate = Path(home) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DevstackError(f"`{name}` not found on PATH; the local Kafka broker needs it")
    return found


# -- jars ------------------------------------------------------------------------------------


def _maven_args(layout: Layout, output: Path) -> list[str]:
    return [
        "-B",
        "-q",
        "-f",
        str(layout.kafka_pom),
        f"-Dmaven.repo.local={layout.maven_repo}",
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={output}",
    ]


def _libs_fingerprint(layout: Layout) -> str:
    digest = hashlib.sha256(layout.kafka_pom.read_bytes())
    digest.update(_DEPENDENCY_PLUGIN.encode())
    return digest.hexdigest()


def ensure_libs(layout: Layout) -> bool:
    """Resolve the broker's jars into ``.local/kafka/libs``; False if the cache was already good.

    The cache is reused while the stamp (a hash of pom.xml and the plugin) matches; a changed pom
    re-resolves into a fresh folder that replaces the old one only once Maven succeeded.
    """
    libs, stamp = layout.kafka_libs, layout.kafka_libs_stamp
    fingerprint = _libs_fingerprint(layout)
    if (
        stamp.is_file()
        and stamp.read_text().strip() == fingerprint
        and any(libs.glob("kafka_2.13-*.jar"))
    ):
        return False
    fresh = libs.with_name("libs.new")
    shutil.rmtree(fresh, ignore_errors=True)
    log = layout.log("maven")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        done = subprocess.run(
            [_tool("mvn", "MAVEN_HOME"), *_maven_args(layout, fresh)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if done.returncode != 0 or not any(fresh.glob("kafka_2.13-*.jar")):
        raise DevstackError(
            f"Maven could not resolve the Kafka jars (exit {done.returncode}); "
            f"{log}:\n{log_tail(log)}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    fresh.rename(libs)
    stamp.write_text(fingerprint + "\n")
    return True


def _java_classpath(layout: Layout) -> list[str]:
    return [_tool("java", "JAVA_HOME"), *_JVM_OPTS, "-cp", f"{layout.kafka_libs}/*"]


# -- cluster layout --------------------------------------------------------------------------


def default_ports(brokers: int) -> list[int]:
    """(client, controller) port pairs from 9092 up: 9092,9093 / 9094,9095 / 9096,9097 ..."""
    return list(range(FIRST_PORT, FIRST_PORT + 2 * brokers))


def plan_nodes(layout: Layout, brokers: int, ports: Sequence[int]) -> list[KafkaNode]:
    """The nodes of a ``brokers``-node cluster, given 2 ports per node (client, controller)."""
    if brokers < 1 or len(ports) != 2 * brokers:
        raise ValueError(f"need 2 ports per broker, got {len(ports)} for {brokers}")
    cluster = layout.kafka_cluster(brokers)
    return [
        KafkaNode(
            node_id=i + 1,
            port=ports[2 * i],
            controller_port=ports[2 * i + 1],
            config=str(cluster / f"node-{i + 1}" / "server.properties"),
        )
        for i in range(brokers)
    ]


def new_cluster_id() -> str:
    """A cluster id as `StorageTool random-uuid` prints it (Kafka's Uuid: 16 random bytes,
    URL-safe base64 without padding, never starting with '-'), without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _cluster_id(layout: Layout, brokers: int) -> str:
    path = layout.kafka_cluster(brokers) / "cluster.id"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    cluster_id = new_cluster_id()
    path.write_text(cluster_id + "\n")
    return cluster_id


def render_server_properties(node: KafkaNode, nodes: Sequence[KafkaNode], data_dir: Path) -> str:
    """server.properties of one combined broker + controller of a static-quorum cluster."""
    brokers = len(nodes)
    replication = min(3, brokers)
    min_isr = max(1, replication - 1)
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    settings: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": data_dir,
        # Topics are created explicitly (by the app and the tests), never by a typo'd produce.
        "auto.create.topics.enable": "false",
        "num.partitions": 8,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        # A broker killed by a crash test keeps its registration until this session times out,
        # and its restart cannot register before that: 4 s instead of the default 9 s.
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 4000,
        "num.network.threads": 2,
        "num.io.threads": 2,
    }
    lines = [f"# devstack: node {node.node_id} of {brokers}; rewritten at each start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _data_dir(node: KafkaNode) -> Path:
    return Path(node.config).parent / "data"


def _write_config(node: KafkaNode, nodes: Sequence[KafkaNode]) -> None:
    config = Path(node.config)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(render_server_properties(node, nodes, _data_dir(node)))


def format_storage(layout: Layout, nodes: Sequence[KafkaNode]) -> int:
    """Write every node's config, and format the data dirs never formatted (all with one cluster
    id, in parallel); returns how many were formatted."""
    cluster_id = _cluster_id(layout, len(nodes))
    pending = []
    for node in nodes:
        _write_config(node, nodes)
        if not (_data_dir(node) / "meta.properties").is_file():
            pending.append(node)
    log = layout.log("kafka-format")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        runs = [
            (
                node,
                subprocess.Popen(
                    [
                        *_java_classpath(layout),
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        cluster_id,
                        "-c",
                        node.config,
                        "--ignore-formatted",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                ),
            )
            for node in pending
        ]
        failed = [node.node_id for node, proc in runs if proc.wait() != 0]
    if failed:
        raise DevstackError(
            f"formatting Kafka storage failed for node(s) {failed}; {log}:\n{log_tail(log)}"
        )
    return len(pending)


def start_node(layout: Layout, node: KafkaNode, nodes: Sequence[KafkaNode]) -> int:
    """Start one broker process (config rewritten for the current ports); returns its pid."""
    _write_config(node, nodes)
    argv = [
        *_java_classpath(layout),
        f"-Dlog4j2.configurationFile={layout.kafka_log4j}",
        "kafka.Kafka",
        node.config,
    ]
    return spawn(argv, log_file(layout, node), cwd=layout.root)


def log_file(layout: Layout, node: KafkaNode) -> Path:
    return layout.log(f"kafka-{node.node_id}")


def answers(port: int, brokers: int, host: str = HOST) -> bool:
    """True if the broker at ``host:port`` answers a metadata request listing ``brokers`` live
    brokers (so a fresh 3-node cluster is only ready once every node has registered)."""
    try:
        return len(fetch_brokers(host, port, timeout=2.0)) >= brokers
    except (OSError, ValueError):
        return False
