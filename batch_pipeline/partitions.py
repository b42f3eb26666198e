"""One partition of the ``batch_results`` asset per source object.

The upload sensor adds an object's partition when it requests its run; ``aggregate`` adds it
too when missing (runs started from the launchpad, the CLI or the schedule), so every batch's
results show under their file in the UI: when it was processed, by which run, with what result.
"""

from dagster import DagsterInstance, DynamicPartitionsDefinition

SOURCE_FILES = DynamicPartitionsDefinition(name="source_files")


def partition_key(uri: str) -> str:
    """The partition of a source object: its URI (``s3://bucket/key`` or an absolute path),
    with the few substrings Dagster refuses in a partition key replaced."""
    key = uri
    while "..." in key:
        key = key.replace("...", "._._.")
    for char in "\a\b\f\n\r\t\v\0":
        key = key.replace(char, " ")
    return key


def ensure_partition(instance: DagsterInstance, key: str) -> None:
    """Add ``key`` to the source files' partitions unless it is there."""
    name = SOURCE_FILES.name
    assert name is not None
    if not instance.has_dynamic_partition(name, key):
        instance.add_dynamic_partitions(name, [key])
