"""Initialize a batch: check its request before any work and return the spec of the batch.

``prepare_batch`` is what the ``initialize`` op runs: it checks the source and the config and
returns the BatchSpec every later stage works from; ``prepare_kwargs`` maps a run config to its
arguments (declared once, for the op and the CLI); ``prepare_redrive`` rebuilds the spec of a
batch from the config the ledger kept; ``check_queue`` refuses an SQS target that no queue could
be named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import (
    BatchSpec,
    ChunkingSettings,
    CsvOptions,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
)
from batch_pipeline.core.common.naming import check_batch_id, check_location
from batch_pipeline.core.common.settings import (
    Batch,
    Chunking,
    Csv,
    Delivery,
    Failures,
    Retry,
    Section,
    Setting,
)
from batch_pipeline.core.common.text import shown
from batch_pipeline.core.delivery.kafka_sink import is_kafka_target, parse_kafka_target
from batch_pipeline.core.delivery.sinks import is_sqs_target
from batch_pipeline.core.inputs.filesets import inspect_file_set, is_file_set, relative_key
from batch_pipeline.core.inputs.sources import derive_batch_id, inspect_source
from batch_pipeline.core.ledger import Ledger
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.stores.storage import Storage, normalize_uri

DELIVERY_TARGETS = "local, none, sqs://QUEUE_NAME, a queue URL or kafka://HOST:PORT/TOPIC"


def prepare_batch(
    storage: Storage,
    source: str,
    *,
    members: tuple[str, ...] | None = None,
    format: str = Batch.format.default,
    compression: str = Batch.compression.default,
    csv: CsvOptions | None = None,
    json_records_path: str = Batch.json_records_path.default,
    excel_sheets: tuple[str, ...] | None = None,
    processor: str = Batch.processor.default,
    processor_options: dict[str, Any] | None = None,
    processor_modules: tuple[str, ...] = (),
    chunking: ChunkingSettings | None = None,
    output: str = Batch.output.default,
    delivery: DeliverySettings | None = None,
    retry: RetrySettings | None = None,
    failures: FailureSettings | None = None,
    batch_id: str | None = None,
    ids: dict[str, str | None] | None = None,
    config: dict[str, Any] | None = None,
    force: bool = Batch.force.default,
    redeliver: bool = Batch.redeliver.default,
) -> BatchSpec:
    """Validate a batch request before any work. Raises ConfigError or SourceError naming the
    source and what is wrong."""
    # Before anything is read: the id and the output name where results go, the source what
    # is read.
    if batch_id is not None:
        check_batch_id(batch_id)
    output_root = check_location(output, "output")
    check_location(source, "source")
    chunking = chunking or ChunkingSettings()
    delivery = delivery or DeliverySettings()
    retry = retry or RetrySettings()
    failures = failures or FailureSettings()
    if wrong := _out_of_range(chunking, Chunking):
        name, setting, value = wrong
        raise ConfigError(f"{name} {_range(setting)}, got {value}")
    _check_delivery(delivery)
    _check_failures(retry, failures)
    proc = get_processor(processor, processor_options, processor_modules)
    config = dict(config or {})
    if is_file_set(source):
        spec_source = inspect_file_set(
            storage, source, members, format, compression, csv, json_records_path, excel_sheets
        )
        # The set is fixed from now on: a resume or a redrive reads these very files.
        config["members"] = [relative_key(spec_source.uri, m.uri) for m in spec_source.members]
    elif members:
        raise ConfigError(f"members are for a folder or prefix source; {source} is one file")
    else:
        spec_source = inspect_source(
            storage,
            source,
            fmt=format,
            compression=compression,
            csv_options=csv,
            json_records_path=json_records_path,
            excel_sheets=excel_sheets,
        )
    # A set's files each have their own columns (a file lacking one gets its records rejected
    # with the reason): only a single file is refused here for a missing column.
    warnings: list[str] = []
    if spec_source.columns is not None and not spec_source.is_file_set:
        problems = proc.check_columns(spec_source.columns)
        if problems:
            raise ConfigError(f"{spec_source.uri}: " + "; ".join(problems))
        warnings = [f"{spec_source.uri}: {w}" for w in proc.column_warnings(spec_source.columns)]
    resolved_id = check_batch_id(batch_id or derive_batch_id(spec_source.info))
    return BatchSpec(
        batch_id=resolved_id,
        source=spec_source,
        processor=processor,
        processor_options=dict(processor_options or {}),
        chunking=chunking,
        output_root=output_root,
        delivery=delivery,
        ids=dict(ids or {}),
        config=config,
        retry=retry,
        failures=failures,
        processor_modules=tuple(processor_modules),
        mode="force" if force else "run",
        warnings=tuple(warnings),
        redeliver=redeliver,
    )


def prepare_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``prepare_batch`` for a ``batch_job`` run config (what
    ``ops.initialize.config`` holds: the shape of ``config.BatchConfig``, whose
    ``prepare_kwargs`` calls this). Declared once, Dagster-free, so that the CLI checks a run
    exactly as ``initialize`` will, before Dagster starts. Missing keys take their
    declared defaults (``core.common.settings``)."""
    given = {**Batch.defaults(), **config}
    csv = {**Csv.defaults(), **(config.get("csv") or {})}
    names = csv["column_names"]
    chunking = {k: v for k, v in (config.get("chunking") or {}).items() if k != "auto"}
    ids = ("customer_id", "tenant_id", "deployment", "snapshot_id")
    source, output = config["source"], given["output"]
    return {
        "source": source,
        "members": tuple(given["members"]) if given["members"] else None,
        "format": given["format"],
        "compression": given["compression"],
        "csv": CsvOptions(
            delimiter=csv["delimiter"],
            quote_char=csv["quote_char"] or None,
            has_header=csv["has_header"],
            column_names=tuple(names) if names else None,
        ),
        "json_records_path": given["json_records_path"],
        "excel_sheets": tuple(given["excel_sheets"]) if given["excel_sheets"] else None,
        "processor": given["processor"],
        "processor_options": dict(given["processor_options"] or {}),
        "processor_modules": tuple(given["processor_modules"] or ()),
        "chunking": ChunkingSettings(**chunking),
        "output": output,
        "delivery": DeliverySettings(**(config.get("delivery") or {})),
        "retry": RetrySettings(**(config.get("retry") or {})),
        "failures": FailureSettings(**(config.get("failures") or {})),
        "force": bool(given["force"]),
        "redeliver": bool(given["redeliver"]),
        "batch_id": given["batch_id"],
        "ids": {name: given[name] for name in ids},
        # Kept in the ledger for redrive: paths made absolute, so that a redrive from another
        # working directory finds the same source and output.
        "config": {**config, "source": normalize_uri(source), "output": normalize_uri(output)},
    }


