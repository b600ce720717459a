"""A dependency-free Kafka liveness probe: one Metadata request over a plain socket.

Synchronous on purpose, so `ensure_up()` also works when called from inside a running event loop
(an async pytest fixture), where aiokafka's asyncio client could not be driven.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = [
    "BrokerInfo",
    "decode_metadata_response",
    "encode_metadata_request",
    "fetch_brokers",
    "parse_bootstrap",
]

_METADATA_API_KEY = 3
# Metadata v4 is the oldest version Kafka 4.x still serves (KIP-896) and the newest one without
# the "flexible" (tagged-field) encoding, which keeps this codec tiny.
_METADATA_VERSION = 4
_CLIENT_ID = b"devstack"


@dataclass(frozen=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int


def encode_metadata_request(correlation_id: int) -> bytes:
    """A size-prefixed Metadata v4 request for no topics (the broker list only)."""
    header = struct.pack(
        ">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(_CLIENT_ID)
    )
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    payload = header + _CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take(">h")
        if size < 0:
            return None
        value = self.data[self.pos : self.pos + size].decode()
        self.pos += size
        return value


def decode_metadata_response(payload: bytes, correlation_id: int) -> list[BrokerInfo]:
    """The broker list of a Metadata v4 response (``payload`` without its size prefix)."""
    reader = _Reader(payload)
    got = reader.take(">i")
    if got != correlation_id:
        raise ValueError(f"correlation id {got} != {correlation_id}")
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        host = reader.string() or ""
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append(BrokerInfo(node_id, host, port))
    return brokers


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def fetch_brokers(host: str, port: int, timeout: float = 2.0) -> list[BrokerInfo]:
    """Ask the broker at ``host:port`` for the live brokers of its cluster; raises OSError or
    ValueError if it does not answer like a Kafka broker."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(encode_metadata_request(1))
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if not 0 < size < 16 * 1024 * 1024:
            raise ValueError(f"implausible response size {size}: not a Kafka broker?")
        return decode_metadata_response(_recv_exactly(sock, size), 1)


def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` (optionally ``PLAINTEXT://h1:9092``) as (host, port) pairs."""
    pairs = []
    for item in servers.split(","):
        item = item.strip()
        if not item:
            continue
        item = item.split("://", 1)[-1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad bootstrap server {item!r} (expected host:port)")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise ValueError("empty bootstrap servers")
    return pairs
