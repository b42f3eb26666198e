"""The benchmarks, run from the repository root as modules: ``python -m benchmarks.throughput``,
``python -m benchmarks.small_files``, ``python -m benchmarks.executor_overhead`` and
``python -m benchmarks.records`` (the generated input). ``benchmarks.harness`` is what they
share: each measurement in a process of its own, peak memory, the options, tables and reports.
"""
