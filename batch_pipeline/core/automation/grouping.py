"""Group small files into file-set runs: what the nightly schedule does with many small files.

The schedule finds every record file under a watched folder that no finished batch has taken.
One run per file would cost a run (and its steps) per file; ``group_small_files`` instead
leaves big files a run each and puts small files of one format into ``FileGroup``s, each of
which one run takes as a file set (``inputs.filesets``), its members named in the run config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batch_pipeline.core.automation.discovery import SourceObject
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ObjectInfo
from batch_pipeline.core.common.settings import Batch
from batch_pipeline.core.inputs.filesets import member_limit, relative_key, set_info, set_uri
from batch_pipeline.core.inputs.sources import derive_batch_id, detect_format


@dataclass(frozen=True)
class FileGroup:
    """Small files that one run takes as a file set (the nightly schedule's grouping)."""

    root: str
    objects: tuple[SourceObject, ...]

    @property
    def info(self) -> ObjectInfo:
        return set_info(self.root, [o.info for o in self.objects])

    @property
    def batch_id(self) -> str:
        """The batch id ``initialize`` derives for this set of file versions."""
        return derive_batch_id(self.info)

    @property
    def members(self) -> list[str]:
        return [relative_key(self.root, o.uri) for o in self.objects]

    @property
    def run_key(self) -> str:
        return f"{self.root}@{self.info.fingerprint}"


def group_small_files(
    objects: Sequence[SourceObject],
    root: str,
    max_file_bytes: int,
    max_files: int,
    min_files: int = 2,
    fmt: str = Batch.format.default,
) -> tuple[list[SourceObject], list[FileGroup]]:
    """Split ``objects`` under the folder ``root`` into files that get a run of their own and
    groups of small files (at most ``max_file_bytes`` each) that share one, per format (``fmt``
    as the runs will be told, else each file's own), in key order, at most ``max_files`` per
    group. A format with fewer than ``min_files`` small files leaves them on their own, as does
    a file whose format its name does not tell; ``max_file_bytes`` 0 groups nothing, and no
    file above what a set takes (``member_limit``) is grouped."""
    root = set_uri(root)
    singles: list[SourceObject] = []
    small: dict[str, list[SourceObject]] = {}
    for obj in objects:
        limit = min(max_file_bytes, member_limit(obj.uri))  # what a set can take
        if max_file_bytes <= 0 or obj.size > limit or not obj.uri.startswith(root):
            singles.append(obj)
            continue
        try:
            detected = detect_format(obj.uri, fmt)[0]
        except ConfigError:  # its own run fails, naming why, without holding up the others
            singles.append(obj)
            continue
        small.setdefault(detected, []).append(obj)
    groups: list[FileGroup] = []
    for _, files in sorted(small.items()):
        if len(files) < min_files:
            singles.extend(files)
            continue
        files.sort(key=lambda o: o.uri)
        for i in range(0, len(files), max_files):
            groups.append(FileGroup(root, tuple(files[i : i + max_files])))
    return singles, groups
