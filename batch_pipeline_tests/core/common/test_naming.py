"""Batch ids are one safe path segment, and file-set members stay inside their folder: every id
given or derived passes ``check_batch_id``, and anything that could leave ``{output}`` is
refused before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batch_pipeline.core.automation.discovery import SourceObject
from batch_pipeline.core.automation.grouping import FileGroup
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ObjectInfo
from batch_pipeline.core.common.naming import check_batch_id, check_location, check_member
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.inputs.sources import derive_batch_id
from batch_pipeline.core.stores.storage import Storage

GOOD = ["b-1", "leads-2025.v2", "A_b", "0", "x" * 128, "batch.", "a..b"]
BAD = [
    "",
    ".",
    "..",
    ".hidden",
    "-dash-first",
    "_under",
    "a/b",
    "../out",
    "a\\b",
    "with space",
    "tab\there",
    "new\nline",
    "esc\x1b[31m",
    "nul\x00",
    "caf\u00e9",
    "x" * 129,
]


@pytest.mark.parametrize("value", GOOD)
def test_safe_batch_ids_pass(value: str) -> None:
    assert check_batch_id(value) == value


@pytest.mark.parametrize("value", BAD)
def test_unsafe_batch_ids_are_refused_saying_what_is_allowed(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_batch_id(value)
    message = str(error.value)
    assert "1-128 characters" in message and "A-Z a-z 0-9 . _ -" in message
    assert "\n" not in message and "\x1b" not in message  # the value is shown escaped


ODD_NAMES = [
    "leads.csv",
    "my leads (final) v2.csv",
    "naïve café 漢字 🚀.csv",
    "...csv",
    ".hidden.csv",
    "-.csv",
    "evil\nERROR forged line.csv",
    "a" * 300 + ".csv",
    "spaces   only   .jsonl",
    "UPPER.CSV",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_derived_ids_are_safe_for_any_file_name(name: str) -> None:
    for uri in (f"/data/in/{name}", f"s3://bucket/in/{name}", f"/data/{name}/"):
        info = ObjectInfo(uri=uri, size=10, mtime=1.0, etag=None)
        assert check_batch_id(derive_batch_id(info))


def test_file_group_ids_are_safe() -> None:
    objects = tuple(
        SourceObject(uri=f"/data/in/{n}", key=n, size=10, last_modified=1.0) for n in ODD_NAMES
    )
    group = FileGroup("/data/in/", objects)
    assert check_batch_id(group.batch_id)
    weird = FileGroup("/data/ünï cödé  ../", objects)
    assert check_batch_id(weird.batch_id)


@pytest.mark.parametrize("member", ["a.csv", "2025/b.csv", "x..y.csv", "dir/.../c.csv"])
def test_members_inside_the_folder_pass(member: str) -> None:
    assert check_member(member) == member


@pytest.mark.parametrize(
    "member", ["", "../secret.csv", "a/../../b.csv", "/etc/passwd", "a/./b.csv", "a//b", "..",
               "a\\..\\b.csv", "bad\nname.csv"],
)  # fmt: skip
def test_members_leaving_the_folder_are_refused(member: str) -> None:
    with pytest.raises(ConfigError, match="member"):
        check_member(member)


def csv(path: Path, rows: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id\n" + "".join(f"{i}\n" for i in range(rows)))
    return path


@pytest.mark.parametrize("batch_id", ["..", ".", "../elsewhere", "a/b", "x\ny"])
def test_prepare_batch_refuses_an_unsafe_batch_id(tmp_path: Path, batch_id: str) -> None:
    source = csv(tmp_path / "in.csv")
    with pytest.raises(ConfigError, match="batch_id"):
        prepare_batch(Storage(), str(source), output=str(tmp_path / "out"), batch_id=batch_id)


def test_prepare_batch_refuses_a_member_outside_the_set(tmp_path: Path) -> None:
    csv(tmp_path / "set" / "a.csv")
    csv(tmp_path / "secret.csv")
    for member in ("../secret.csv", str(tmp_path / "secret.csv")):
        with pytest.raises(ConfigError, match="member"):
            prepare_batch(
                Storage(), str(tmp_path / "set"), members=(member,), output=str(tmp_path / "out")
            )


# Where results go, and S3 sources: nowhere but where they name -------------------------------

BAD_LOCATIONS = [
    "",
    "   ",
    "file://",
    "s3://",  # no bucket: the batch would land at the root of a bucket named like the batch id
    "s3:///x",
    "s3://b//x",
    "s3://b/x//",
    "s3://b/a/../../t15s",  # S3 would resolve it to s3://t15s/...
    "s3://b/./x",
    "s3://b/x/..",
    "s3://../x",
    "s3://b c/x",
]


@pytest.mark.parametrize("value", BAD_LOCATIONS)
def test_an_empty_or_escaping_location_is_refused(value: str) -> None:
    for what in ("output", "source"):
        with pytest.raises(ConfigError) as error:
            check_location(value, what)
        message = str(error.value)
        assert message.startswith(f"{what} {value!r} ")
        assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://b", "s3://b"),
        ("s3://b/", "s3://b/"),
        ("s3://b/results", "s3://b/results"),
        ("s3://my.bucket-1/a/b/", "s3://my.bucket-1/a/b/"),
        ("s3://b/x..y/.hidden/...", "s3://b/x..y/.hidden/..."),
        ("out", os.path.abspath("out")),
        ("./a/../out", os.path.abspath("out")),
        ("file:///tmp/out", "/tmp/out"),
        ("~/out", os.path.expanduser("~/out")),
    ],
)
def test_a_location_naming_one_place_passes_local_paths_made_absolute(
    value: str, expected: str
) -> None:
    assert check_location(value, "output") == expected


@pytest.mark.parametrize("output", ["", "s3://", "s3://b/a/../../other", "s3:///x", "s3://b//x"])
def test_prepare_batch_refuses_an_output_that_names_no_place_or_another(
    tmp_path: Path, output: str
) -> None:
    source = csv(tmp_path / "in.csv")
    with pytest.raises(ConfigError, match=r"^output "):
        prepare_batch(Storage(), str(source), output=output, batch_id="t15s")


@pytest.mark.parametrize(
    "source", ["", "s3://", "s3://b/in/../secret/a.csv", "s3://b//a.csv", "s3:///a.csv"]
)
def test_prepare_batch_refuses_a_source_that_names_another_object(
    tmp_path: Path, source: str
) -> None:
    """Checked before anything is read (no S3 endpoint is reachable here)."""
    with pytest.raises(ConfigError, match=r"^source "):
        prepare_batch(Storage(), source, output=str(tmp_path / "out"))
