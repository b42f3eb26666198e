"""The Dagster UI for real: ``dagster-webserver`` and ``dagster-daemon`` on a temporary instance,
GraphQL over HTTP, and headless Chromium (Debian's, driven by selenium) on the pages a person
uses: the launchpad, a run, the ``batch_results`` asset, the automation overview.

One webserver and one daemon serve the whole module. Screenshots and the servers' logs go to
``test-artifacts/ui/``. The browser tests skip when /usr/bin/chromium or /usr/bin/chromedriver
is missing (``make browser`` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import yaml

from batch_pipeline.config import BatchConfig, ChunkingConfig
from batch_pipeline_tests import ui_harness as h

pytestmark = pytest.mark.browser

JOB = "batch_job"
RECORDS = 400
CHUNK_RECORDS = 100
CHUNKS = 4  # RECORDS / CHUNK_RECORDS
# Config fields of batch_job's initialize op the launchpad must show.
LAUNCHPAD_FIELDS = ["source", "chunking", "processor"]
# Progress metadata each process_chunk step's output must show on the run page.
PROGRESS_METADATA_KEYS = [
    "chunks_succeeded",
    "chunks_total",
    "percent_complete",
    "records_per_second",
]
# Metadata of the batch_results materialization shown on the run page and the asset page.
RESULTS_METADATA_KEYS = ["records_in", "records_out", "records_rejected", "manifest"]
RESULTS_ASSET = "batch_results"
# Numeric metadata of batch_results the asset's Plots tab must draw.
PLOTTED_KEYS = ["chunk_records", "records_per_second", "records_in"]
UPLOAD_SENSOR = "batch_job_on_upload"
AUTOMATION_NAMES = [
    UPLOAD_SENSOR,
    "batch_job_nightly_schedule",
    "batch_run_failure_alert",
    "batch_dead_letter_alert",
]
SENSOR_INTERVAL_SECONDS = 5
SENSOR_RUN_TIMEOUT = 120.0
UPLOAD_RECORDS = 250


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal, past pytest's output capture (screenshot and log paths)."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def ui_dirs() -> Iterator[dict[str, Path]]:
    """Temporary folders of the module: the instance, a working directory, inputs, outputs,
    the folder the upload sensor watches. Removed at the end."""
    root = h.temp_dir("batch-ui-")
    dirs = {
        name: root / name
        for name in ("home", "work", "input", "output", "inbox", "sensor_output", "staging")
    }
    for path in dirs.values():
        path.mkdir()
    dirs["root"] = root
    shutil.copy(h.REPO / "dagster.yaml", dirs["home"] / "dagster.yaml")
    yield dirs
    h.remove_dir(root)


def _server_env(dirs: dict[str, Path]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "BATCH_PIPELINE_", "AWS_", "PYTEST_"))
    }
    run_config = dirs["root"] / "sensor_run_config.yaml"
    run_config.write_text(
        yaml.safe_dump(
            {"output": str(dirs["sensor_output"]), "chunking": {"chunk_records": CHUNK_RECORDS}}
        )
    )
    env.update(
        {
            "DAGSTER_HOME": str(dirs["home"]),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            "BATCH_PIPELINE_LEDGER_URL": f"sqlite:///{dirs['root'] / 'ledger.db'}",
            "BATCH_PIPELINE_WATCH_URI": str(dirs["inbox"]),
            "BATCH_PIPELINE_SENSOR_INTERVAL": str(SENSOR_INTERVAL_SECONDS),
            "BATCH_PIPELINE_RUN_CONFIG": str(run_config),
            # No run reaches AWS: fake credentials, an endpoint nothing listens on.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_CONFIG_FILE": str(dirs["root"] / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(dirs["root"] / "no-aws-credentials"),
        }
    )
    return env


@pytest.fixture(scope="module")
def dagster_ui(request: pytest.FixtureRequest, ui_dirs: dict[str, Path]) -> Iterator[h.DagsterUI]:
    """dagster-webserver and dagster-daemon on the module's instance, stopped by PID (and
    process group) at the end."""
    shutil.rmtree(h.ARTIFACTS, ignore_errors=True)  # no screenshot of an earlier run stays
    logs = h.ARTIFACTS / "logs"
    ui = h.DagsterUI(
        workspace=h.REPO / "workspace.yaml",
        env=_server_env(ui_dirs),
        logs=logs,
        cwd=ui_dirs["work"],
    )
    started = time.monotonic()
    try:
        ui.start()
        _say(
            request,
            f"dagster UI at {ui.url} (location {ui.location}) up in "
            f"{time.monotonic() - started:.1f}s; logs in {logs}",
        )
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser(ui_dirs: dict[str, Path]) -> Iterator[object]:
    """Headless Chromium on a fresh profile; quit at the end."""
    reason = h.browser_missing()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("selenium", reason="selenium is missing: pip install -e '.[dev]'")
    profile = h.temp_dir("batch-ui-chromium-")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # selenium-manager, were it ever asked: no downloads
        driver = h.start_chromium(profile)
    try:
        yield driver
    finally:
        driver.quit()
        h.remove_dir(profile)


@pytest.fixture(autouse=True)
def diagnose_failures(request: pytest.FixtureRequest, dagster_ui: h.DagsterUI) -> Iterator[None]:
    """When a test fails: the tail of the servers' logs, and a screenshot of the page it was
    on."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failed_before:
        return
    if "browser" in request.fixturenames:
        driver = request.getfixturevalue("browser")
        try:
            path = h.screenshot(driver, f"FAILED-{request.node.name}.png")
            _say(request, f"screenshot of the failure ({driver.current_url}): {path}")
        except Exception as error:
            _say(request, f"no screenshot of the failure: {error!r}")
    _say(request, dagster_ui.diagnostics())


