"""The settings the environment gives, read here and nowhere in ``core/``: the core takes them
as arguments. Each is read when its function is called (a run, a step, a tick), never at import;
every function takes the environment as ``env`` (default: ``os.environ``). The README's
"Environment variables" table lists them all, with those that Dagster, boto3 and psycopg2 read
themselves.

- **The ledger**: ``default_ledger_url`` (``BATCH_PIPELINE_LEDGER_URL``, else SQLite in
  ``$DAGSTER_HOME``, else in ``~/.batch_pipeline``).
- **The state store** of keyed processors: ``default_state_store_url``
  (``BATCH_PIPELINE_STATE_STORE_URL``, else SQLite beside the default ledger:
  ``batch_state.db`` in ``$DAGSTER_HOME``, else in ``~/.batch_pipeline``).
- **Leases**: ``lease_settings`` (``BATCH_PIPELINE_LEASE_TTL_SECONDS``, 60, and
  ``BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS``, 10 or a third of the TTL if shorter).
- **Processors' secrets**: ``processor_secrets``, the variables a processor's options name (the
  ``leads`` LLM standardizer's API key, ``BATCH_PIPELINE_LLM_API_KEY`` by default).
- **Alerts**: ``alert_webhook_url`` (``BATCH_PIPELINE_ALERT_WEBHOOK``).
- **AWS**: ``s3_settings`` fills in the S3 endpoint (``AWS_ENDPOINT_URL_S3``, else
  ``AWS_ENDPOINT_URL``; pyarrow reads neither) and the region (``resolve_region``: ``AWS_REGION``,
  which botocore does not read, else ``AWS_DEFAULT_REGION``, else the profile's, else us-east-1).
- **Kafka**: ``kafka_security``, the SASL/TLS settings of a ``kafka://`` delivery target
  (``BATCH_PIPELINE_KAFKA_SECURITY_PROTOCOL``, ``..._SASL_MECHANISM``, ``..._SASL_USERNAME``,
  ``..._SASL_PASSWORD``, ``..._SSL_CA_LOCATION``), never in run config or logs.
- **Celery** (the ``celery`` executor and its workers): ``celery_broker``
  (``BATCH_PIPELINE_CELERY_BROKER``, ``pyamqp://guest@localhost//``) and ``celery_backend``
  (``BATCH_PIPELINE_CELERY_BACKEND``, ``rpc://``); passwords stay out of run config.
- **The automation** (upload sensor, nightly schedule): ``WatchSettings.from_env``.

A schedule's cron and a sensor's interval are fixed when Dagster loads the definitions, so these
are read then (``WatchSettings.from_env``); the run config file is read at every tick, so an edit
takes effect without a reload. Every variable is optional: unset, the sensor watches the local
folder ``data/inbox`` and runs write to ``data/output`` (the embedded defaults); an S3 watch
needs an ``output`` in the run config file.

=================================== ===============================================================
``BATCH_PIPELINE_WATCH_URI``        Folder or ``s3://bucket/prefix`` to watch (``data/inbox``).
``BATCH_PIPELINE_WATCH_SUFFIXES``   Comma-separated file suffixes to take (every supported format).
``BATCH_PIPELINE_RUN_CONFIG``       YAML or JSON file of ``batch_job`` config (everything but
                                    ``source`` and ``batch_id``) for the runs requested.
``BATCH_PIPELINE_SENSOR_INTERVAL``  Seconds between sensor ticks (30).
``BATCH_PIPELINE_MAX_RUNS_PER_TICK`` Most runs one sensor tick requests (100).
``BATCH_PIPELINE_LOOKBACK_SECONDS`` How far behind the newest object seen the sensor still looks
                                    for late arrivals (900).
``BATCH_PIPELINE_SETTLE_SECONDS``   Local files younger than this wait a tick (2).
``BATCH_PIPELINE_SCHEDULE_CRON``    The nightly schedule's cron (``0 2 * * *``).
``BATCH_PIPELINE_SCHEDULE_TIMEZONE`` Its timezone (``UTC``).
``BATCH_PIPELINE_GROUP_MAX_BYTES``  The schedule groups files of at most this size into file-set
                                    runs, whole files per chunk (64 MiB, also the most a set
                                    takes; 0: a run per file).
``BATCH_PIPELINE_GROUP_MAX_FILES``  Most files in one file-set run (5000).
``BATCH_PIPELINE_GROUP_MIN_FILES``  Fewer small files than this (per format) get a run each (20).
=================================== ===============================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml

from batch_pipeline.core.automation.alerts import ALERT_WEBHOOK_ENV
from batch_pipeline.core.automation.discovery import DEFAULT_SUFFIXES
from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.naming import check_location
from batch_pipeline.core.delivery.kafka_sink import SECURITY_SETTINGS
from batch_pipeline.core.ledger import LeaseSettings
from batch_pipeline.core.stores.storage import S3Settings, is_s3, normalize_uri, profile_region

ENV_PREFIX = "BATCH_PIPELINE_"
DEFAULT_WATCH = "data/inbox"
LEDGER_URL_ENV = "BATCH_PIPELINE_LEDGER_URL"
STATE_STORE_URL_ENV = "BATCH_PIPELINE_STATE_STORE_URL"
TTL_ENV = "BATCH_PIPELINE_LEASE_TTL_SECONDS"
HEARTBEAT_ENV = "BATCH_PIPELINE_LEASE_HEARTBEAT_SECONDS"


def _environment(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def default_ledger_url(env: Mapping[str, str] | None = None) -> str:
    """``BATCH_PIPELINE_LEDGER_URL``; else SQLite in ``$DAGSTER_HOME``; else in
    ``~/.batch_pipeline``. Read when called, never at import."""
    env = _environment(env)
    if env.get(LEDGER_URL_ENV):
        return env[LEDGER_URL_ENV]
    return f"sqlite:///{os.path.join(_home(env), 'batch_ledger.db')}"


def default_state_store_url(env: Mapping[str, str] | None = None) -> str:
    """``BATCH_PIPELINE_STATE_STORE_URL``; else SQLite beside the default ledger
    (``batch_state.db``). Read when called, never at import."""
    env = _environment(env)
    if env.get(STATE_STORE_URL_ENV):
        return env[STATE_STORE_URL_ENV]
    return f"sqlite:///{os.path.join(_home(env), 'batch_state.db')}"


def _home(env: Mapping[str, str]) -> str:
    """``$DAGSTER_HOME``, else ``~/.batch_pipeline``: where the embedded databases live."""
    return env.get("DAGSTER_HOME") or os.path.join(os.path.expanduser("~"), ".batch_pipeline")


def lease_settings(env: Mapping[str, str] | None = None) -> LeaseSettings:
    """From ``BATCH_PIPELINE_LEASE_TTL_SECONDS`` and ``..._HEARTBEAT_SECONDS``; the heartbeat
    defaults to 10 s or a third of the TTL, whichever is shorter."""
    env = _environment(env)
    ttl = _seconds(env, TTL_ENV, LeaseSettings.ttl_seconds)
    heartbeat = _seconds(env, HEARTBEAT_ENV, min(LeaseSettings.heartbeat_seconds, ttl / 3))
    if heartbeat >= ttl:
        raise ConfigError(
            f"{HEARTBEAT_ENV}={heartbeat:g} must be shorter than {TTL_ENV}={ttl:g}: a lease "
            "would expire between two heartbeats"
        )
    return LeaseSettings(ttl, heartbeat)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return seconds


def alert_webhook_url(env: Mapping[str, str] | None = None) -> str | None:
    """``BATCH_PIPELINE_ALERT_WEBHOOK``, or None when unset or blank. Read when called."""
    return _environment(env).get(ALERT_WEBHOOK_ENV, "").strip() or None


def processor_secrets(names: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of the environment variables a processor names for its secrets (the
    ``leads`` processor's LLM API key: ``llm.api_key_env``), those that are set."""
    environment = _environment(env)
    found = {name: environment.get(name, "").strip() for name in names}
    return {name: value for name, value in found.items() if value}


