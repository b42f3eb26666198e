"""Process-group housekeeping shared by the benchmark drivers: each measurement runs in a worker
process of its own session, and whatever the worker left behind is ended by its group."""

from __future__ import annotations

import os
import signal
import time


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def end_group(pgid: int, grace: float = 5.0) -> int:
    """Wait up to ``grace`` s for the group we started to be gone; then end it. Returns how many
    processes were still there."""
    deadline = time.monotonic() + grace
    members = group_members(pgid)
    while members and time.monotonic() < deadline:
        time.sleep(0.2)
        members = group_members(pgid)
    if members:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(1.0)
    return len(members)
