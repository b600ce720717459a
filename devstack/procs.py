"""Starting detached service processes and stopping exactly those again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["exit_code", "is_running", "log_tail", "spawn", "stop_all"]

# Popen objects of the children this Python process started, kept so that a service a test kills
# is reaped (not left a zombie that still looks alive) and its exit code can be reported.
_children: dict[int, subprocess.Popen[bytes]] = {}
# Each start appends this header line to the service's log, so a log tail can show just that run.
_RUN_HEADER = "==== devstack start "


def spawn(argv: Sequence[str], log: Path, cwd: Path) -> int:
    """Start ``argv`` in its own session (it outlives this Python process), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"\n{_RUN_HEADER}{stamp} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def exit_code(pid: int) -> int | None:
    """Exit code of a child this process started and that has ended (else None); reaps it."""
    proc = _children.get(pid)
    return proc.poll() if proc is not None else None


def is_running(pid: int | None, marker: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process whose command line contains ``marker``.

    The marker (a config path, a storage path) guards against pid reuse: a recorded pid that now
    belongs to some unrelated process is never reported as ours, and so never signalled.
    """
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        # Our own child cannot have been reused before we reap it, and its /proc cmdline reads
        # empty for a moment after Popen returns (the kernel sets it late in exec).
        return child.poll() is None
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:  # no /proc (not Linux): fall back to a signal probe
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state not in ("Z", "X") and marker in cmdline


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Our services lead their own session, so the process group id is the pid; signalling the group
    # also reaches anything the service forked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_all(
    procs: Sequence[tuple[int, str]], grace: float, sig: signal.Signals = signal.SIGTERM
) -> list[int]:
    """Stop every ``(pid, marker)`` that is still ours: ``sig`` to its group, then SIGKILL.

    All processes get the first signal at once and share one grace period. Returns the pids that
    had to be killed with SIGKILL.
    """
    ours = [(pid, marker) for pid, marker in procs if is_running(pid, marker)]
    for pid, _ in ours:
        _signal_group(pid, sig)
    deadline = time.monotonic() + grace
    pending = list(ours)
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [(pid, marker) for pid, marker in pending if is_running(pid, marker)]
    for pid, _ in pending:
        _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(is_running(p, m) for p, m in pending):
        time.sleep(0.05)
    return [pid for pid, _ in pending]


def log_tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` lines the latest run wrote to ``log`` (for error messages)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log})"
    _, header, run = text.rpartition(_RUN_HEADER)
    if header:
        run = run.partition("\n")[2]  # drop the header line itself (the command)
    return "\n".join(run.splitlines()[-lines:]) or "(nothing logged)"