def celery_broker(env: Mapping[str, str] | None = None) -> str:
    """``BATCH_PIPELINE_CELERY_BROKER``: the celery broker of the executor and its workers."""
    return _environment(env).get(f"{ENV_PREFIX}CELERY_BROKER") or "pyamqp://guest@localhost//"


def celery_backend(env: Mapping[str, str] | None = None) -> str:
    """``BATCH_PIPELINE_CELERY_BACKEND``: where celery workers send step results (``rpc://``:
    back through the broker)."""
    return _environment(env).get(f"{ENV_PREFIX}CELERY_BACKEND") or "rpc://"


# librdkafka's name of each Kafka security setting -> the environment variable that gives it
# (security.protocol -> BATCH_PIPELINE_KAFKA_SECURITY_PROTOCOL).
KAFKA_SECURITY_ENV = {
    name: f"{ENV_PREFIX}KAFKA_{name.upper().replace('.', '_')}" for name in SECURITY_SETTINGS
}


def kafka_security(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The SASL/TLS librdkafka settings of a Kafka delivery target, from the environment
    (``KAFKA_SECURITY_ENV``); those unset or blank are left out (librdkafka's defaults:
    plaintext, no SASL). Read when called, never at import; never logged."""
    env = _environment(env)
    return {
        name: env[variable].strip()
        for name, variable in KAFKA_SECURITY_ENV.items()
        if env.get(variable, "").strip()
    }


def resolve_region(
    explicit: str | None = None,
    profile_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The AWS region of every client this project makes (S3 through pyarrow and boto3, SQS):
    ``explicit``, else ``AWS_REGION`` (what the AWS CLI and the other SDKs read; botocore
    does not), else ``AWS_DEFAULT_REGION``, else the region of the profile in the AWS config
    file, else us-east-1."""
    return _region_from_env(explicit, env) or profile_region(profile_name)


def _region_from_env(explicit: str | None, env: Mapping[str, str] | None) -> str | None:
    env = _environment(env)
    return explicit or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def s3_endpoint(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """``explicit``, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (boto3 reads them
    itself; pyarrow does not), else None (AWS)."""
    env = _environment(env)
    return explicit or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def s3_settings(
    given: S3Settings | None = None, env: Mapping[str, str] | None = None
) -> S3Settings:
    """``given`` (default: every field unset) with the endpoint and region the environment
    gives where it sets none (``s3_endpoint``, ``resolve_region``; the profile's region is
    looked up when S3 is first used)."""
    given = given or S3Settings()
    return replace(
        given,
        endpoint_url=s3_endpoint(given.endpoint_url, env),
        region_name=_region_from_env(given.region_name, env),
    )


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name) or default


def _number(name: str, default: float, minimum: float) -> float:
    raw = _env(name, str(default))
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a number") from exc
    if value < minimum:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class WatchSettings:
    """Where the sensor and schedule look, how often, and what runs they request."""

    watch_uri: str = DEFAULT_WATCH
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
    run_config_file: str | None = None
    sensor_interval_seconds: int = 30
    max_runs_per_tick: int = 100
    lookback_seconds: float = 900.0
    settle_seconds: float = 2.0
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    group_max_bytes: int = 64 << 20
    group_max_files: int = 5000
    group_min_files: int = 20

    @classmethod
    def from_env(cls) -> WatchSettings:
        suffixes = tuple(
            s.strip() if s.strip().startswith(".") else "." + s.strip()
            for s in _env("WATCH_SUFFIXES", ",".join(DEFAULT_SUFFIXES)).split(",")
            if s.strip()
        )
        watch = _env("WATCH_URI", DEFAULT_WATCH)
        return cls(
            watch_uri=watch if is_s3(watch) else normalize_uri(watch),
            suffixes=suffixes or DEFAULT_SUFFIXES,
            run_config_file=os.environ.get(ENV_PREFIX + "RUN_CONFIG") or None,
            sensor_interval_seconds=int(_number("SENSOR_INTERVAL", 30, 1)),
            max_runs_per_tick=int(_number("MAX_RUNS_PER_TICK", 100, 1)),
            lookback_seconds=_number("LOOKBACK_SECONDS", 900, 0),
            settle_seconds=_number("SETTLE_SECONDS", 2, 0),
            cron=_env("SCHEDULE_CRON", "0 2 * * *"),
            timezone=_env("SCHEDULE_TIMEZONE", "UTC"),
            group_max_bytes=int(_number("GROUP_MAX_BYTES", 64 << 20, 0)),
            group_max_files=int(_number("GROUP_MAX_FILES", 5000, 2)),
            group_min_files=int(_number("GROUP_MIN_FILES", 20, 2)),
        )

    @property
    def is_s3(self) -> bool:
        return is_s3(self.watch_uri)

    def base_run_config(self) -> dict[str, Any]:
        """The ``batch_job`` config the runs start from (read now, so edits apply at the next
        tick). Refuses ``source``, ``members`` and ``batch_id``: each run gets its own."""
        config: dict[str, Any] = {}
        if self.run_config_file:
            path = normalize_uri(self.run_config_file)
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
                loaded = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read the run config file {path}: {exc}") from exc
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"the run config file {path} must hold a mapping of options")
            for name in ("source", "members", "batch_id"):
                if name in loaded:
                    raise ConfigError(
                        f"the run config file {path} sets {name!r}: each run requested by the "
                        "sensor or schedule gets its own object's; remove it"
                    )
            config = dict(loaded)
        if "output" not in config and self.is_s3:
            raise ConfigError(
                f"the sensor and schedule watch {self.watch_uri}: set output (an s3:// URI) in "
                f"the run config file ({ENV_PREFIX}RUN_CONFIG), or results would be written to "
                "the local disk of whichever machine runs the job"
            )
        config.setdefault("output", self._default_output())
        output = check_location(str(config["output"]), "output")  # every run's, refused now
        watched = self.watch_uri.rstrip("/") + "/"
        if (output.rstrip("/") + "/").startswith(watched):
            raise ConfigError(
                f"the output {output} is inside the watched location {self.watch_uri}: the "
                "sensor would take the results (manifest.json, Parquet files) for new uploads. "
                "Write the output elsewhere."
            )
        return config

    def _default_output(self) -> str:
        return normalize_uri(os.path.join(os.path.dirname(self.watch_uri.rstrip("/")), "output"))
