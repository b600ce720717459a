"""devstack's pure parts: port choice, broker config, the metadata probe codec, the state file,
the jar cache stamp, the CLI's export lines and process bookkeeping (with a harmless `sleep`)."""

from __future__ import annotations

import base64
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devstack import kafka
from devstack.cli import export_lines, status_table
from devstack.kafka_probe import (
    BrokerInfo,
    decode_metadata_response,
    encode_metadata_request,
    parse_bootstrap,
)
from devstack.layout import LOCAL_DIR_ENV, Layout
from devstack.ports import choose_ports, port_is_free
from devstack.procs import exit_code, is_running, log_tail, spawn, stop_all
from devstack.stack import ServiceStatus, StackInfo
from devstack.state import KafkaNode, KafkaState, MongoState, StackState, load, save

# -- ports -----------------------------------------------------------------------------------


def test_choose_ports_keeps_every_free_default() -> None:
    assert choose_ports([9092, 9093], is_free=lambda p: True) == [9092, 9093]


def test_choose_ports_replaces_a_taken_default_from_above_the_highest_default() -> None:
    taken = {9092}
    ports = choose_ports([9092, 9093, 9094, 9095], is_free=lambda p: p not in taken)
    assert ports == [9096, 9093, 9094, 9095]


def test_choose_ports_skips_taken_and_already_chosen_replacements() -> None:
    taken = {27017, 27018, 27019}
    assert choose_ports([27017], is_free=lambda p: p not in taken) == [27020]
    taken = {9092, 9093, 9094}
    assert choose_ports([9092, 9093], is_free=lambda p: p not in taken) == [9095, 9096]


def test_choose_ports_rejects_duplicate_preferences() -> None:
    with pytest.raises(ValueError):
        choose_ports([9092, 9092], is_free=lambda p: True)


def test_port_is_free_sees_a_listener_on_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


def test_choose_ports_with_a_real_listener_picks_another_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        [chosen] = choose_ports([port])
    assert chosen != port


# -- Kafka config ----------------------------------------------------------------------------


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def test_default_ports_are_client_controller_pairs_from_9092() -> None:
    assert kafka.default_ports(1) == [9092, 9093]
    assert kafka.default_ports(3) == [9092, 9093, 9094, 9095, 9096, 9097]


def test_single_node_properties_are_a_combined_kraft_node_on_loopback(tmp_path: Path) -> None:
    [node] = kafka.plan_nodes(Layout(tmp_path), 1, [9092, 9093])
    props = _props(kafka.render_server_properties(node, [node], tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "8"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert "log.retention.hours" not in props  # default retention
    assert int(props["broker.session.timeout.ms"]) > 2 * int(props["broker.heartbeat.interval.ms"])


def test_three_nodes_share_one_static_quorum_with_replication_three(tmp_path: Path) -> None:
    nodes = kafka.plan_nodes(Layout(tmp_path), 3, kafka.default_ports(3))
    rendered = [_props(kafka.render_server_properties(n, nodes, tmp_path)) for n in nodes]
    voters = "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert [p["node.id"] for p in rendered] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in rendered} == {voters}
    assert rendered[2]["listeners"] == "PLAINTEXT://127.0.0.1:9096,CONTROLLER://127.0.0.1:9097"
    for props in rendered:
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["share.coordinator.state.topic.replication.factor"] == "3"
        assert props["default.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.min.isr"] == "2"


def test_plan_nodes_keeps_each_cluster_shape_in_its_own_folder(tmp_path: Path) -> None:
    one = kafka.plan_nodes(Layout(tmp_path), 1, [9092, 9093])
    three = kafka.plan_nodes(Layout(tmp_path), 3, kafka.default_ports(3))
    assert Path(one[0].config).parent != Path(three[0].config).parent
    with pytest.raises(ValueError):
        kafka.plan_nodes(Layout(tmp_path), 2, [9092, 9093])


def test_cluster_id_is_a_kafka_uuid_string() -> None:
    for _ in range(200):
        cluster_id = kafka.new_cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_jar_cache_is_reused_while_the_stamp_matches_the_pom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    layout.kafka_libs.mkdir(parents=True)
    (layout.kafka_libs / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    layout.kafka_libs_stamp.write_text(kafka._libs_fingerprint(layout) + "\n")

    def no_maven(*args: object, **kwargs: object) -> None:
        raise AssertionError("mvn must not run when the cache is valid")

    monkeypatch.setattr(kafka.subprocess, "run", no_maven)
    assert kafka.ensure_libs(layout) is False
    layout.kafka_libs_stamp.write_text("stale\n")
    with pytest.raises(AssertionError, match="mvn must not run"):
        kafka.ensure_libs(layout)


# -- the metadata probe ----------------------------------------------------------------------


def test_metadata_request_is_a_size_prefixed_v4_request_for_no_topics() -> None:
    frame = encode_metadata_request(7)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    api_key, version, correlation, client_len = struct.unpack_from(">hhih", frame, 4)
    assert (api_key, version, correlation) == (3, 4, 7)
    assert frame[-5:] == struct.pack(">ib", 0, 0)
    assert client_len == len(frame) - 4 - 10 - 5


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(value)) + value.encode()


def test_metadata_response_yields_the_live_brokers() -> None:
    payload = struct.pack(">ii", 7, 0) + struct.pack(">i", 2)
    payload += struct.pack(">i", 1) + _string("127.0.0.1") + struct.pack(">i", 9092) + _string(None)
    payload += struct.pack(">i", 2) + _string("127.0.0.1") + struct.pack(">i", 9094) + _string("r")
    payload += _string("cluster") + struct.pack(">ii", 1, 0)
    assert decode_metadata_response(payload, 7) == [
        BrokerInfo(1, "127.0.0.1", 9092),
        BrokerInfo(2, "127.0.0.1", 9094),
    ]
    with pytest.raises(ValueError):
        decode_metadata_response(payload, 8)


def test_parse_bootstrap_accepts_lists_and_listener_prefixes() -> None:
    assert parse_bootstrap("127.0.0.1:9092, PLAINTEXT://localhost:9094") == [
        ("127.0.0.1", 9092),
        ("localhost", 9094),
    ]
    with pytest.raises(ValueError):
        parse_bootstrap("localhost")


# -- state, layout, CLI ----------------------------------------------------------------------


def test_state_file_round_trips_and_empty_state_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    state = StackState(
        kafka=KafkaState(
            bootstrap_servers="127.0.0.1:9092",
            nodes=[KafkaNode(1, 9092, 9093, "/x/server.properties", pid=42)],
        ),
        mongo=MongoState(url="mongodb://127.0.0.1:27017/", port=27017, data_dir="/d", pid=43),
    )
    save(path, state)
    assert load(path) == state
    save(path, StackState())
    assert not path.exists()
    assert load(path) == StackState()


def test_mongo_marker_matches_the_server_command_line() -> None:
    mongo = MongoState(url="u", port=27018, data_dir="/data/mongo")
    assert mongo.marker == "--port 27018 --storage-path /data/mongo"


def test_layout_honours_the_local_dir_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "elsewhere"))
    layout = Layout.from_env()
    assert layout.state_file == tmp_path / "elsewhere" / "stack.json"
    assert layout.kafka_libs == tmp_path / "elsewhere" / "kafka" / "libs"
    monkeypatch.delenv(LOCAL_DIR_ENV)
    assert Layout.from_env().root.name == ".local"


