"""Find the objects to process under a watched folder or S3 prefix, without Dagster.

The upload sensor and the nightly schedule both start here: ``list_local`` (a folder, walked
recursively) and ``objects_from_s3_listing`` (what ``ListObjectsV2`` returned) give
``SourceObject``s, and ``select_new`` decides which of them a sensor tick requests.

How ``select_new`` never misses an object nor requests one twice:

- The cursor keeps a *watermark*, the newest LastModified among the objects requested so far,
  and the identity (URI and fingerprint: ETag, else size and mtime) of every object requested
  whose LastModified is within ``lookback_seconds`` of the watermark.
- An object is new when its LastModified is at or after ``watermark - lookback_seconds`` and its
  identity is not in the cursor. Several objects sharing one LastModified second are therefore
  all taken, over as many ticks as the cap needs; a changed object (new ETag, new LastModified)
  is taken again; an upload whose LastModified lags behind others' (S3 stamps the *start* of a
  multipart upload) is still taken within the look-back.
- New objects are taken oldest first, at most ``max_requests`` per tick; the rest stay new for
  the next tick, since the watermark only moves to the newest object actually taken.
- Local files modified less than ``settle_seconds`` ago may still be being written: they wait.

The cursor is versioned JSON with 16 hex characters and a timestamp per object requested within
the look-back window (about 38 bytes each: 450 kB after a burst of 12,000). Local files are
placed in time by the later of mtime and ctime (``SourceObject.seen_at``), so a file moved or
copied in with an old mtime is still new. Objects that appear later than the look-back behind
the newest one taken (an S3 multipart upload that took longer than that) are left to the
nightly schedule, which compares every object with the ledger instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ObjectInfo
from batch_pipeline.core.inputs.sources import COMPRESSIONS, EXTENSIONS, derive_batch_id
from batch_pipeline.core.stores.storage import is_s3, normalize_uri, split_s3

DEFAULT_SUFFIXES: tuple[str, ...] = tuple(
    sorted(
        set(EXTENSIONS)
        | {
            ext + comp
            for ext, fmt in EXTENSIONS.items()
            if fmt in ("csv", "jsonl", "json")
            for comp in COMPRESSIONS
        }
    )
)
CURSOR_VERSION = 1
# Names that are never records: hidden files, editors' lock files, uploads in progress.
_IGNORED_PREFIXES = (".", "~$", "_")
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".filepart")


@dataclass(frozen=True)
class SourceObject:
    """One object under the watched location: enough to decide on it and to name its run."""

    uri: str
    key: str
    size: int
    last_modified: float
    etag: str | None = None
    arrived: float | None = None

    @property
    def seen_at(self) -> float:
        """When the object appeared here, as far as storage tells: LastModified on S3; for a
        local file the later of its mtime and ctime (``arrived``), since ``mv``, ``cp -p``,
        ``rsync -a`` or ``unzip`` keep an old mtime, but renaming or re-stamping a file sets
        its ctime."""
        return max(self.last_modified, self.arrived or self.last_modified)

    @property
    def info(self) -> ObjectInfo:
        return ObjectInfo(self.uri, self.size, mtime=self.last_modified, etag=self.etag)

    @property
    def fingerprint(self) -> str:
        """As ``ObjectInfo.fingerprint``: the ETag, else size and mtime."""
        return self.info.fingerprint

    @property
    def batch_id(self) -> str:
        """The batch id ``initialize`` derives for this object as it is now."""
        return derive_batch_id(self.info)

    @property
    def run_key(self) -> str:
        """Key plus ETag (or size and mtime): one run per version of an object."""
        return f"{self.uri}@{self.fingerprint}"

    @property
    def identity(self) -> str:
        return hashlib.sha256(self.run_key.encode()).hexdigest()[:16]


def wanted(key: str, suffixes: Sequence[str]) -> bool:
    """Whether a key names a record file to process: one of ``suffixes`` (case-insensitive),
    and not hidden, a lock file or an upload in progress, nor in a folder whose name starts with
    ``.`` or ``_``."""
    *folders, name = key.split("/")
    lower = name.lower()
    if not name or name.startswith(_IGNORED_PREFIXES) or lower.endswith(_IGNORED_SUFFIXES):
        return False
    if any(f.startswith(_IGNORED_PREFIXES) for f in folders if f):
        return False  # in a hidden or underscore folder (.git/, _tmp/, _staging/)
    return lower.endswith(tuple(s.lower() for s in suffixes))


def list_local(root: str, suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> list[SourceObject]:
    """The record files under the folder ``root``, recursively. Hidden folders are skipped."""
    base = normalize_uri(root)
    if not os.path.isdir(base):
        raise ConfigError(f"watched folder {base} does not exist or is not a folder")
    found: list[SourceObject] = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(_IGNORED_PREFIXES))
        for name in files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, base).replace(os.sep, "/")
            if not wanted(key, suffixes):
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:  # removed while listing
                continue
            found.append(SourceObject(path, key, st.st_size, st.st_mtime, arrived=st.st_ctime))
    return found


def objects_from_s3_listing(
    bucket: str, listing: Iterable[Mapping[str, Any]], suffixes: Sequence[str] = DEFAULT_SUFFIXES
) -> list[SourceObject]:
    """``SourceObject``s from ``ListObjectsV2`` entries (Key, Size, LastModified, ETag)."""
    found = []
    for entry in listing:
        key = str(entry["Key"])
        if key.endswith("/") or not wanted(key, suffixes):
            continue
        modified = entry["LastModified"]
        stamp = modified.timestamp() if isinstance(modified, datetime) else float(modified)
        found.append(
            SourceObject(f"s3://{bucket}/{key}", key, int(entry["Size"]), stamp, entry.get("ETag"))
        )
    return found


def split_watch_uri(uri: str) -> tuple[str, str]:
    """An ``s3://bucket/prefix`` as (bucket, prefix); raises ConfigError for a bad one."""
    if not is_s3(uri):
        raise ConfigError(f"{uri} is not an s3:// URI")
    bucket, prefix = split_s3(uri if "/" in uri[len("s3://") :] else uri + "/")
    if not bucket:
        raise ConfigError(f"{uri} names no bucket")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a folder: s3://b/inbox must not also list s3://b/inbox-out/
    return bucket, prefix


