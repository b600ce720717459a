"""The MongoDB-wire server of the local stack: SecantusDB's Python server (`secantusd-py`).

A development and test tool run as a separate process (GPL-2.0), never imported by the product;
the product only ever sees ``MONGO_URL``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from devstack.errors import DevstackError
from devstack.layout import Layout
from devstack.ports import HOST
from devstack.procs import spawn

__all__ = ["DEFAULT_PORT", "answers", "log_file", "mongo_url", "start_server"]

DEFAULT_PORT = 27017
_SERVER = "secantusd-py"
# An explicit (empty) config file turns off the server's auto-discovery of ./secantusd.toml and
# ~/.secantus/secantusd.toml, so a developer's personal config cannot change the test server.
_CONFIG_TEXT = "# Written by devstack: empty on purpose, every setting is a command-line flag.\n"


def _server_binary() -> str:
    beside = Path(sys.executable).parent / _SERVER
    if beside.is_file():
        return str(beside)
    found = shutil.which(_SERVER)
    if found is None:
        raise DevstackError(
            f"`{_SERVER}` not found next to {sys.executable} or on PATH; "
            "install it with `pip install SecantusDB` (the Makefile's install does)"
        )
    return found


def mongo_url(port: int) -> str:
    return f"mongodb://{HOST}:{port}/"


def log_file(layout: Layout) -> Path:
    return layout.log("mongo")


def start_server(layout: Layout, port: int) -> int:
    """Start the server on ``port`` with the persistent data dir; returns its pid."""
    data = layout.mongo_data
    data.mkdir(parents=True, exist_ok=True)
    config = data.parent / "secantusd.toml"
    config.write_text(_CONFIG_TEXT)
    argv = [
        _server_binary(),
        "--config",
        str(config),
        # --port then --storage-path, adjacent: MongoState.marker matches this exact sequence.
        "--host",
        HOST,
        "--port",
        str(port),
        "--storage-path",
        str(data),
        "--log-level",
        "WARNING",
    ]
    return spawn(argv, log_file(layout), cwd=layout.root)


def answers(url: str, timeout: float = 2.0) -> bool:
    """True if a MongoDB-wire server at ``url`` answers ``ping``."""
    from pymongo import MongoClient  # imported lazily: ~0.2 s, and only `up`/`status` need it
    from pymongo.errors import PyMongoError

    ms = int(timeout * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        client.close()
    return True
