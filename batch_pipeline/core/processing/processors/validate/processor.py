"""The ``validate`` processor: every declared column converted and checked, in threads.

Records that break a rule are rejected with their reasons; the valid ones come out with the
declared types (undeclared columns kept, dropped or refused, as ``extra_columns`` says).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.processing.processors.base import (
    ADDED_COLUMNS,
    Processor,
    ProcessResult,
    register,
)
from batch_pipeline.core.processing.processors.validate.checks import _rule_checks, joined_reasons
from batch_pipeline.core.processing.processors.validate.conversion import _convert
from batch_pipeline.core.processing.processors.validate.rules import ColumnRule, ValidateOptions

MAX_CHECK_THREADS = 4  # columns checked at once (at most the CPU count)


@register
class Validate(Processor):
    """Rejects records that break the declared schema, each with its reasons."""

    name = "validate"
    Options = ValidateOptions
    row_independent = True
    options: ValidateOptions

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        problems = [
            f"required column {name!r} is missing (columns: {', '.join(columns)})"
            for name, rule in self.options.columns.items()
            if rule.required and name not in present
        ]
        extra = self.extra_columns(columns)
        if extra:
            problems.append(extra)
        return problems

    def column_warnings(self, columns: Sequence[str]) -> list[str]:
        present = set(columns)
        return [
            f"column {name!r} is declared but not in the file (columns: {', '.join(columns)})"
            for name, rule in self.options.columns.items()
            if not rule.required and name not in present
        ]

    def extra_columns(self, columns: Sequence[str]) -> str | None:
        """With ``extra_columns: error``, what is wrong with the columns the schema does not
        declare (the pipeline's own added columns aside); else None."""
        if self.options.extra_columns != "error":
            return None
        extra = [c for c in columns if c not in self.options.columns and c not in ADDED_COLUMNS]
        if not extra:
            return None
        names = ", ".join(repr(c) for c in extra)
        head = f"column {names} is" if len(extra) == 1 else f"columns {names} are"
        return (
            f"{head} not declared in the schema (extra_columns: error; declared: "
            f"{', '.join(self.options.columns)})"
        )

    def process(self, table: pa.Table) -> ProcessResult:
        extra = self.extra_columns(table.column_names)
        if extra:  # a chunk whose columns the batch's checks could not see (a file set's file)
            raise ConfigError(extra)
        n = table.num_rows

        def check(name: str, rule: ColumnRule) -> tuple[pa.Array, list[tuple[np.ndarray, str]]]:
            if name in table.column_names:
                raw = table.column(name).combine_chunks()
            else:
                raw = pa.nulls(n, type=pa.string())
            typed, present, bad_type = _convert(raw, rule)
            found = [(~present, f"{name}: required value missing")] if rule.required else []
            found.append((bad_type, f"{name}: not a valid {rule.type}"))
            found.extend(_rule_checks(name, rule, raw, typed, present & ~bad_type))
            return typed, found

        # Columns are checked in threads: Arrow's kernels release the GIL, so the columns of a
        # chunk use every core. map keeps the columns' order, so reasons come out the same.
        rules = list(self.options.columns.items())
        workers = min(len(rules), os.cpu_count() or 1, MAX_CHECK_THREADS)
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="validate") as pool:
                results = list(pool.map(lambda item: check(*item), rules))
        else:
            results = [check(name, rule) for name, rule in rules]
        reject = np.zeros(n, dtype=bool)
        checks: list[tuple[np.ndarray, str]] = []
        typed_columns: dict[str, pa.Array] = {}
        for (name, _), (typed, found) in zip(rules, results, strict=True):
            typed_columns[name] = typed
            checks.extend(found)
        for mask, _ in checks:
            reject |= mask
        valid = self._typed_table(table, typed_columns)
        rejected = np.flatnonzero(reject)
        reasons = joined_reasons(checks, rejected)
        keep = pa.array(~reject)
        return ProcessResult(valid.filter(keep), rejected, reasons)

    def _typed_table(self, table: pa.Table, typed: dict[str, pa.Array]) -> pa.Table:
        names = list(table.column_names)
        if self.options.extra_columns == "drop":
            names = [n for n in names if n in typed]
        arrays = [typed[n] if n in typed else table.column(n) for n in names]
        for name, array in typed.items():
            if name not in names:
                names.append(name)
                arrays.append(array)
        return pa.Table.from_arrays(arrays, names=names)