def prepare_redrive(storage: Storage, ledger: Ledger, batch_id: str, prepare: Any) -> BatchSpec:
    """The spec of an earlier batch, rebuilt from the config the ledger kept, in redrive mode.

    ``prepare(config)`` turns a stored run config into a BatchSpec (the Dagster layer passes
    its config class's). Refuses when the source changed since the batch was planned: its
    chunks would no longer describe the same records."""
    check_batch_id(batch_id)
    state = ledger.batch(batch_id)
    if state is None:
        raise ConfigError(f"batch {batch_id} is not in the ledger at {ledger.safe_url}")
    spec = prepare(state.config_dict())
    if spec.source.info.fingerprint != state.fingerprint:
        raise ConfigError(
            f"the source of batch {batch_id}, {state.source_uri}, changed since it was planned "
            f"(fingerprint {state.fingerprint} is now {spec.source.info.fingerprint}); redrive "
            "would mix two versions of it: run the new version as its own batch"
        )
    # A redrive never delivers again what was delivered, even if the stored run asked to.
    return replace(spec, batch_id=batch_id, mode="redrive", redeliver=False)


# SQS's rule for a queue's name: 1-80 characters of A-Z a-z 0-9 - _, a FIFO queue's ending
# with .fifo.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")


def check_queue(target: str, what: str) -> None:
    """An ``sqs://NAME`` target names a queue SQS could have (a URL, ``sqs://URL`` included, is
    taken as given): else ConfigError now, not after every chunk was processed."""
    if not target.startswith("sqs://"):
        return
    name = target[len("sqs://") :]
    if name.startswith(("https://", "http://")) or _QUEUE_NAME.fullmatch(name):
        return
    raise ConfigError(
        f"{what} {shown(repr(target))} has no valid queue name: use sqs://QUEUE_NAME (1-80 "
        "characters of A-Z a-z 0-9 - _, a FIFO queue's ending with .fifo) or the queue's URL"
    )


def _out_of_range(values: object, section: type[Section]) -> tuple[str, Setting, Any] | None:
    """The first setting of ``section`` whose value in ``values`` (the section's dataclass)
    lies outside the range it declares, with that value; None when every one is in range or
    not set."""
    for name, setting in section.settings().items():
        value = getattr(values, name, None)
        if value is None:
            continue
        # "not inside" rather than "outside": NaN compares false with everything.
        if (setting.ge is not None and not value >= setting.ge) or (
            setting.le is not None and not value <= setting.le
        ):
            return name, setting, value
    return None


def _range(setting: Setting) -> str:
    """The range ``setting`` declares, in the words of an error: "must be at least 1", "must
    not be negative", "must be between 0 and 100"."""
    if setting.ge is not None and setting.le is not None:
        return f"must be between {setting.ge:g} and {setting.le:g}"
    if setting.ge == 0:
        return "must not be negative"
    if setting.ge is not None:
        return f"must be at least {setting.ge:g}"
    return f"must be at most {setting.le:g}"


def _check_delivery(delivery: DeliverySettings) -> None:
    target = delivery.target
    if is_kafka_target(target):
        parse_kafka_target(target)  # ConfigError now, not after every chunk was processed
    elif target not in ("local", "none") and not is_sqs_target(target):
        raise ConfigError(f"Unknown delivery target {target!r}: use {DELIVERY_TARGETS}")
    check_queue(target, "delivery target")
    if wrong := _out_of_range(delivery, Delivery):
        name, setting, _ = wrong
        raise ConfigError(f"{name} {_range(setting)}")


def _check_failures(retry: RetrySettings, failures: FailureSettings) -> None:
    if wrong := _out_of_range(retry, Retry):
        raise ConfigError(f"retry settings {_range(wrong[1])}")
    if wrong := _out_of_range(failures, Failures):
        name, setting, _ = wrong
        raise ConfigError(f"{name} {_range(setting)}")
    queue = failures.dead_letter_queue
    if queue and not is_sqs_target(queue):
        raise ConfigError(f"dead_letter_queue {queue!r} must be sqs://QUEUE_NAME or a queue URL")
    if queue:
        check_queue(queue, "dead_letter_queue")
