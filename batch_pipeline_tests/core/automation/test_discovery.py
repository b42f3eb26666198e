"""Unit tests of the upload sensor's decisions (``core.automation.discovery``), on synthetic
objects: no listing, no Dagster, no I/O."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from batch_pipeline.core.automation.discovery import (
    CURSOR_VERSION,
    DEFAULT_SUFFIXES,
    SourceObject,
    UploadCursor,
    objects_from_s3_listing,
    select_new,
    split_watch_uri,
    wanted,
)
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import ObjectInfo
from batch_pipeline.core.inputs.sources import derive_batch_id

T0 = 1_700_000_000.0  # a fixed "now" for the synthetic objects


def obj(name: str, mtime: float, etag: str | None = None, size: int = 10) -> SourceObject:
    return SourceObject(f"s3://bucket/in/{name}", f"in/{name}", size, mtime, etag)


def drain(
    objects: list[SourceObject],
    cursor: UploadCursor,
    *,
    cap: int,
    lookback: float = 900.0,
    max_ticks: int = 1000,
) -> tuple[list[list[SourceObject]], UploadCursor]:
    """Tick until a tick requests nothing: each tick's requests, and the last cursor."""
    ticks: list[list[SourceObject]] = []
    for _ in range(max_ticks):
        selection = select_new(objects, cursor, max_requests=cap, lookback_seconds=lookback)
        assert len(selection.requested) <= cap
        if not selection.requested:
            return ticks, cursor
        ticks.append(selection.requested)
        cursor = UploadCursor.from_json(selection.cursor.to_json())  # as Dagster stores it
    raise AssertionError("select_new never ran out of objects")


# wanted ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.csv", True),
        ("in/sub/a.CSV", True),
        ("a.tsv", True),
        ("a.jsonl.gz", True),
        ("a.csv.gz", True),
        ("a.json", True),
        ("a.parquet", True),
        ("a.xlsx", True),
        ("a.parquet.gz", False),  # only text formats are taken compressed
        ("a.xlsx.gz", False),
        ("a.md", False),
        ("csv", False),
        ("in/", False),
        (".hidden.csv", False),
        ("in/.hidden.csv", False),
        ("~$lock.xlsx", False),
        ("_SUCCESS", False),
        ("_temporary.csv", False),
        ("a.csv.tmp", False),
        ("a.csv.part", False),
        ("a.csv.PART", False),
        ("a.csv.crdownload", False),
        ("a.csv.filepart", False),
        ("in/.git/a.csv", False),  # S3 keys in hidden or underscore "folders"
        ("in/_tmp/a.csv", False),
        ("in/_temporary/0/part-0.csv", False),
    ],
)
def test_wanted_takes_record_files_and_ignores_the_rest(key, expected):
    assert wanted(key, DEFAULT_SUFFIXES) is expected


def test_wanted_honours_the_suffixes_given_case_insensitively():
    assert wanted("a.CSV", (".csv",))
    assert not wanted("a.json", (".csv",))
    assert wanted("a.json", (".JSON",))
    assert not wanted(".a.csv", (".csv",))


# objects_from_s3_listing ---------------------------------------------------------------------


def test_objects_from_s3_listing_keeps_wanted_keys_with_their_etag_and_time():
    when = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    listing = [
        {"Key": "in/a.csv", "Size": 12, "LastModified": when, "ETag": '"abc"'},
        {"Key": "in/", "Size": 0, "LastModified": when, "ETag": '"d41d"'},
        {"Key": "in/sub/", "Size": 0, "LastModified": when},
        {"Key": "in/notes.md", "Size": 3, "LastModified": when, "ETag": '"x"'},
        {"Key": "in/.a.csv", "Size": 3, "LastModified": when, "ETag": '"x"'},
        {"Key": "in/b.csv.part", "Size": 3, "LastModified": when, "ETag": '"x"'},
        {"Key": "in/c.jsonl", "Size": "7", "LastModified": 1714564800.5},  # no ETag, float time
    ]
    found = objects_from_s3_listing("bucket", listing)
    assert [o.uri for o in found] == ["s3://bucket/in/a.csv", "s3://bucket/in/c.jsonl"]
    a, c = found
    assert (a.key, a.size, a.last_modified, a.etag) == ("in/a.csv", 12, when.timestamp(), '"abc"')
    assert (c.size, c.last_modified, c.etag) == (7, 1714564800.5, None)


