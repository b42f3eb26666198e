"""Record processors, by name: a chunk's table in, valid records and rejects out.

Importing this package registers the built-in ones (``passthrough``, ``validate``, and the
keyed ``kalman`` and ``leads``). A processor reads and writes no storage:
``processing.run.run_chunk`` runs it on one chunk (a keyed one, the keyed stage on one bucket).
"""

from batch_pipeline.core.processing.processors import (  # noqa: F401  (registration)
    kalman,
    passthrough,
    validate,
)
from batch_pipeline.core.processing.processors.base import (
    REGISTRY,
    Processor,
    ProcessorOptions,
    ProcessResult,
    get_processor,
    register,
)
from batch_pipeline.core.processing.processors.leads import processor as _leads  # noqa: F401

__all__ = [
    "REGISTRY",
    "ProcessResult",
    "Processor",
    "ProcessorOptions",
    "get_processor",
    "register",
]