def _shot(request: pytest.FixtureRequest, driver, name: str) -> Path:
    path = h.screenshot(driver, name)
    _say(request, f"screenshot: {path}")
    return path


def _manifest_of_run(output: Path, run_id: str) -> dict | None:
    for path in output.glob("*/manifest.json"):
        manifest = json.loads(path.read_text())
        if manifest.get("run_id") == run_id:
            manifest["_path"] = str(path)
            return manifest
    return None


@pytest.fixture(scope="module")
def finished_run(dagster_ui: h.DagsterUI, ui_dirs: dict[str, Path]) -> dict:
    """One batch_job run submitted through the GraphQL API and waited for: queued by the
    instance's run coordinator, dequeued and launched by the daemon."""
    from dagster_graphql import DagsterGraphQLClient

    from batch_pipeline.core.inputs.sample_data import DEMO_SCHEMA, write_sample

    csv_path, _ = write_sample(str(ui_dirs["input"]), RECORDS, invalid_fraction=0.05)
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_ui.port, timeout=60)
    run_id = client.submit_job_execution(
        JOB,
        run_config={
            "ops": {
                "initialize": {
                    "config": {
                        "source": csv_path,
                        "processor": "validate",
                        "processor_options": DEMO_SCHEMA,
                        "chunking": {"chunk_records": CHUNK_RECORDS},
                        "output": str(ui_dirs["output"]),
                    }
                }
            }
        },
        tags={"batch_pipeline_tests": "ui"},
    )
    run = dagster_ui.wait_for_run(run_id, timeout=180)
    return {"run_id": run_id, "run": run, "csv": csv_path}


# ------------------------------------------------------------------------------------------
# a. A run through the GraphQL API, through the queue


def test_graphql_run_is_queued_launched_by_the_daemon_and_writes_its_manifest(
    dagster_ui: h.DagsterUI, finished_run: dict, ui_dirs: dict[str, Path]
):
    run_id = finished_run["run_id"]
    assert finished_run["run"]["status"] == "SUCCESS", (
        f"run {run_id} ended {finished_run['run']['status']}\n{dagster_ui.diagnostics()}"
    )

    events = dagster_ui.graphql(
        """query ($id: ID!) { logsForRun(runId: $id, limit: 5000) {
            ... on EventConnection { events { __typename } } } }""",
        {"id": run_id},
    )["logsForRun"]["events"]
    kinds = [e["__typename"] for e in events]
    # Queued by the QueuedRunCoordinator, then launched: only the daemon dequeues.
    assert "RunEnqueuedEvent" in kinds
    assert "RunStartingEvent" in kinds
    assert kinds.index("RunEnqueuedEvent") < kinds.index("RunStartingEvent")
    assert "MaterializationEvent" in kinds

    manifest = _manifest_of_run(ui_dirs["output"], run_id)
    assert manifest is not None, f"no manifest.json of run {run_id} under {ui_dirs['output']}"
    totals = manifest["totals"]
    assert totals["records_in"] == RECORDS
    assert totals["records_out"] + totals["records_rejected"] == RECORDS
    assert 0 < totals["records_rejected"] < RECORDS
    assert totals["chunks"] == totals["chunks_succeeded"] == CHUNKS
    assert len(manifest["results"]["succeeded"]) == CHUNKS
    assert not manifest["results"]["failed"]


