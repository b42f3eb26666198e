"""The Kubernetes and ECS examples in ``deploy/`` load and validate as config, since no cluster
exists here (the README's "Kubernetes and ECS" says what this does not prove).

- ``deploy/k8s/run_config.yaml`` validates against ``batch_job`` with dagster-k8s's
  ``k8s_job_executor`` swapped in for ``batch_executor``;
- ``deploy/k8s/run_launcher.yaml`` and ``deploy/ecs/run_launcher.yaml`` validate against
  ``K8sRunLauncher.config_type()`` and ``EcsRunLauncher.config_type()`` (Dagster's own config
  processing, environment variables filled with dummies), and so does the heavy chunks'
  ``dagster-k8s/config`` tag against dagster-k8s's schema of user-defined k8s config;
- ``deploy/k8s/values.yaml`` holds the keys the Dagster chart's templates read, agrees with
  ``deploy/dagster.yaml`` on the queue, monitoring and retries, and the instance those values
  would render (assembled here the way the chart's ``configmap-instance.yaml`` does, not by
  Helm) validates against Dagster's instance schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ECS = DEPLOY / "ecs"

# Every `{env: NAME}` the files use, filled with dummies for validation.
DUMMY_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "dummy",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "logs",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "dagster",
    "DAGSTER_K8S_JOB_NAMESPACE": "batch",
    "BATCH_PIPELINE_LOG_GROUP": "/ecs/batch-pipeline",
    "BATCH_PIPELINE_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/exec",
    "BATCH_PIPELINE_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/task",
    "BATCH_PIPELINE_ECS_CLUSTER": "batch",
}

# The keys of the chart's K8sRunLauncherConfig (helm/dagster/schema/.../run_launcher.py, which
# forbids any other).
CHART_K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def dummy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)


def valid(schema: Any, value: Any) -> Any:
    """``value`` processed by Dagster's config system against ``schema``; fails with its errors."""
    result = process_config(schema, value)
    assert result.success, [e.message for e in result.errors or []]
    return result.value


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def snake_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {snake(k): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.yaml")))
def test_every_deploy_file_parses(path: Path) -> None:
    assert isinstance(load(DEPLOY / path), dict)


def test_the_k8s_run_config_validates_against_batch_job_on_the_k8s_executor() -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s")
    from dagster import DagsterInvalidConfigError, validate_run_config

    from batch_pipeline.definitions import get_batch_job

    job = get_batch_job().with_executor_def(dagster_k8s.k8s_job_executor)
    run_config = load(K8S / "run_config.yaml")
    resolved = validate_run_config(job, run_config)["execution"]["k8s"]
    assert resolved["max_concurrent"] == 16
    resources = resolved["step_k8s_config"]["container_config"]["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    # The validation is real: a misspelt executor setting is refused.
    with pytest.raises(DagsterInvalidConfigError, match="max_concurent"):
        validate_run_config(job, {**run_config, "execution": {"config": {"max_concurent": 4}}})


def test_the_heavy_chunk_tags_are_valid_k8s_config_bigger_than_a_step_pod() -> None:
    pytest.importorskip("dagster_k8s")
    from dagster_k8s.job import USER_DEFINED_K8S_JOB_CONFIG_SCHEMA

    tags = load(K8S / "heavy_chunk_tags.yaml")
    assert tags["dagster-celery/queue"] == "heavy"
    heavy = valid(USER_DEFINED_K8S_JOB_CONFIG_SCHEMA, tags["dagster-k8s/config"])
    step = load(K8S / "run_config.yaml")["execution"]["config"]["step_k8s_config"]
    light, big = (c["container_config"]["resources"]["requests"] for c in (step, heavy))
    assert _gib(big["memory"]) > _gib(light["memory"]) and float(big["cpu"]) > float(light["cpu"])


def test_the_heavy_chunk_op_carries_the_documented_tags() -> None:
    """Once size-class routing is in the job, its heavy op's tags are what the file shows."""
    from batch_pipeline.definitions import get_batch_job

    ops = {d.name: d for d in get_batch_job().all_node_defs}
    if "process_heavy_chunk" not in ops:
        pytest.skip("batch_job has no process_heavy_chunk op yet (size-class routing)")
    documented = load(K8S / "heavy_chunk_tags.yaml")
    tags = {k: ops["process_heavy_chunk"].tags.get(k) for k in documented}
    k8s = tags["dagster-k8s/config"]
    tags["dagster-k8s/config"] = json.loads(k8s) if isinstance(k8s, str) else k8s
    assert tags == documented


def _gib(quantity: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_the_k8s_run_launcher_section_validates(dummy_env: None) -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s")
    section = load(K8S / "run_launcher.yaml")["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = valid(dagster_k8s.K8sRunLauncher.config_type(), section["config"])
    assert config["job_namespace"] == "batch"


def test_the_k8s_run_launcher_section_matches_the_helm_values() -> None:
    values = load(K8S / "values.yaml")
    section = load(K8S / "run_launcher.yaml")["run_launcher"]["config"]
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert section["env_secrets"] == [s["name"] for s in chart["envSecrets"]]
    assert section["postgres_password_secret"] == values["global"]["postgresqlSecretName"]
    assert section["run_k8s_config"] == snake_keys(chart["runK8sConfig"])
    assert section["fail_pod_on_run_failure"] is chart["failPodOnRunFailure"]


def test_the_ecs_run_launcher_section_validates(dummy_env: None) -> None:
    ecs = pytest.importorskip("dagster_aws.ecs")
    section = load(ECS / "run_launcher.yaml")["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    config = valid(ecs.EcsRunLauncher.config_type(), section["config"])
    assert config["task_definition"]["log_group"] == "/ecs/batch-pipeline"
    assert config["run_task_kwargs"]["cluster"] == "batch"
    # The password comes from a secret, never from the task's plain environment.
    assert "DAGSTER_PG_PASSWORD" in {s["name"] for s in config["secrets"]}
    assert not any(v.startswith("DAGSTER_PG_PASSWORD") for v in config["env_vars"])


def test_the_ecs_instance_validates_with_deploy_dagster_yaml(dummy_env: None) -> None:
    instance = {**load(DEPLOY / "dagster.yaml"), **load(ECS / "run_launcher.yaml")}
    valid(dagster_instance_config_schema(), instance)


def test_the_helm_values_hold_what_the_chart_needs() -> None:
    values = load(K8S / "values.yaml")
    workspace = load(ROOT / "workspace.yaml")["load_from"][0]["python_module"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert {"postgresqlHost", "postgresqlUsername", "postgresqlDatabase", "service"} <= set(pg)
    assert "postgresqlPassword" not in pg
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"

    users = values["dagster-user-deployments"]
    assert users["enabled"] is True
    (code,) = users["deployments"]
    assert {"name", "image", "dagsterApiGrpcArgs", "port"} <= set(code)
    assert {"repository", "tag", "pullPolicy"} <= set(code["image"])
    args = code["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == workspace["module_name"]
    assert args[args.index("--attribute") + 1] == workspace["attribute"]

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert set(values["runLauncher"]["config"]["k8sRunLauncher"]) <= CHART_K8S_RUN_LAUNCHER_KEYS
    assert values["dagsterDaemon"]["enabled"] is True
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"


def test_the_helm_values_keep_the_queue_monitoring_and_retries_of_deploy_dagster_yaml() -> None:
    values = load(K8S / "values.yaml")
    deploy = load(DEPLOY / "dagster.yaml")
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert (coordinator["enabled"], coordinator["type"]) == (True, "QueuedRunCoordinator")
    queued = snake_keys(coordinator["config"]["queuedRunCoordinator"])
    # applyLimitPerUniqueValue is passed to Dagster as it is (the chart copies the list).
    queued["tag_concurrency_limits"] = coordinator["config"]["queuedRunCoordinator"][
        "tagConcurrencyLimits"
    ]
    assert queued == deploy["run_coordinator"]["config"]

    monitoring = daemon["runMonitoring"]
    expected = {k: v for k, v in deploy["run_monitoring"].items() if k != "max_runtime_seconds"}
    rendered = snake_keys(monitoring)
    assert {k: rendered[k] for k in expected} == expected
    # The template writes these two unconditionally: they must be set.
    assert {"pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"} <= set(monitoring)

    # run_retries comes whole from additionalInstanceConfig; the chart's own block is off, or
    # the rendered dagster.yaml would hold the key twice.
    assert daemon["runRetries"]["enabled"] is False
    assert values["additionalInstanceConfig"]["run_retries"] == deploy["run_retries"]


def test_the_instance_the_helm_values_describe_validates(dummy_env: None) -> None:
    """The instance sections the chart renders from these values, assembled by hand."""
    values = load(K8S / "values.yaml")
    deploy = load(DEPLOY / "dagster.yaml")
    daemon = values["dagsterDaemon"]
    coordinator = deploy["run_coordinator"]
    logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    instance = {
        "storage": deploy["storage"],
        "run_launcher": load(K8S / "run_launcher.yaml")["run_launcher"],
        "run_coordinator": coordinator,
        "run_monitoring": snake_keys(daemon["runMonitoring"]),
        "compute_logs": {
            "module": "dagster_aws.s3.compute_log_manager",
            "class": "S3ComputeLogManager",
            "config": logs,
        },
        "telemetry": values["telemetry"],
        **values["additionalInstanceConfig"],
    }
    valid(dagster_instance_config_schema(), instance)
