"""Helpers of the UI tests (``test_ui.py``): a Dagster webserver and daemon as subprocesses on a
temporary instance, GraphQL over HTTP on 127.0.0.1, and headless Chromium driven by selenium.

Nothing here reaches beyond 127.0.0.1: Chromium and chromedriver are Debian's
(``/usr/bin/chromium``, ``/usr/bin/chromedriver``, installed by ``make browser``), named
explicitly so that selenium-manager never looks for (or downloads) a browser or a driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
BIN = Path(sys.executable).parent

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--window-size=1600,1000",
)

# A modal dialog of the UI (Blueprint 5's class: follow the UI's Blueprint version).
DIALOG = ".bp5-dialog"

T = TypeVar("T")


class Fatal(Exception):
    """Something waiting cannot fix (a server died, a code location failed to load):
    ``wait_until`` raises it at once."""


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return (
            f"{' and '.join(missing)} not installed: the UI tests need Debian's chromium and "
            "chromium-driver (`make browser` installs them as root)"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Calls ``condition`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (TimeoutError naming ``what``, with ``on_timeout()``'s diagnostics). An exception from
    ``condition`` counts as "not yet", except ``Fatal`` and ``AssertionError``: raised at once."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except (Fatal, AssertionError):
            raise
        except Exception as error:  # a page or a server that is not ready yet
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path})"
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------------------------------
# Processes


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_processes(processes: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """Stops processes started with ``start_new_session=True`` and everything in their process
    groups (code servers, run workers): SIGTERM to every group, wait for the leaders and then
    the rest, SIGKILL to whatever is left."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # its own session: group id = its pid
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    deadline = time.monotonic() + 5
    while any(_group_alive(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in processes:
        if _group_alive(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait(timeout=timeout)


class DagsterUI:
    """``dagster-webserver`` and ``dagster-daemon run`` on a temporary ``DAGSTER_HOME``."""

    def __init__(
        self,
        workspace: Path,
        env: dict[str, str],
        logs: Path,
        cwd: Path,
        port: int | None = None,
    ) -> None:
        self.workspace = workspace
        self.env = env
        self.logs = logs
        self.cwd = cwd
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.location: str | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "webserver",
            [
                str(BIN / "dagster-webserver"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workspace)),
            ],
        )
        wait_until(self._serving, timeout, "the webserver to answer", 0.25, self.diagnostics)
        # Only now the daemon: the webserver has created the instance's SQLite storage, which
        # two processes creating at once can fail to do ("table ... already exists").
        self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])
        self.location = wait_until(
            self._loaded_location, timeout, "the code location to load", 0.5, self.diagnostics
        )
        wait_until(self._daemon_healthy, timeout, "the daemon's heartbeats", 0.5, self.diagnostics)
        # The "Join the Dagster community" dialog covers every page of a fresh local instance
        # until it has been seen once.
        self.graphql("mutation { setNuxSeen }")

    def _spawn(self, name: str, command: list[str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with its children
            )

    def stop(self) -> None:
        stop_processes(list(self.processes.values()))
        self.processes.clear()

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise Fatal(
                    f"dagster {name} exited with {process.returncode}\n{self.diagnostics()}"
                )

    def diagnostics(self) -> str:
        parts = []
        for name in ("webserver", "daemon"):
            path = self.logs / f"{name}.log"
            parts.append(f"---- last lines of {path} ----\n{tail(path)}")
        return "\n".join(parts)

    def _serving(self) -> bool:
        self.check_alive()
        with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
            return response.status == 200

    def _loaded_location(self) -> str | None:
        self.check_alive()
        data = self.graphql(
            """{ workspaceOrError { __typename ... on Workspace { locationEntries {
                name loadStatus
                locationOrLoadError { __typename ... on PythonError { message stack } }
            } } } }"""
        )
        entries = data["workspaceOrError"]["locationEntries"]
        if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
            return None
        for entry in entries:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise Fatal(
                    f"code location {entry['name']} failed to load: {loaded['message']}\n"
                    + "".join(loaded["stack"])
                )
        return entries[0]["name"]

    def _daemon_healthy(self) -> bool:
        self.check_alive()
        data = self.graphql(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        )
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        wanted = {"QUEUED_RUN_COORDINATOR", "SENSOR", "SCHEDULER"}
        return wanted <= {s["daemonType"] for s in statuses if s["healthy"]}

    # -- GraphQL ----------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"GraphQL HTTP {error.code}: {error.read()[:2000]!r}") from error
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.graphql(
            """query ($id: ID!) { runOrError(runId: $id) { __typename
                ... on Run { runId status jobName runConfigYaml } } }""",
            {"id": run_id},
        )
        return data["runOrError"]

    def runs(self, job_name: str) -> list[dict[str, Any]]:
        data = self.graphql(
            """query ($job: String!) { runsOrError(filter: {pipelineName: $job}) {
                __typename ... on Runs { results { runId status runConfigYaml
                    tags { key value } } } } }""",
            {"job": job_name},
        )
        return data["runsOrError"]["results"]

    def wait_for_run(self, run_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Waits until the run has finished (any terminal status) and returns it."""
        terminal = {"SUCCESS", "FAILURE", "CANCELED"}

        def finished() -> dict[str, Any] | None:
            self.check_alive()
            run = self.run(run_id)
            return run if run.get("status") in terminal else None

        return wait_until(finished, timeout, f"run {run_id} to finish", 1.0, self.diagnostics)

    def sensor_status(self, name: str, repository: str = "__repository__") -> str:
        data = self.graphql(
            """query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
                __typename ... on Sensor { sensorState { status } }
                ... on SensorNotFoundError { message } ... on PythonError { message } } }""",
            {
                "selector": {
                    "repositoryLocationName": self.location,
                    "repositoryName": repository,
                    "sensorName": name,
                }
            },
        )
        sensor = data["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            raise LookupError(f"sensor {name}: {sensor.get('message', sensor['__typename'])}")
        return sensor["sensorState"]["status"]

    def automation_names(self) -> set[str]:
        """Names of every sensor and schedule of the code location, from GraphQL."""
        data = self.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError {
                ... on RepositoryLocation { repositories {
                    sensors { name } schedules { name } } } } } } } }"""
        )
        names: set[str] = set()
        for entry in data["workspaceOrError"]["locationEntries"]:
            for repository in (entry["locationOrLoadError"] or {}).get("repositories", []):
                names.update(s["name"] for s in repository["sensors"])
                names.update(s["name"] for s in repository["schedules"])
        return names


