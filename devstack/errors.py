"""The one exception devstack raises for problems an operator can act on."""

from __future__ import annotations

__all__ = ["DevstackError"]


class DevstackError(RuntimeError):
    """A service could not be resolved, started, reached or stopped; the message says why."""
