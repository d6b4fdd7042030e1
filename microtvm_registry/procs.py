"""What Linux's /proc says of a process: its command name, state and parent.

One reader for the client (which ends what a stopped server started) and the emulated boards
(which tell a running QEMU from a stale note). Where there is no /proc, nothing is known beyond
whether ``kill(pid, 0)`` succeeds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class ProcStat:
    comm: str  # the command name, at most 15 characters
    state: str  # "R", "S", ... "Z" for a zombie
    ppid: int


def proc_stat(pid: int) -> Optional[ProcStat]:
    """The process's /proc/<pid>/stat, or None (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces or parentheses, so split after the last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 2:
        return None
    comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode("utf-8", "replace")
    return ProcStat(comm, fields[0].decode("ascii", "replace"), int(fields[1]))


def is_running(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (dead, waiting for its parent, or for an init that may
    be slow to reap in a container) has stopped: waiting on it would only spend a grace period."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = proc_stat(pid)
    return stat is None or stat.state not in ("Z", "X")


def descendant_pids(pid: int) -> List[int]:
    """Every process below ``pid``, children first, found by reading /proc (Linux); elsewhere
    none are found."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    parents: Dict[int, int] = {}
    for entry in entries:
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat.ppid
    found: List[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def pids_with_environ(entry: str) -> List[int]:
    """Processes (not this one) whose environment holds ``entry`` (``NAME=VALUE``): a marker
    every process a server starts inherits, so they can be found even once orphaned."""
    needle = entry.encode()
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found