# ------------------------------------------------------------------------------------------
# b. The launchpad


def _editor_value(driver) -> str:
    return driver.execute_script(
        "return document.querySelector('.CodeMirror').CodeMirror.getValue()"
    )


def test_launchpad_shows_the_config_of_batch_job(request, dagster_ui: h.DagsterUI, browser):
    from selenium.webdriver.common.by import By

    location = quote(dagster_ui.location, safe="")
    browser.get(f"{dagster_ui.url}/locations/{location}/jobs/{JOB}/playground")

    editor = h.wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, ".CodeMirror"), 60, "the config editor"
    )
    # The editor is pre-filled with the defaults of the config schema, and the launchpad
    # validates it against the schema: `source` has no default.
    h.wait_for_text(browser, ["chunking:"], root=editor)
    h.wait_for_text(browser, ['Missing required config entry "source"', "Scaffold missing config"])

    browser.find_element(By.XPATH, "//button[normalize-space()='Scaffold missing config']").click()
    dialog = h.wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, h.DIALOG), 30, "the scaffold dialog"
    )
    h.wait_for_text(browser, ["ops.initialize.config.source"], root=dialog)
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Confirm']").click()

    def scaffolded() -> dict | None:
        config = yaml.safe_load(_editor_value(browser)) or {}
        fields = config.get("ops", {}).get("initialize", {}).get("config", {})
        return fields if all(f in fields for f in LAUNCHPAD_FIELDS) else None

    fields = h.wait_until(scaffolded, 30, f"{LAUNCHPAD_FIELDS} in the config editor")
    # The defaults come from the schema (batch_pipeline.config).
    assert fields["processor"] == BatchConfig.model_fields["processor"].default
    chunk_records = ChunkingConfig.model_fields["chunk_records"].default
    assert fields["chunking"]["chunk_records"] == chunk_records
    h.wait_for_text(browser, ["No errors"])

    # Clicking the `source` line shows the documentation of the initialize config (its fields
    # and their descriptions from batch_pipeline.config) in the side panel.
    line = browser.find_element(
        By.XPATH,
        "//div[contains(@class,'CodeMirror-code')]//pre[starts-with(normalize-space(), 'source:')]",
    )
    line.click()
    chunking_doc = BatchConfig.model_fields["chunking"].description
    text = h.wait_for_text(browser, ["source:", "chunking:", chunking_doc])
    assert "Missing required config entry" not in text
    _shot(request, browser, "launchpad.png")


# ------------------------------------------------------------------------------------------
# c. The run page and the asset page


def _metadata_value(text: str, key: str) -> str | None:
    """The value shown beside metadata key ``key`` (a whole key: ``records_in`` is not
    ``chunk_records_in``), or None when the key is not shown."""
    match = re.search(rf"^{re.escape(key)}(?:[ \t]+(.*))?$", text, re.MULTILINE)
    if match is None:
        return None
    return (match.group(1) or "").strip()


def _missing_keys(text: str, keys: list[str]) -> list[str]:
    return [k for k in keys if _metadata_value(text, k) is None]


def _run_page(dagster_ui: h.DagsterUI, run_id: str, *tokens: str) -> str:
    return f"{dagster_ui.url}/runs/{run_id}?{urlencode({'logs': '|'.join(tokens)})}"


