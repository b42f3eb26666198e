"""Processors that fail or dawdle on purpose, for the failure-handling tests.

Load them by module name, as a user loads custom processors: ``processor_modules=
("batch_pipeline_tests.fault_processors",)`` (also in subprocesses, which import the module
again). Every name starts with ``fault_`` so that none clashes with another registered
processor. They raise real exceptions from inside ``process``; nothing in the pipeline is
patched.

- ``fault_fail_when``: fails on a chunk holding a record whose ``column`` equals ``value``
  (compared as text), with the error of ``kind``: ``transient`` (ConnectionResetError, worth a
  retry), ``permanent`` (ValueError, bad data), ``timeout`` (TimeoutError) or ``memory``
  (MemoryError). With ``marker`` set it fails only while that file exists, so a test can "fix"
  the input by deleting it; with ``remove_marker`` too, failing deletes the marker, so the fault
  happens once (the next attempt succeeds). With ``times`` (and a ``counter`` file), only the
  first ``times`` matching attempts fail. Other chunks keep every record.
- ``fault_slow``: sleeps ``seconds`` per chunk, then keeps every record.
- ``fault_kalman``: ``kalman`` (the same options) that sleeps ``seconds`` per bucket and, while
  the file ``marker`` exists, fails (a ValueError from the processor) on a bucket holding the
  key ``fail_key``.
- ``fault_leads``: ``leads`` (the same options) that sleeps ``seconds`` per bucket and fails
  every bucket while the file ``marker`` exists.
- ``fault_pause``: on the chunk holding ``column == value``, creates ``ready`` and waits (at
  most ``timeout`` seconds) until ``go`` exists; every record is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.processing.processors.base import (
    REGISTRY,
    Processor,
    ProcessorOptions,
    ProcessResult,
    register,
)
from batch_pipeline.core.processing.processors.kalman import Kalman, KalmanOptions
from batch_pipeline.core.processing.processors.keyed import (
    KeyedContext,
    KeyedResult,
    KeyState,
    key_text,
)
from batch_pipeline.core.processing.processors.leads.processor import Leads, LeadsOptions

FaultKind = Literal["transient", "permanent", "timeout", "memory"]


def holds(table: pa.Table, column: str, value: str) -> bool:
    """Whether any record of ``table`` has ``column`` equal to ``value`` (as text)."""
    if column not in table.column_names:
        return False
    values = pc.cast(table.column(column), pa.string())
    return bool(pc.any(pc.equal(values, value)).as_py())


def fault(kind: FaultKind, what: str) -> Exception:
    """The exception a fault of ``kind`` raises."""
    if kind == "transient":
        return ConnectionResetError(104, f"injected transient fault: {what}")
    if kind == "timeout":
        return TimeoutError(f"injected time-out: {what}")
    if kind == "memory":
        return MemoryError(f"injected out-of-memory: {what}")
    return ValueError(f"injected permanent fault: {what}")


class FailWhenOptions(ProcessorOptions):
    column: str
    value: str
    kind: FaultKind = "permanent"
    marker: str | None = None
    remove_marker: bool = False
    times: int | None = None
    counter: str | None = None


class FailWhen(Processor):
    name = "fault_fail_when"
    Options = FailWhenOptions

    def process(self, table: pa.Table) -> ProcessResult:
        options = self.options
        assert isinstance(options, FailWhenOptions)
        armed = options.marker is None or os.path.exists(options.marker)
        if armed and holds(table, options.column, options.value) and self._counted(options):
            if options.marker is not None and options.remove_marker:
                os.remove(options.marker)
            raise fault(options.kind, f"record with {options.column}={options.value}")
        return ProcessResult.keep_all(table)

    @staticmethod
    def _counted(options: FailWhenOptions) -> bool:
        """Whether this matching attempt is among the first ``times`` (always without)."""
        if options.times is None:
            return True
        assert options.counter is not None, "times needs a counter file"
        seen = 0
        if os.path.exists(options.counter):
            with open(options.counter) as f:
                seen = int(f.read() or 0)
        with open(options.counter, "w") as f:
            f.write(str(seen + 1))
        return seen < options.times


class SlowOptions(ProcessorOptions):
    seconds: float = 0.1


class Slow(Processor):
    name = "fault_slow"
    Options = SlowOptions

    def process(self, table: pa.Table) -> ProcessResult:
        assert isinstance(self.options, SlowOptions)
        time.sleep(self.options.seconds)
        return ProcessResult.keep_all(table)


class PauseOptions(ProcessorOptions):
    column: str
    value: str
    ready: str
    go: str
    timeout: float = 60.0


class Pause(Processor):
    name = "fault_pause"
    Options = PauseOptions

    def process(self, table: pa.Table) -> ProcessResult:
        options = self.options
        assert isinstance(options, PauseOptions)
        if holds(table, options.column, options.value):
            with open(options.ready, "w") as f:
                f.write("ready")
            deadline = time.monotonic() + options.timeout
            while not os.path.exists(options.go) and time.monotonic() < deadline:
                time.sleep(0.01)
        return ProcessResult.keep_all(table)


for _processor in (FailWhen, Slow, Pause):
    if _processor.name not in REGISTRY:  # imported again under another name: keep the first
        register(_processor)


class FaultKalmanOptions(KalmanOptions):
    seconds: float = 0.0
    fail_key: str | None = None
    marker: str | None = None


@register
class FaultKalman(Kalman):
    name = "fault_kalman"
    Options = FaultKalmanOptions

    def process_keys(self, table: pa.Table, states: Mapping[str, KeyState]) -> KeyedResult:
        options = self.options
        assert isinstance(options, FaultKalmanOptions)
        time.sleep(options.seconds)
        armed = options.marker is None or os.path.exists(options.marker)
        if options.fail_key is not None and armed:
            keys = key_text(table.column(options.key)).to_pylist()
            if options.fail_key in keys:
                raise ValueError(f"fault_kalman fails on key {options.fail_key!r}")
        return super().process_keys(table, states)


class FaultLeadsOptions(LeadsOptions):
    seconds: float = 0.0
    marker: str | None = None  # while this file exists, every bucket fails


@register
class FaultLeads(Leads):
    """``leads`` (the same options) that sleeps ``seconds`` per bucket before its upsert, and
    fails while ``marker`` exists."""

    name = "fault_leads"
    Options = FaultLeadsOptions

    def process_bucket(
        self, table: pa.Table, states: Mapping[str, KeyState], context: KeyedContext
    ) -> KeyedResult:
        options = self.options
        assert isinstance(options, FaultLeadsOptions)
        time.sleep(options.seconds)
        if options.marker is not None and os.path.exists(options.marker):
            raise ValueError("fault_leads fails while its marker exists")
        return super().process_bucket(table, states, context)
