"""Names that become paths: a batch id is one safe path segment, a file-set member stays inside
its folder.

A batch writes everything under ``{output}/{batch_id}/``; an id such as ``..`` or ``a/b`` would
write outside it, ``.`` into the output root. Every entry point (the CLI, a launchpad run,
the sensor, the schedule, a redrive) goes through ``prepare_batch`` or ``prepare_redrive``,
which check the id with ``check_batch_id``; the CLI checks it again before touching anything.
"""

from __future__ import annotations

import re

from batch_pipeline.core.errors import ConfigError
from batch_pipeline.core.text import shown

BATCH_ID_RULE = (
    "1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit (no '/', '\\', "
    "spaces or control characters)"
)
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_batch_id(value: str, what: str = "batch_id") -> str:
    """``value`` when it is a safe batch id (see ``BATCH_ID_RULE``); else ConfigError saying
    what is allowed."""
    if not isinstance(value, str) or not _BATCH_ID.fullmatch(value):
        raise ConfigError(f"{what} {shown(repr(value))} is not allowed: use {BATCH_ID_RULE}")
    return value


def check_member(member: str) -> str:
    """``member`` when it names a file inside its set's folder: a relative key without empty,
    ``.`` or ``..`` segments, backslashes or control characters; else ConfigError."""
    segments = member.split("/")
    if (
        not member
        or member.startswith("/")
        or "\\" in member
        or any(s in ("", ".", "..") for s in segments)
        or shown(member) != member
    ):
        raise ConfigError(
            f"member {shown(repr(member))} must be a key relative to the set's folder, without "
            "'.', '..' or empty segments, a leading '/', '\\' or control characters"
        )
    return member