def test_objects_from_s3_listing_filters_by_the_suffixes_given():
    when = datetime(2024, 5, 1, tzinfo=UTC)
    listing = [
        {"Key": k, "Size": 1, "LastModified": when, "ETag": '"e"'} for k in ("a.csv", "b.json")
    ]
    assert [o.key for o in objects_from_s3_listing("b", listing, (".json",))] == ["b.json"]


# SourceObject -------------------------------------------------------------------------------


def test_run_key_is_the_uri_and_the_etag_without_quotes():
    o = obj("a.csv", T0, etag='"0123abcd"')
    assert o.fingerprint == "0123abcd"
    assert o.run_key == "s3://bucket/in/a.csv@0123abcd"


def test_run_key_without_etag_is_size_and_mtime_in_nanoseconds():
    o = SourceObject("/data/in/a.csv", "a.csv", 42, 1_700_000_001.0)
    assert o.run_key == "/data/in/a.csv@42-1700000001000000000"


def test_batch_id_and_identity_follow_the_object_version():
    o = obj("My File.csv", T0, etag='"e1"')
    assert o.batch_id == derive_batch_id(ObjectInfo(o.uri, o.size, mtime=T0, etag='"e1"'))
    assert o.batch_id.startswith("my-file-")
    changed = obj("My File.csv", T0, etag='"e2"')
    assert changed.batch_id != o.batch_id
    assert changed.identity != o.identity
    assert len(o.identity) == 16 and int(o.identity, 16) >= 0
    # The identity is of the version, not of the time alone: same ETag, another time, same id.
    assert obj("My File.csv", T0 + 5, etag='"e1"').identity == o.identity


# UploadCursor -------------------------------------------------------------------------------


def test_cursor_round_trips_through_compact_versioned_json():
    cursor = UploadCursor(T0 + 0.123456789, {"0123456789abcdef": T0, "fedcba9876543210": T0 + 1})
    text = cursor.to_json()
    assert " " not in text
    assert json.loads(text)["v"] == CURSOR_VERSION
    assert UploadCursor.from_json(text) == cursor


@pytest.mark.parametrize("text", [None, ""])
def test_no_cursor_is_a_fresh_one(text):
    assert UploadCursor.from_json(text) == UploadCursor(None, {})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"a string"',
        "42",
        "{}",
        '{"v": 2, "watermark": 1.0, "seen": {}}',
        '{"v": 1, "seen": {}}',
        '{"v": 1, "watermark": 1.0}',
        '{"v": 1, "watermark": "yesterday", "seen": {}}',
        '{"v": 1, "watermark": 1.0, "seen": ["a"]}',
        '{"v": 1, "watermark": 1.0, "seen": {"a": "b"}}',
    ],
)
def test_an_unreadable_cursor_raises_a_config_error_saying_to_reset_it(text):
    with pytest.raises(ConfigError, match=r"cannot read the upload sensor's cursor.*reset"):
        UploadCursor.from_json(text)


# select_new ---------------------------------------------------------------------------------


def test_first_tick_takes_everything_oldest_first():
    objects = [obj("c.csv", T0 + 2, '"c"'), obj("a.csv", T0, '"a"'), obj("b.csv", T0 + 1, '"b"')]
    selection = select_new(objects, UploadCursor(), max_requests=10)
    assert [o.key for o in selection.requested] == ["in/a.csv", "in/b.csv", "in/c.csv"]
    assert selection.cursor.watermark == T0 + 2
    assert set(selection.cursor.seen) == {o.identity for o in objects}
    assert (selection.listed, selection.already_requested, selection.over_cap) == (3, 0, 0)


def test_nothing_new_requests_nothing_and_says_so():
    objects = [obj("a.csv", T0, '"a"'), obj("b.csv", T0 + 1, '"b"')]
    first = select_new(objects, UploadCursor(), max_requests=10)
    again = select_new(objects, first.cursor, max_requests=10)
    assert again.requested == []
    assert again.already_requested == 2
    assert again.cursor == first.cursor
    assert again.skip_reason("s3://bucket/in/") == (
        "no new or changed objects under s3://bucket/in/: all 2 listed were requested before"
    )
    nothing = select_new([], UploadCursor(), max_requests=10)
    assert nothing.skip_reason("s3://bucket/in/") == "no record files under s3://bucket/in/"


