"""Smoke tests: the definitions load, and the job, its ops and the CLI are there by name."""

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import batch_pipeline.core
from batch_pipeline.definitions import defs, get_batch_job, get_redrive_job


def test_definitions_load_with_batch_job():
    names = {job.name for job in defs.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert names == {"batch_job", "redrive_job"}


def test_batch_job_has_the_five_stages():
    """Processing is two ops: process_heavy_chunk takes the chunks over heavy_records; a keyed
    processor's second stage is plan_buckets and process_bucket."""
    job = get_batch_job()
    assert {node.name for node in job.nodes} == {
        "initialize",
        "plan_chunks",
        "process_chunk",
        "process_heavy_chunk",
        "plan_buckets",
        "process_bucket",
        "aggregate",
        "deliver",
    }


def test_batch_job_resources_are_bound():
    job = get_batch_job()
    assert {"storage", "sqs", "ledger", "state_store"} <= set(job.resource_defs)


def test_redrive_job_shares_the_stages_after_loading_the_batch():
    job = get_redrive_job()
    assert {node.name for node in job.nodes} == {
        "load_batch",
        "plan_chunks",
        "process_heavy_chunk",
        "process_chunk",
        "plan_buckets",
        "process_bucket",
        "aggregate",
        "deliver",
    }


def test_batch_results_asset_is_declared():
    keys = {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}
    assert "batch_results" in keys


def test_cli_entry_point_is_installed():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("batch-pipeline") == "batch_pipeline.cli:main"


def test_cli_lists_its_commands():
    out = subprocess.run(
        [sys.executable, "-m", "batch_pipeline.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("run", "redrive", "complete", "dead-letters", "sample"):
        assert command in out


def test_core_does_not_import_dagster():
    code = (
        "import sys\n"
        "import batch_pipeline.core.initialize, batch_pipeline.core.pipeline\n"
        "import batch_pipeline.core.inputs.sample_data\n"
        "bad = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


ENVIRONMENT_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})


def environment_reads(source: str) -> list[tuple[int, str]]:
    """Where ``source`` touches the process environment: ``os.environ`` (``.get``, ``[...]``),
    ``os.getenv``, and ``environ``/``getenv`` imported from ``os`` or used by name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT_NAMES:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Name) and node.id in ENVIRONMENT_NAMES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [a.name for a in node.names if a.name in ENVIRONMENT_NAMES]
            found.extend((node.lineno, f"from os import {name}") for name in names)
    return found


def test_core_reads_no_environment():
    """The environment is read at the edge (``batch_pipeline.settings``, the resources, the
    CLI); ``core/`` takes what it needs as arguments."""
    core = Path(batch_pipeline.core.__file__).parent
    modules = sorted(core.rglob("*.py"))
    assert len(modules) > 20
    reads = [
        f"{module.relative_to(core.parent)}:{line}: {what}"
        for module in modules
        for line, what in environment_reads(module.read_text(encoding="utf-8"))
    ]
    assert reads == []


def test_the_environment_check_finds_every_way_to_read_it():
    sources = [
        "import os\nx = os.environ.get('A')",
        "import os\nx = os.environ['A']",
        "import os\nx = os.getenv('A')",
        "from os import environ\nx = environ.get('A')",
        "from os import getenv\nx = getenv('A')",
    ]
    assert all(environment_reads(source) for source in sources)
    assert environment_reads("import os\nx = os.path.join('a', 'b')") == []


def test_batch_results_has_a_partition_per_source_file():
    spec = next(iter(defs.assets or []))
    assert spec.partitions_def is not None
    assert spec.partitions_def.name == "source_files"


@pytest.mark.slow
def test_repo_instance_queues_runs_with_run_and_tag_limits(tmp_path, monkeypatch):
    """The dagster.yaml that `make ui` installs: a queued run coordinator with a run limit, one
    run per batch id at a time, and a cap on sensor runs."""
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator

    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs == 2
        limits = {(limit["key"], str(limit.get("value"))): limit["limit"]
                  for limit in queue.tag_concurrency_limits}  # fmt: skip
        assert limits == {
            ("batch_pipeline/batch_id", "{'applyLimitPerUniqueValue': True}"): 1,
            ("batch_pipeline/trigger", "sensor"): 1,
        }
