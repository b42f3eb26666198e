"""The command's start-up imports what its run needs and nothing else: a plain ``run`` (a CSV,
``validate``, no delivery) in a fresh process loads none of the heavy modules that only other
formats, processors, sinks, executors or the UI's definitions use; a bad argument fails before
Dagster is imported. Modules, not seconds: a timing would depend on the machine's load."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Imported by other runs than a plain CSV one, or by the deployment, never by this one.
NOT_NEEDED = [
    "polars",  # packing records into messages (a delivery)
    "openpyxl",  # Excel sources
    "phonenumbers",  # the leads processor's phones
    "requests",  # the leads processor's LLM
    "confluent_kafka",  # the Kafka sink
    "boto3",  # the SQS sink, DynamoDB state stores (made when a client is made)
    "dagster_aws",  # resources declare its boto3 settings themselves (resources.aws_config)
    "dagster_celery",
    "celery",
    "kombu",
    "dagster_k8s",
    "dagster_postgres",
    "psycopg2",
    "dagster_webserver",
    "dagster_graphql",
    "batch_pipeline.definitions",  # the CLI runs the jobs of bound_jobs
    "batch_pipeline.automation",  # sensors and schedule
    "batch_pipeline.workers",
]

# Runs the command as ``batch-pipeline`` does (main() without argv) and writes the modules it
# loaded to the file named by argv[1] when the process exits.
PROGRAM = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["batch-pipeline", *sys.argv[2:]]
from batch_pipeline.cli import main
sys.exit(main())
"""


def command(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    modules = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        BATCH_PIPELINE_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        BATCH_PIPELINE_STATE_STORE_URL=f"sqlite:///{tmp_path / 'state.db'}",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(modules), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, set(json.loads(modules.read_text()))


def loaded(modules: set[str], names: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_a_plain_run_loads_no_heavy_module_it_does_not_need(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("id,email\n" + "".join(f"{i},p{i}@example.com\n" for i in range(1, 21)))
    schema = {"columns": {"id": {"type": "int64", "required": True}, "email": {"type": "string"}}}
    done, modules = command(
        tmp_path,
        "run",
        str(source),
        "--processor",
        "validate",
        "--processor-options",
        json.dumps(schema),
        "--deliver",
        "none",
        "--output",
        str(tmp_path / "out"),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["records_out"] == 20
    assert "dagster" in modules  # it did run the job
    assert loaded(modules, NOT_NEEDED) == []


def test_a_bad_argument_fails_before_dagster_is_imported(tmp_path: Path) -> None:
    # The pre-check's (a source that is not there): the core's modules, no Dagster.
    done, modules = command(tmp_path, "run", str(tmp_path / "missing.csv"), "--deliver", "none")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert loaded(modules, ["dagster", *NOT_NEEDED]) == []
    # argparse's (a format that is none): the command's modules alone.
    done, modules = command(tmp_path, "run", "x.csv", "--format", "nope")
    assert done.returncode == 2
    assert "invalid choice: 'nope'" in done.stderr
    assert loaded(modules, ["dagster", "pyarrow", "numpy", "sqlalchemy", *NOT_NEEDED]) == []


def test_the_collector_is_held_only_as_the_command(tmp_path: Path, capsys) -> None:
    import gc

    from batch_pipeline.cli import main, startup

    assert main(["run", str(tmp_path / "missing.csv")]) == 2  # from Python: left alone
    assert gc.isenabled()
    try:
        startup.hold()
        assert not gc.isenabled()
        startup.release()
        assert gc.isenabled()
        startup.release()  # once only: a collector this module did not turn off stays as it is
        gc.disable()
        startup.release()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