@dataclass
class UploadCursor:
    """Where the upload sensor is: see the module docstring."""

    watermark: float | None = None
    seen: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"v": CURSOR_VERSION, "watermark": self.watermark, "seen": self.seen},
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> UploadCursor:
        """The cursor a tick stored; a fresh one for None. Raises ConfigError for a cursor this
        code cannot read (reset it in the UI to start over)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"version {data.get('v')!r}, expected {CURSOR_VERSION}")
            watermark = data["watermark"]
            seen = {str(k): float(v) for k, v in data["seen"].items()}
            return cls(float(watermark) if watermark is not None else None, seen)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"cannot read the upload sensor's cursor ({exc}): reset the cursor to start "
                "over (objects already processed are not processed again: their run keys and "
                "the ledger remember them)"
            ) from exc


@dataclass
class Selection:
    """What one tick decided."""

    requested: list[SourceObject]
    cursor: UploadCursor
    listed: int
    already_requested: int
    over_cap: int
    settling: int
    too_old: int = 0

    def skip_reason(self, where: str) -> str:
        """Why nothing was requested, specifically."""
        if self.listed == 0:
            return f"no record files under {where}"
        if self.settling and not self.over_cap:
            return (
                f"{self.settling} new file(s) under {where} modified in the last seconds, "
                "waiting for them to settle"
            )
        text = f"no new or changed objects under {where}: "
        if not self.too_old:
            return text + f"all {self.listed} listed were requested before"
        return text + (
            f"{self.already_requested} recent one(s) were requested before, and {self.too_old} "
            "older one(s) are behind the look-back (requested earlier, or left to the nightly "
            "schedule)"
        )


def select_new(
    objects: Sequence[SourceObject],
    cursor: UploadCursor,
    *,
    max_requests: int,
    lookback_seconds: float = 900.0,
    settle_seconds: float = 0.0,
    now: float | None = None,
) -> Selection:
    """The objects a tick should request, oldest first, and the cursor after it."""
    if max_requests < 1:
        raise ConfigError(f"max_requests must be at least 1, got {max_requests}")
    now = time.time() if now is None else now
    floor = None if cursor.watermark is None else cursor.watermark - lookback_seconds
    new: list[SourceObject] = []
    settling = too_old = 0

    # Objects are ordered, and the watermark moves, by LastModified (mtime); whether an object
    # is still within the look-back goes by ``seen_at``, so a file moved in with an old mtime
    # is new. Times in the future (a skewed clock, a touched file) count as now.
    def modified(o: SourceObject) -> float:
        return min(o.last_modified, now)

    for obj in objects:
        if floor is not None and min(obj.seen_at, now) < floor:
            too_old += 1
            continue
        if obj.identity in cursor.seen:
            continue
        settled_since = obj.last_modified if obj.last_modified <= now else obj.arrived or now
        if settle_seconds and settled_since > now - settle_seconds:
            settling += 1
            continue
        new.append(obj)
    new.sort(key=lambda o: (modified(o), o.uri))
    requested = new[:max_requests]
    watermark = cursor.watermark
    if requested:
        newest = modified(requested[-1])
        watermark = newest if watermark is None else max(watermark, newest)
    seen = dict(cursor.seen)
    seen.update({o.identity: min(o.seen_at, now) for o in requested})
    if watermark is not None:
        keep_from = watermark - lookback_seconds
        seen = {k: v for k, v in seen.items() if v >= keep_from}
    return Selection(
        requested=requested,
        cursor=UploadCursor(watermark, seen),
        listed=len(objects),
        already_requested=len(objects) - len(new) - settling - too_old,
        over_cap=len(new) - len(requested),
        settling=settling,
        too_old=too_old,
    )