def test_max_requests_must_be_positive():
    with pytest.raises(ConfigError, match="max_requests must be at least 1"):
        select_new([], UploadCursor(), max_requests=0)


def test_cap_spreads_ties_over_ticks_without_duplicates_or_misses():
    """Seven objects sharing one LastModified second, three per tick: 3, 3, 1."""
    objects = [obj(f"{i}.csv", T0, f'"{i}"') for i in range(7)]
    first = select_new(objects, UploadCursor(), max_requests=3)
    assert first.over_cap == 4
    ticks, _ = drain(objects, UploadCursor(), cap=3)
    assert [len(t) for t in ticks] == [3, 3, 1]
    taken = [o.uri for t in ticks for o in t]
    assert sorted(taken) == sorted(o.uri for o in objects)
    assert len(set(taken)) == len(taken)
    assert taken == sorted(taken)  # ties: by URI


def test_cap_keeps_the_watermark_at_the_newest_object_taken():
    objects = [obj(f"{i}.csv", T0 + i, f'"{i}"') for i in range(5)]
    selection = select_new(objects, UploadCursor(), max_requests=2)
    assert [o.key for o in selection.requested] == ["in/0.csv", "in/1.csv"]
    assert selection.cursor.watermark == T0 + 1


def test_a_changed_object_is_taken_again_an_unchanged_one_not():
    a1, b = obj("a.csv", T0, '"v1"'), obj("b.csv", T0, '"b"')
    first = select_new([a1, b], UploadCursor(), max_requests=10)
    a2 = obj("a.csv", T0 + 1, '"v2"')
    second = select_new([a2, b], first.cursor, max_requests=10)
    assert second.requested == [a2]
    assert second.requested[0].run_key != a1.run_key
    # Overwritten within the same second: the ETag alone makes it new.
    a3 = obj("a.csv", T0 + 1, '"v3"')
    third = select_new([a3, b], second.cursor, max_requests=10)
    assert third.requested == [a3]
    # Without an ETag (local files), a new size or mtime is a new version.
    local = SourceObject("/in/x.csv", "x.csv", 5, T0)
    cursor = select_new([local], UploadCursor(), max_requests=10).cursor
    touched = SourceObject("/in/x.csv", "x.csv", 5, T0 + 0.5)
    grown = SourceObject("/in/x.csv", "x.csv", 6, T0)
    assert select_new([touched], cursor, max_requests=10).requested == [touched]
    assert select_new([grown], cursor, max_requests=10).requested == [grown]
    assert select_new([local], cursor, max_requests=10).requested == []


def test_late_arrival_within_the_lookback_is_taken_older_is_not():
    first = select_new([obj("new.csv", T0 + 1000, '"n"')], UploadCursor(), max_requests=10)
    assert first.cursor.watermark == T0 + 1000
    same_second = obj("same.csv", T0 + 1000, '"s"')
    late = obj("late.csv", T0 + 1000 - 899, '"l"')
    at_floor = obj("floor.csv", T0 + 1000 - 900, '"f"')
    too_old = obj("old.csv", T0 + 1000 - 901, '"o"')
    listed = [obj("new.csv", T0 + 1000, '"n"'), same_second, late, at_floor, too_old]
    second = select_new(listed, first.cursor, max_requests=10, lookback_seconds=900)
    assert {o.key for o in second.requested} == {"in/same.csv", "in/late.csv", "in/floor.csv"}
    assert second.cursor.watermark == T0 + 1000  # late ones do not move it back
    third = select_new(listed, second.cursor, max_requests=10, lookback_seconds=900)
    assert third.requested == [] and (third.already_requested, third.too_old) == (4, 1)
    assert third.skip_reason("in/") == (
        "no new or changed objects under in/: 4 recent one(s) were requested before, and 1 "
        "older one(s) are behind the look-back (requested earlier, or left to the nightly "
        "schedule)"
    )