def _full_event_text(
    browser, row_texts: list[str], wanted: list[str], timeout: float = 30.0
) -> str:
    """The whole text of the event the log filter left: its row, or the dialog of its "View
    full message" button when the row is too short to show all its metadata."""
    from selenium.webdriver.common.by import By

    h.wait_for_text(browser, row_texts, timeout)

    def expandable_or_complete():
        buttons = browser.find_elements(By.XPATH, "//button[normalize-space()='View full message']")
        if buttons:
            return buttons[0]
        return "complete" if all(w in h.page_text(browser) for w in wanted) else None

    try:
        found = h.wait_until(expandable_or_complete, 10, "the event's full message")
    except TimeoutError:
        found = "complete"  # all the row has: the caller reports what is missing
    if found == "complete":
        return h.page_text(browser)
    found.click()
    dialog = h.wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, h.DIALOG), timeout, "the event dialog"
    )
    return h.wait_for_text(browser, row_texts, timeout, root=dialog)


def test_run_page_shows_chunk_progress_and_the_results_materialization(
    request, dagster_ui: h.DagsterUI, finished_run: dict, browser
):
    run_id = finished_run["run_id"]
    assert finished_run["run"]["status"] == "SUCCESS"

    # The last chunk's output: the event log is virtualized, so filter it down to that event.
    step = f"process_chunk[chunk_{CHUNKS - 1:05d}]"
    browser.get(_run_page(dagster_ui, run_id, f"step:{step}", "type:STEP_OUTPUT"))
    h.wait_for_text(browser, ["Success", run_id.split("-")[0]])
    text = _full_event_text(browser, [step, "STEP_OUTPUT"], PROGRESS_METADATA_KEYS)
    _shot(request, browser, "run.png")
    missing = _missing_keys(text, PROGRESS_METADATA_KEYS)
    assert not missing, f"{step}'s output metadata does not show {missing}:\n{text}"
    if "chunks_total" in PROGRESS_METADATA_KEYS:
        assert _metadata_value(text, "chunks_total") == str(CHUNKS)
    if "percent_complete" in PROGRESS_METADATA_KEYS:
        assert 0 < float(_metadata_value(text, "percent_complete")) <= 100

    # The aggregate step's materialization of batch_results, with the batch's totals.
    browser.get(_run_page(dagster_ui, run_id, "type:ASSET_MATERIALIZATION"))
    text = _full_event_text(
        browser, ["aggregate", "ASSET_MATERIALIZATION", RESULTS_ASSET], RESULTS_METADATA_KEYS
    )
    missing = _missing_keys(text, RESULTS_METADATA_KEYS)
    assert not missing, f"the {RESULTS_ASSET} materialization does not show {missing}:\n{text}"
    assert _metadata_value(text, "records_in") == str(RECORDS)
    _shot(request, browser, "run-materialization.png")


def test_asset_page_shows_the_latest_batch_results(
    request, dagster_ui: h.DagsterUI, finished_run: dict, ui_dirs, browser
):
    manifest = _manifest_of_run(ui_dirs["output"], finished_run["run_id"])
    assert manifest is not None
    browser.get(f"{dagster_ui.url}/assets/{RESULTS_ASSET}")
    text = h.wait_for_text(browser, [RESULTS_ASSET, "Latest materialization", manifest["_path"]])
    missing = _missing_keys(text, RESULTS_METADATA_KEYS)
    assert not missing, f"the asset page does not show {missing}:\n{text}"
    assert "batch_pipeline" in text  # its group
    _shot(request, browser, "asset.png")


