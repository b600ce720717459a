"""Where the local stack keeps everything: one folder, ``.local/`` at the repository root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCAL_DIR_ENV", "Layout"]

#: Environment variable that moves the whole local folder elsewhere.
LOCAL_DIR_ENV = "LEADSCORE_LOCAL_DIR"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _default_root() -> Path:
    repo = _PACKAGE_DIR.parent
    if (repo / "pyproject.toml").is_file():
        return repo / ".local"
    return Path.cwd() / ".local"  # installed outside a checkout


@dataclass(frozen=True)
class Layout:
    """Every path devstack reads or writes, derived from one root folder."""

    root: Path

    @classmethod
    def from_env(cls) -> Layout:
        override = os.environ.get(LOCAL_DIR_ENV)
        root = Path(override).expanduser() if override else _default_root()
        return cls(root.resolve())

    # -- shared ------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "stack.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # -- Kafka -------------------------------------------------------------------------------
    @property
    def kafka_pom(self) -> Path:
        return _PACKAGE_DIR / "kafka" / "pom.xml"

    @property
    def kafka_log4j(self) -> Path:
        return _PACKAGE_DIR / "kafka" / "log4j2.properties"

    @property
    def kafka_libs(self) -> Path:
        return self.root / "kafka" / "libs"

    @property
    def kafka_libs_stamp(self) -> Path:
        return self.root / "kafka" / "libs.sha256"

    @property
    def maven_repo(self) -> Path:
        return self.root / "kafka" / "m2"

    def kafka_cluster(self, brokers: int) -> Path:
        """One folder per cluster shape: a 1-broker and a 3-broker cluster never share data."""
        return self.root / "kafka" / f"cluster-{brokers}"

    # -- MongoDB-wire server -----------------------------------------------------------------
    @property
    def mongo_data(self) -> Path:
        return self.root / "mongo" / "data"
