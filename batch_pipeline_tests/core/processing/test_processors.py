"""The processor registry, its option checking, and the passthrough processor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors import (
    REGISTRY,
    Processor,
    ProcessorOptions,
    ProcessResult,
    get_processor,
    register,
)
from batch_pipeline.core.processing.processors import base as processors_base


def test_builtin_processors_are_registered() -> None:
    assert {"passthrough", "validate"} <= set(REGISTRY)
    assert get_processor("passthrough").name == "passthrough"
    assert get_processor("validate", {"columns": {"a": {}}}).name == "validate"


def test_unknown_processor_names_the_available_ones() -> None:
    with pytest.raises(ConfigError) as info:
        get_processor("no-such-processor")
    message = str(info.value)
    assert "'no-such-processor'" in message
    assert "passthrough" in message and "validate" in message


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="passthrough"):
        get_processor("passthrough", {"typo": 1})


def test_missing_required_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="columns"):
        get_processor("validate", {})


def test_passthrough_keeps_every_record_unchanged() -> None:
    table = pa.table({"a": [1, None, 3], "b": ["x", "y", None]})
    result = get_processor("passthrough").process(table)
    assert result.valid.equals(table)
    assert result.rejected.dtype == np.int64 and result.rejected.size == 0
    assert result.reasons.type == pa.string() and len(result.reasons) == 0


def test_passthrough_on_an_empty_table() -> None:
    table = pa.table({"a": pa.array([], pa.int64())})
    result = get_processor("passthrough").process(table)
    assert result.valid.num_rows == 0 and result.valid.schema == table.schema


def test_processors_are_independent_instances() -> None:
    first = get_processor("validate", {"columns": {"a": {"type": "int64"}}})
    second = get_processor("validate", {"columns": {"b": {"type": "string"}}})
    assert first is not second
    assert list(first.options.columns) == ["a"]  # type: ignore[attr-defined]


def test_register_adds_a_processor_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processors_base, "REGISTRY", dict(processors_base.REGISTRY))

    class EveryOther(Processor):
        name = "every_other"

        class Options(ProcessorOptions):
            keep_first: bool = True

        def process(self, table: pa.Table) -> ProcessResult:
            rows = np.arange(table.num_rows)
            keep = rows % 2 == (0 if self.options.keep_first else 1)  # type: ignore[attr-defined]
            rejected = rows[~keep]
            reasons = pa.array(["odd"] * rejected.size, type=pa.string())
            return ProcessResult(table.filter(pa.array(keep)), rejected, reasons)

    register(EveryOther)
    processor = get_processor("every_other", {"keep_first": False})
    result = processor.process(pa.table({"a": [0, 1, 2, 3]}))
    assert result.valid.column("a").to_pylist() == [1, 3]
    assert result.rejected.tolist() == [0, 2]
    with pytest.raises(ConfigError, match="keep_frist"):
        get_processor("every_other", {"keep_frist": True})
    with pytest.raises(ValueError, match="twice"):
        register(EveryOther)
    with pytest.raises(ConfigError, match="every_other"):
        get_processor("nope")
