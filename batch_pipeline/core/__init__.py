"""The Dagster-free data plane: storage, sources, planning, readers, processors, results, delivery.

Nothing under this package imports Dagster; every function here can be called and tested alone.
"""
