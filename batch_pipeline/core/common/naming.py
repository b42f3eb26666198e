"""Names that become paths: a batch id is one safe path segment, a file-set member stays inside
its folder.

A batch writes everything under ``{output}/{batch_id}/``; an id such as ``..`` or ``a/b`` would
write outside it, ``.`` into the output root. Every entry point (the CLI, a launchpad run,
the sensor, the schedule, a redrive) goes through ``prepare_batch`` or ``prepare_redrive``,
which check the id with ``check_batch_id``; the CLI checks it again before touching anything.

The output and the source are checked there too, with ``check_location``: an empty one would
be the current folder, and an ``s3://`` URI without a bucket, or with an empty, ``.`` or ``..``
key segment, names another place than it seems to (``s3://b/a/../../c`` is read and written as
bucket ``c``).
"""

from __future__ import annotations

import re

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.text import shown

BATCH_ID_RULE = (
    "1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit (no '/', '\\', "
    "spaces or control characters)"
)
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A bucket name as S3 (and the older, looser us-east-1 rules) allow it: no '/', '.' or '..'.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LOCATION_RULE = (
    "give a local folder or file, or s3://BUCKET/KEY with no empty, '.' or '..' segment in the key"
)


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


def check_location(value: str, what: str = "output") -> str:
    """``value``, an output or a source, when it names one place: not empty (the current
    folder), and, for ``s3://``, with a bucket and no empty, ``.`` or ``..`` segment in its key
    (a trailing ``/``, a prefix's, is fine). Returns local paths made absolute
    (``normalize_uri``; their ``..`` resolve here, where the user sees the result) and S3 URIs
    as given. Else ConfigError naming ``what`` and the value."""

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{what} {shown(repr(value))} {why}: {LOCATION_RULE}")

    if not isinstance(value, str) or not value.strip():
        raise refuse("is empty (it would be the current folder)")
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise refuse("names no bucket" if not bucket else "has an invalid bucket name")
        segments = key.removesuffix("/").split("/") if key else []
        if any(s in ("", ".", "..") for s in segments):
            raise refuse(
                "has an empty, '.' or '..' segment in its key (S3 would resolve it to another "
                "key, or another bucket)"
            )
        return value
    if value.startswith("file://") and not value[len("file://") :].strip():
        raise refuse("is empty (it would be the current folder)")
    from batch_pipeline.core.stores.storage import (
        normalize_uri,  # pyarrow: not for every CLI command
    )

    return normalize_uri(value)
