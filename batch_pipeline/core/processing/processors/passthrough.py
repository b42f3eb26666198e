"""``passthrough``: every record kept, unchanged."""

from __future__ import annotations

import pyarrow as pa

from batch_pipeline.core.processing.processors.base import Processor, ProcessResult, register


@register
class Passthrough(Processor):
    """Keeps every record as read. Useful to convert formats, and as the baseline."""

    name = "passthrough"
    row_independent = True

    def process(self, table: pa.Table) -> ProcessResult:
        return ProcessResult.keep_all(table)
