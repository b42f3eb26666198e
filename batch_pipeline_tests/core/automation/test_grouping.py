"""The nightly schedule's grouping of small files into file-set runs (``automation.grouping``)."""

from __future__ import annotations

from batch_pipeline.core.automation.discovery import SourceObject
from batch_pipeline.core.automation.grouping import group_small_files
from batch_pipeline.core.inputs import filesets


def obj(key: str, size: int = 100) -> SourceObject:
    return SourceObject(f"/w/{key}", key, size, 1.0)


def test_group_small_files_per_format_in_key_order_with_a_cap() -> None:
    objects = [obj(f"c{i:02d}.csv") for i in range(25)][::-1]
    objects += [obj("big.csv", 10_000), obj("x1.jsonl"), obj("x2.jsonl")]
    singles, groups = group_small_files(objects, "/w", 1_000, 10, min_files=3)
    assert sorted(o.key for o in singles) == ["big.csv", "x1.jsonl", "x2.jsonl"]
    assert [len(g.objects) for g in groups] == [10, 10, 5]
    assert [k for g in groups for k in g.members] == [f"c{i:02d}.csv" for i in range(25)]
    assert all(g.root == "/w/" for g in groups)
    assert len({g.batch_id for g in groups}) == 3
    assert group_small_files(objects, "/w", 0, 10) == (objects, [])


def test_no_file_bigger_than_a_set_takes_is_grouped(monkeypatch) -> None:
    monkeypatch.setattr(filesets, "MAX_MEMBER_BYTES", 500)
    objects = [obj(f"c{i}.csv", 400) for i in range(3)] + [obj("d.csv", 600)]
    singles, groups = group_small_files(objects, "/w", 10_000, 10)
    assert [o.key for o in singles] == ["d.csv"]
    assert [g.members for g in groups] == [["c0.csv", "c1.csv", "c2.csv"]]


def test_files_whose_name_tells_no_format_are_grouped_by_the_runs_format_or_run_alone() -> None:
    objects = [obj(f"r{i}.dat") for i in range(4)]
    singles, groups = group_small_files(objects, "/w", 1_000, 10)
    assert singles == objects and groups == []  # each run fails on its own, naming why
    singles, groups = group_small_files(objects, "/w", 1_000, 10, fmt="csv")
    assert singles == [] and [g.members for g in groups] == [[f"r{i}.dat" for i in range(4)]]
