"""The automation: the upload sensor (``uploads``), the nightly schedule (``nightly``), the alert
sensors (``alerts``), and the run requests and listing the sensor and the schedule share
(``requests``)."""

import warnings

# Dagster 1.13's @sensor passes ``owners=None`` on to SensorDefinition, which then warns that
# the (unused) parameter is in beta, in every process that loads the definitions, the CLI's
# included. Only that message is silenced.
warnings.filterwarnings(
    "ignore", message="Parameter `owners` of initializer `SensorDefinition.__init__`"
)
