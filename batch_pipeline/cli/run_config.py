"""The run config of ``batch_job`` and ``redrive_job`` built from the command's arguments:
``--processor-options`` parsed (JSON or YAML, inline or ``@FILE``), the executor and the log
level. Nothing here imports Dagster: it is the first step of a run's pre-check.
"""

import argparse
import json
import os
from typing import Any

OPTIONS_FLAG = "--processor-options"


def processor_options(value: str | None) -> dict[str, Any]:
    """``--processor-options``: a JSON or YAML object, inline or ``@path`` to a ``.json``,
    ``.yaml`` or ``.yml`` file; {} when not given. Parsed after argparse, in the run's
    pre-check, so that a mistake is a ConfigError (one ``error:`` line, exit 2, the JSON error
    object with ``--json``) naming the file, and the line and column of a syntax error."""
    from batch_pipeline.core.common.errors import ConfigError

    if value is None:
        return {}
    where, kind = "", None
    if value.startswith("@"):
        path = value[1:]
        if not path:
            raise ConfigError(f"{OPTIONS_FLAG}: @ needs a file name (@schema.yaml)")
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as exc:
            raise ConfigError(f"{OPTIONS_FLAG}: cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{OPTIONS_FLAG}: cannot read {path}: not UTF-8 text") from exc
        where = f"{path}: "
        kind = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(os.path.splitext(path)[1])
    parsed = _parse_options(value, kind, f"{OPTIONS_FLAG}: {where}")
    if not isinstance(parsed, dict):
        found = "nothing" if parsed is None else f"a {type(parsed).__name__}"
        raise ConfigError(
            f"{OPTIONS_FLAG}: {where}must be a JSON or YAML object (a mapping of options), not "
            f"{found}"
        )
    return parsed


def _parse_options(text: str, kind: str | None, where: str) -> Any:
    """``text`` as JSON (``kind`` json), YAML (yaml), or either (None: JSON first, then YAML,
    which also reads JSON; a text opening with '{' or '[' that neither reads is reported as
    JSON). ConfigError, starting with ``where``, on a syntax error."""
    import yaml

    from batch_pipeline.core.common.errors import ConfigError

    json_error = yaml_error = None
    if kind in ("json", None):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = exc
    if kind in ("yaml", None):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            yaml_error = exc
    if json_error is not None and (kind == "json" or text.lstrip()[:1] in ("{", "[")):
        raise ConfigError(
            f"{where}not valid JSON: {json_error.msg} at line {json_error.lineno}, column "
            f"{json_error.colno}"
        )
    mark = getattr(yaml_error, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(yaml_error, "problem", None) or str(yaml_error)
    raise ConfigError(f"{where}not valid YAML: {problem}{at}")


def execution_config(args: argparse.Namespace) -> dict[str, Any]:
    """The executor and the console log level of a run (``run`` and ``redrive`` alike)."""
    if args.executor == "multiprocess":
        execution: dict[str, Any] = {"multiprocess": {"max_concurrent": args.max_concurrent}}
    else:
        execution = {"in_process": {}}
    # Dagster's console logger prints a step failure at ERROR with its whole stack trace: the
    # summary carries the error, so below --verbose only CRITICAL (nothing of ours) shows.
    level = "INFO" if args.verbose else "CRITICAL"
    # No --ledger here: run config is stored in the instance and shown in the UI, and a ledger
    # URL may hold a password. The run gets it through the environment (ledger_environment).
    return {
        "execution": {"config": execution},
        "loggers": {"console": {"config": {"log_level": level}}},
    }


def run_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``batch_job`` for ``batch-pipeline run`` arguments: the first step of
    the run's pre-check (``--processor-options`` is parsed here: ConfigError)."""
    names = [n.strip() for n in args.column_names.split(",")] if args.column_names else None
    config: dict[str, Any] = {
        "source": args.source,
        "format": args.format,
        "compression": args.compression,
        "csv": {
            "delimiter": args.delimiter,
            "has_header": not args.no_header,
            "column_names": names,
        },
        "json_records_path": args.json_records_path,
        "excel_sheets": args.sheets,
        "processor": args.processor,
        "processor_options": processor_options(args.processor_options),
        "processor_modules": args.processor_modules,
        "chunking": {
            "chunk_records": args.chunk_records,
            "auto": args.auto_chunk_records,
            "max_chunks": args.max_chunks,
            "max_buckets": args.max_buckets,
            "chunk_bytes": args.chunk_bytes,
            "scan": not args.no_scan,
            "heavy_records": args.heavy_records,
        },
        "output": args.output,
        "delivery": {
            "target": args.deliver,
            "records_per_message": args.records_per_message,
            "key_column": args.deliver_key,
        },
        "retry": {
            "max_retries": args.max_retries,
            "base_delay_seconds": args.retry_delay,
            "max_delay_seconds": args.retry_max_delay,
        },
        "failures": {
            "tolerated_failure_count": args.tolerated_failure_count,
            "tolerated_failure_percentage": args.tolerated_failure_percentage,
            "dead_letter_queue": args.dead_letter_queue,
        },
        "force": args.force,
        "redeliver": args.redeliver,
        "batch_id": args.batch_id,
        "customer_id": args.customer_id,
        "tenant_id": args.tenant_id,
        "deployment": args.deployment,
        "snapshot_id": args.snapshot_id,
    }
    return {"ops": {"initialize": {"config": config}}, **execution_config(args)}