def test_export_lines_are_shell_evaluable() -> None:
    info = StackInfo("127.0.0.1:9092,127.0.0.1:9094", "mongodb://127.0.0.1:27018/?a=1&b=2", True)
    script = (
        "\n".join(export_lines(info)) + '\nprintf "%s|%s" "$KAFKA_BOOTSTRAP_SERVERS" "$MONGO_URL"'
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == f"{info.bootstrap_servers}|{info.mongo_url}"
    assert all(line.startswith("export ") for line in export_lines(info))


def test_status_table_marks_external_services() -> None:
    rows = [
        ServiceStatus("kafka-1", 10, "127.0.0.1:9092", False, True, True),
        ServiceStatus("mongo", None, "mongodb://db:27017/", True, False, True),
    ]
    header, kafka_row, mongo_row = status_table(rows)
    assert header.split() == ["SERVICE", "PID", "ADDRESS", "ALIVE", "ANSWERING"]
    assert kafka_row.split() == ["kafka-1", "10", "127.0.0.1:9092", "yes", "yes"]
    assert mongo_row.split() == ["mongo", "-", "mongodb://db:27017/", "external", "yes"]


# -- processes -------------------------------------------------------------------------------


def test_spawned_process_is_recognised_by_marker_and_stopped_with_its_group(tmp_path: Path) -> None:
    marker = f"devstack-unit-{os.getpid()}"
    log = tmp_path / "logs" / "sleeper.log"
    code = f"import time; time.sleep(60)  # {marker}"
    pid = spawn([sys.executable, "-c", code], log, cwd=tmp_path)
    assert is_running(pid, marker)
    assert os.getpgid(pid) == pid  # its own session and process group
    assert stop_all([(pid, marker)], grace=10) == []
    assert not is_running(pid, marker)


def test_a_recorded_pid_reused_by_another_program_is_not_ours() -> None:
    own_argv0 = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert is_running(os.getpid(), own_argv0)
    assert not is_running(os.getpid(), "--storage-path /nowhere")
    assert not is_running(None, own_argv0)


def test_log_tail_shows_only_the_latest_run(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    for word in ("first", "second"):
        pid = spawn([sys.executable, "-c", f"print('{word} run')"], log, cwd=tmp_path)
        deadline = time.monotonic() + 10
        while exit_code(pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert log_tail(log) == "second run"
    assert log_tail(tmp_path / "missing.log").startswith("(no log")
