"""The state file ``.local/stack.json``: what devstack started (or found external), and where."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.errors import DevstackError

__all__ = ["KafkaNode", "KafkaState", "MongoState", "StackState", "load", "locked", "save"]

_VERSION = 1


@dataclass
class KafkaNode:
    """One combined broker + controller process."""

    node_id: int
    port: int
    controller_port: int
    config: str
    pid: int | None = None

    @property
    def marker(self) -> str:
        """Substring of the process's command line that proves a pid is this node."""
        return self.config

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class KafkaState:
    bootstrap_servers: str
    external: bool = False
    brokers: int = 1
    nodes: list[KafkaNode] = field(default_factory=list)


@dataclass
class MongoState:
    url: str
    external: bool = False
    port: int | None = None
    data_dir: str = ""
    pid: int | None = None

    @property
    def marker(self) -> str:
        return f"--port {self.port} --storage-path {self.data_dir}"


@dataclass
class StackState:
    kafka: KafkaState | None = None
    mongo: MongoState | None = None

    def to_json(self) -> str:
        return json.dumps({"version": _VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("version") != _VERSION:
            raise ValueError(f"unknown state file version {raw.get('version')!r}")
        kafka = raw.get("kafka")
        mongo = raw.get("mongo")
        return cls(
            kafka=None
            if kafka is None
            else KafkaState(
                **{k: v for k, v in kafka.items() if k != "nodes"},
                nodes=[KafkaNode(**n) for n in kafka.get("nodes", [])],
            ),
            mongo=None if mongo is None else MongoState(**mongo),
        )


def load(path: Path) -> StackState:
    """The recorded state; an empty one when there is no (readable) state file."""
    try:
        return StackState.from_json(path.read_text())
    except FileNotFoundError:
        return StackState()
    except (ValueError, TypeError) as exc:
        raise DevstackError(f"{path} is not a devstack state file ({exc}); remove it") from exc


def save(path: Path, state: StackState) -> None:
    """Write atomically; an empty state removes the file."""
    if state.kafka is None and state.mongo is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


_held: set[Path] = set()


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Serialize devstack commands across processes (two `up`s at once would race for ports and
    data dirs). Re-entrant within one process."""
    if lock_file in _held:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held.add(lock_file)
        try:
            yield
        finally:
            _held.discard(lock_file)
            fcntl.flock(handle, fcntl.LOCK_UN)
