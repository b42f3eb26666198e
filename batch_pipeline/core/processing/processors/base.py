"""The processor interface and registry.

A processor turns a chunk's table into valid records plus rejected record indices, each with a
reason. It works on whole columns (Arrow, pandas, numpy), never record by record. It does not
read or write storage: the chunk runner (``processing.run.run_chunk``) does that, and checks
that every record came out once.

Adding a processor: write a subclass in a module of this package, give it a ``name`` and (if
it takes options) an ``Options`` pydantic model, decorate it with ``@register``, and import the
module in ``processors/__init__.py``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from batch_pipeline.core.common.errors import ConfigError

# Columns the pipeline adds to the records itself (Excel's ``excel.WORKSHEET_COLUMN``, a file
# set's ``filesets.FILE_COLUMN``): never a column a schema must declare.
ADDED_COLUMNS = frozenset({"_worksheet", "_file"})


class ProcessorOptions(BaseModel):
    """Options of a processor. Unknown keys are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class ProcessResult:
    """``valid``: the records kept, in input order. ``rejected``: indices into the input table,
    ascending, with one reason each. ``counts``: named totals of the processor's own (summed
    over the batch into its summary, manifest and asset metadata)."""

    valid: pa.Table
    rejected: np.ndarray
    reasons: pa.Array
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def keep_all(cls, table: pa.Table) -> ProcessResult:
        return cls(table, np.empty(0, dtype=np.int64), pa.array([], type=pa.string()))


class Processor(ABC):
    """Base class of processors. Instances are cheap and stateless between chunks."""

    name: ClassVar[str]
    Options: ClassVar[type[ProcessorOptions]] = ProcessorOptions
    #: Each record's outcome depends on that record alone (no state across records, no step
    #: over the whole table) and ``process`` may run in two threads at once: the chunk runner
    #: may then give it a big chunk in slices, two at a time (``processing.slices``).
    row_independent: ClassVar[bool] = False

    def __init__(self, options: ProcessorOptions) -> None:
        self.options = options

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        """Problems with the source's columns, found before any chunk runs (empty: none): the
        batch is refused."""
        return []

    def column_warnings(self, columns: Sequence[str]) -> list[str]:
        """What is odd about the source's columns without being wrong (a declared optional
        column the file lacks, say): the batch runs, and the warnings reach the log, the
        manifest and the summary."""
        return []

    @abstractmethod
    def process(self, table: pa.Table) -> ProcessResult:
        """Split ``table`` into valid records and rejected ones. Must account for every row."""


REGISTRY: dict[str, type[Processor]] = {}


def register(cls: type[Processor]) -> type[Processor]:
    """Class decorator: make a processor available by its ``name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"processor {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def import_processor_modules(modules: Sequence[str]) -> None:
    """Import modules that register processors of their own (``@register`` at import)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"processor module {module!r} cannot be imported: {exc}") from exc


def get_processor(
    name: str, options: dict[str, Any] | None = None, modules: Sequence[str] = ()
) -> Processor:
    """The processor ``name`` with validated options, after importing ``modules`` (custom
    processors); ConfigError says what is wrong."""
    import_processor_modules(modules)
    if name not in REGISTRY:
        raise ConfigError(
            f"Unknown processor {name!r}: available are {', '.join(sorted(REGISTRY))}"
        )
    cls = REGISTRY[name]
    try:
        parsed = cls.Options.model_validate(options or {})
    except ValidationError as exc:
        raise ConfigError(f"Invalid options for processor {name!r}: {_one_line(exc)}") from exc
    return cls(parsed)


def _one_line(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``columns.age.type: Input should be ... (got 'integer')``
    for each, the setting first."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "options"
        text = f"{where}: {error['msg']}"
        value = error.get("input")
        if isinstance(value, str | int | float | bool) and error["type"] != "missing":
            text += f" (got {value!r})"
        parts.append(text)
    return "; ".join(parts)
