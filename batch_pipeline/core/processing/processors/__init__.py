"""Processors, by name. Importing this package registers the built-in ones."""

from batch_pipeline.core.processing.processors import passthrough, validate  # noqa: F401  (registration)
from batch_pipeline.core.processing.processors.base import (
    REGISTRY,
    Processor,
    ProcessorOptions,
    ProcessResult,
    get_processor,
    register,
)

__all__ = [
    "REGISTRY",
    "ProcessResult",
    "Processor",
    "ProcessorOptions",
    "get_processor",
    "register",
]
