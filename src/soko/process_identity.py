"""Who holds a claim: a token naming this node's boot, the process and its start time, so that a restarted process
can tell a claim of a process that died (kill -9 mid-request) from one still writing, and need not wait for the
claim's heartbeat to go stale. Claims from other nodes cannot be checked this way: they rely on the heartbeat.

Token: ``<node>.<pid>.<start>.<random>`` — node = hash of the kernel boot id, pid namespace and host name (two
containers on one host share the boot id, not the pid namespace); start = the process's start time in clock ticks
since boot (pids are reused, start times are not).
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def node() -> str:
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    seed = "\n".join([_read("/proc/sys/kernel/random/boot_id"), pid_ns, socket.gethostname()])
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def start_time(pid: int) -> str | None:
    """The process's start time in ticks since boot (field 22 of /proc/<pid>/stat); None if there is no such
    process; "" where /proc cannot say."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        return stat.rpartition(")")[2].split()[19]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def new_token() -> str:
    """A fresh claim token of this process (each claim its own; `os.getpid()` each time: workers are forked)."""
    pid = os.getpid()
    return f"{node()}.{pid}.{start_time(pid) or ''}.{uuid.uuid4().hex}"


def holder_is_dead(token: str | None) -> bool:
    """True only when the token names a process of this node that no longer exists (or whose pid was reused)."""
    if not token:
        return False
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != node() or not parts[1].isdigit():
        return False  # another node's (or an older format's): only the heartbeat can tell
    current = start_time(int(parts[1]))
    if current is None:
        return True
    return bool(current and parts[2] and current != parts[2])