def test_asset_plots_draw_the_batches_figures(
    request, dagster_ui: h.DagsterUI, finished_run: dict, browser
):
    """The history the optimizer reads, drawn on the asset's Overview (metadata, Plots): a chart
    per numeric metadata key of batch_results (chunk size, throughput, tuning figures)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{dagster_ui.url}/assets/{RESULTS_ASSET}")
    plots = h.wait_until(
        lambda: browser.find_element(By.XPATH, "//button[normalize-space()='Plots']"),
        60,
        "the Plots toggle of the metadata on the Overview tab",
        on_timeout=lambda: h.page_text(browser),
    )
    plots.click()
    # Along events (run after run, the history) rather than partitions (file after file).
    browser.find_element(By.XPATH, "//button[normalize-space()='Events']").click()
    h.wait_for_text(browser, PLOTTED_KEYS)
    charts = h.wait_until(
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "canvas")) >= len(PLOTTED_KEYS),
        30,
        "a chart per numeric metadata key",
    )
    assert charts
    _shot(request, browser, "asset-plots.png")


# ------------------------------------------------------------------------------------------
# d. Automation: the sensors and the schedule, and a run from an upload


def test_automation_page_lists_the_sensors_and_the_schedule(
    request, dagster_ui: h.DagsterUI, browser
):
    browser.get(f"{dagster_ui.url}/automation")
    try:
        h.wait_for_text(browser, AUTOMATION_NAMES, timeout=30)
    except TimeoutError as error:
        known = sorted(dagster_ui.automation_names())
        raise AssertionError(
            f"the automation page does not list all of {AUTOMATION_NAMES}; the code location "
            f"has {known}"
        ) from error
    finally:
        _shot(request, browser, "automation.png")


def _upload_sensor_switch(browser):
    from selenium.webdriver.common.by import By

    row = browser.find_element(
        By.XPATH,
        f"//a[contains(@href, '/sensors/{UPLOAD_SENSOR}')]/ancestor::div[@data-index][1]",
    )
    switch = row.find_element(By.XPATH, ".//label[contains(@class, 'formatSwitch')]")
    return switch, switch.find_element(By.TAG_NAME, "input")


def test_automation_upload_sensor_turned_on_in_the_ui_runs_batch_job_on_a_dropped_file(
    request, dagster_ui: h.DagsterUI, ui_dirs: dict[str, Path], browser
):
    from batch_pipeline.core.inputs.sample_data import write_sample

    assert dagster_ui.sensor_status(UPLOAD_SENSOR) == "STOPPED"  # its default status

    browser.get(f"{dagster_ui.url}/automation")
    h.wait_for_text(browser, [UPLOAD_SENSOR], timeout=60)
    seen: list[bool] = []

    def click_switch() -> bool:
        # Found, read and clicked in one go: the page re-renders as its data arrives, and an
        # element found before that is stale (wait_until tries again on the exception).
        switch, checkbox = _upload_sensor_switch(browser)
        seen.append(checkbox.is_selected())
        switch.click()
        return True

    h.wait_until(click_switch, 30, "its switch, clicked")
    assert seen[-1] is False  # shown off before the click
    h.wait_until(
        lambda: dagster_ui.sensor_status(UPLOAD_SENSOR) == "RUNNING", 30, "the sensor to run"
    )
    h.wait_until(lambda: _upload_sensor_switch(browser)[1].is_selected(), 30, "the switch on")
    _shot(request, browser, "automation-sensor-on.png")

    # An upload: written elsewhere, then moved in whole (the sensor never sees half a file).
    csv_path, _ = write_sample(str(ui_dirs["staging"]), UPLOAD_RECORDS, invalid_fraction=0.0)
    upload = ui_dirs["inbox"] / f"upload-{uuid.uuid4().hex[:8]}.csv"
    os.replace(csv_path, upload)

    def sensor_run() -> dict | None:
        dagster_ui.check_alive()
        for run in dagster_ui.runs(JOB):
            if upload.name not in (run["runConfigYaml"] or ""):
                continue
            if run["status"] in ("FAILURE", "CANCELED"):
                raise AssertionError(f"the sensor's run {run['runId']} ended {run['status']}")
            if run["status"] == "SUCCESS":
                return run
        return None

    run = h.wait_until(
        sensor_run,
        SENSOR_RUN_TIMEOUT,
        f"a successful {JOB} run of {upload} requested by {UPLOAD_SENSOR}",
        1.0,
        dagster_ui.diagnostics,
    )
    config = yaml.safe_load(run["runConfigYaml"])["ops"]["initialize"]["config"]
    assert config["chunking"]["chunk_records"] == CHUNK_RECORDS  # from BATCH_PIPELINE_RUN_CONFIG
    manifest = _manifest_of_run(ui_dirs["sensor_output"], run["runId"])
    assert manifest is not None, f"no manifest of run {run['runId']} in {ui_dirs['sensor_output']}"
    assert manifest["totals"]["records_in"] == UPLOAD_RECORDS
    assert manifest["totals"]["chunks"] == -(-UPLOAD_RECORDS // CHUNK_RECORDS)

    location = quote(dagster_ui.location, safe="")
    browser.get(f"{dagster_ui.url}/locations/{location}/sensors/{UPLOAD_SENSOR}")
    # Its page: running, with the tick that requested the run.
    h.wait_for_text(browser, [UPLOAD_SENSOR, "Running", "1 run requested"], timeout=60)
    _shot(request, browser, "sensor.png")