# ------------------------------------------------------------------------------------------
# Browser


def start_chromium(user_data_dir: Path):
    """Headless Debian Chromium through Debian's chromedriver; selenium-manager stays idle."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return driver


def page_text(driver) -> str:
    """The visible text of the page (what a person can read on it)."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, texts: list[str], timeout: float = 60.0, root=None) -> str:
    """Waits until every one of ``texts`` is visible on the page (or in ``root``); the text."""

    def shown() -> str | None:
        text = root.text if root is not None else page_text(driver)
        return text if all(t in text for t in texts) else None

    def missing() -> str:
        text = root.text if root is not None else page_text(driver)
        return f"not shown: {[t for t in texts if t not in text]}; page text:\n{text[:3000]}"

    return wait_until(shown, timeout, f"{texts} on {driver.current_url}", 0.25, missing)


# Transitions and other finite animations still playing (infinite ones are spinners).
_ANIMATIONS_RUNNING = """return document.getAnimations().filter(a => a.playState === 'running'
    && a.effect && a.effect.getComputedTiming().iterations !== Infinity).length"""


def settle(driver, timeout: float = 5.0) -> None:
    """Waits (briefly) for the page's transitions to end: a dialog fully faded in."""
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: driver.execute_script(_ANIMATIONS_RUNNING) == 0, timeout, "no animation")


def screenshot(driver, name: str) -> Path:
    settle(driver)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
