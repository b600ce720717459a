"""Choosing the TCP ports the local services listen on (127.0.0.1 only)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

__all__ = ["HOST", "choose_ports", "port_is_free"]

HOST = "127.0.0.1"

#: How far above the highest preferred port a replacement is looked for before asking the OS.
_SCAN_SPAN = 200


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could listen on ``host:port`` right now.

    SO_REUSEADDR mirrors what the JVM and asyncio servers set, so a port that only has TIME_WAIT
    connections left from a previous run counts as free, while any listener (on 127.0.0.1 or on a
    wildcard address) makes it taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _os_free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def choose_ports(
    preferred: Sequence[int], is_free: Callable[[int], bool] = port_is_free
) -> list[int]:
    """One port per preferred port: the preferred one when free, otherwise a replacement.

    Replacements are searched upwards from just above the highest preferred port (so they never
    steal another service's default), skipping ports already chosen; only if that whole span is
    taken does the OS pick one. The result has the same length and order as ``preferred``.
    """
    if len(set(preferred)) != len(preferred):
        raise ValueError(f"duplicate preferred ports: {list(preferred)}")
    chosen: list[int | None] = [p if is_free(p) else None for p in preferred]
    used = {p for p in chosen if p is not None}
    candidate = max(preferred, default=1024) + 1
    limit = candidate + _SCAN_SPAN
    for i, port in enumerate(chosen):
        if port is not None:
            continue
        while candidate < limit and (candidate in used or not is_free(candidate)):
            candidate += 1
        if candidate < limit:
            replacement = candidate
        else:
            replacement = _os_free_port()
            while replacement in used:
                replacement = _os_free_port()
        chosen[i] = replacement
        used.add(replacement)
    return [p for p in chosen if p is not None]
