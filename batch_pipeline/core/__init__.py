"""The Dagster-free core, one package per stage of the job: ``initialize``, ``planning``,
``processing``, ``aggregation``, ``delivery``; what they share: ``common`` (models, settings,
statuses, errors), ``stores`` (storage), ``inputs`` (sources and readers), ``columns`` (types),
``ledger``, ``tuning``; and ``automation`` (what the sensors and the schedule decide) and
``pipeline`` (every stage in one process). ``docs/architecture.md`` has a paragraph per package.

Nothing under this package imports Dagster or reads the environment (tests check both); every
function here can be called and tested alone, given its settings as arguments.
"""