def test_seen_is_pruned_to_the_lookback_window():
    old = [obj(f"old{i}.csv", T0 + i, f'"o{i}"') for i in range(3)]
    cursor = select_new(old, UploadCursor(), max_requests=10, lookback_seconds=60).cursor
    assert len(cursor.seen) == 3
    newer = obj("newer.csv", T0 + 61.5, '"n"')  # watermark T0+61.5: floor T0+1.5
    cursor2 = select_new([*old, newer], cursor, max_requests=10, lookback_seconds=60).cursor
    assert cursor2.seen == {newer.identity: T0 + 61.5, old[2].identity: T0 + 2}
    # Pruned objects are below the floor: they are not taken again.
    again = select_new([*old, newer], cursor2, max_requests=10, lookback_seconds=60)
    assert again.requested == []


def test_cursor_stays_small_for_many_objects():
    objects = [obj(f"{i:06d}.csv", T0 + i / 1000, f'"{i}"') for i in range(20_000)]
    _, cursor = drain(objects, UploadCursor(), cap=5_000)
    text = cursor.to_json()
    assert len(cursor.seen) == 20_000  # all within the 900 s look-back
    assert len(text) < 50 * 20_000
    # A much later object prunes them all.
    late = obj("late.csv", T0 + 10_000, '"late"')
    pruned = select_new([*objects, late], cursor, max_requests=10).cursor
    assert pruned.seen == {late.identity: T0 + 10_000}


def test_settling_files_wait_and_the_skip_reason_says_so():
    now = T0 + 100
    fresh = SourceObject("/in/fresh.csv", "fresh.csv", 5, now - 0.5)
    ready = SourceObject("/in/ready.csv", "ready.csv", 5, now - 10)
    selection = select_new(
        [fresh, ready], UploadCursor(), max_requests=10, settle_seconds=2, now=now
    )
    assert selection.requested == [ready]
    assert selection.settling == 1
    only_fresh = select_new([fresh], selection.cursor, max_requests=10, settle_seconds=2, now=now)
    assert only_fresh.requested == []
    assert only_fresh.skip_reason("/in") == (
        "1 new file(s) under /in modified in the last seconds, waiting for them to settle"
    )
    later = select_new([fresh], selection.cursor, max_requests=10, settle_seconds=2, now=now + 3)
    assert later.requested == [fresh]


@pytest.mark.parametrize("seed", range(25))
def test_random_arrivals_are_each_taken_exactly_once(seed):
    """Random bursts over random ticks, with ties, late arrivals within the look-back (as S3
    stamps the start of a multipart upload) and overwrites: every version is taken once."""
    rng = random.Random(seed)
    lookback = 60.0
    cap = rng.randint(1, 7)
    clock = T0
    present: dict[str, SourceObject] = {}
    expected: set[str] = set()
    taken: list[str] = []
    cursor = UploadCursor()
    for tick in range(40):
        for _ in range(rng.randint(0, 6)):
            clock += rng.choice([0, 0, 0.001, 1, 5])
            name = rng.choice([f"t{tick}-{rng.randint(0, 10**6)}.csv", *list(present)[:3]])
            name = name.removeprefix("s3://bucket/in/")
            stamp = clock - rng.choice([0, 0, 0, lookback / 2, lookback - 1])
            version = obj(name, stamp, f'"{rng.getrandbits(64):x}"')
            present[version.uri] = version
            expected.add(version.run_key)
        listed = list(present.values())
        rng.shuffle(listed)
        selection = select_new(listed, cursor, max_requests=cap, lookback_seconds=lookback)
        assert len(selection.requested) <= cap
        taken.extend(o.run_key for o in selection.requested)
        cursor = UploadCursor.from_json(selection.cursor.to_json())
    ticks, _ = drain(list(present.values()), cursor, cap=cap, lookback=lookback)
    taken.extend(o.run_key for t in ticks for o in t)
    assert len(taken) == len(set(taken)), "a version was requested twice"
    # Versions overwritten before any tick listed them are legitimately never seen; every
    # version still present at the end was taken.
    assert {o.run_key for o in present.values()} <= set(taken)
    assert set(taken) <= expected


# split_watch_uri ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/in/", ("bucket", "in/")),
        ("s3://bucket/in", ("bucket", "in/")),  # a folder, never also in-out/
    ],
)
def test_split_watch_uri(uri, expected):
    assert split_watch_uri(uri) == expected


@pytest.mark.parametrize("uri", ["/local/folder", "s3://", "s3:///prefix"])
def test_split_watch_uri_refuses_bad_uris(uri):
    with pytest.raises(ConfigError):
        split_watch_uri(uri)
