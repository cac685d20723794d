"""The MLflow UI as a user sees it (issue #8): `electra-bench ui` over a finished tiny suite, opened in headless
Chromium. It must list the suite's experiment, show the nested runs (suite -> cell -> pretrain / fine-tune) once
their parent rows are expanded, and draw the pre-training metric charts.

Needs Debian's `chromium` on PATH and the `playwright` package (the `dev` extra); Playwright drives the system
browser (`executable_path`), so `playwright install` is never run. Without them the test skips, unless
ELECTRA_BENCH_REQUIRE_BROWSER=1 (set by .ci/run), where it fails. Screenshots land in the test's tmp folder; with
ELECTRA_BENCH_SAVE_SCREENSHOT set they are also copied to results/browser/.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_suite_e2e import SUITE, make_data_root

from electra_bench import cli

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 60_000  # the UI is a large single-page app; a busy 2-core machine renders it slowly
CELLS = ("ELECTRA", "random init")
# Run names as runner.py makes them: suite, cells, the pre-training, fine-tunes led by task and seed.
SUITE_RUN, PRETRAIN_RUN = "e2e · suite", "pretrain · ELECTRA"
RUNS = (SUITE_RUN, *CELLS, PRETRAIN_RUN, *(f"sst2 s0 · {c}" for c in CELLS))


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium executable, or skip (fail when ELECTRA_BENCH_REQUIRE_BROWSER=1) when it or playwright lacks."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package (pip install -e '.[dev]')"
    else:
        missing = "" if exe else "a chromium executable on PATH (apt-get install chromium)"
    if missing:
        if os.environ.get("ELECTRA_BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ELECTRA_BENCH_REQUIRE_BROWSER=1 but {missing} is missing")
        pytest.skip(f"needs {missing}")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`electra-bench ui` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the MLflow UI did not answer on {url} within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A finished tiny suite (2 cells, SST-2, 1 seed) and `electra-bench ui` serving its store: (url, tmp, log)."""
    tmp = tmp_path_factory.mktemp("ui")
    make_data_root(tmp / "data")
    suite = tmp / "e2e.yaml"
    suite.write_text(SUITE.format(root=tmp / "data", work=tmp / "work", results=tmp / "results"))
    small = ["--set", "tasks=[sst2]", "--set", "seeds=[0]"]
    assert cli.main(["run", str(suite), "--no-progress", *small]) == 0
    port, log = _free_port(), tmp / "ui.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "wb") as out:  # its own process group: the CLI, the mlflow server and its worker stop together
        proc = subprocess.Popen([sys.executable, "-m", "electra_bench.cli", "ui", str(suite), "--port", str(port)],
                                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, f"{url}/health", log)
        yield url, tmp, log
    finally:
        for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def _lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None when it has only loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_ui_listens_on_loopback_only(ui):
    url, _, log = ui
    port = int(url.rsplit(":", 1)[1])
    assert f"MLflow UI on http://127.0.0.1:{port}" in log.read_text()
    ip = _lan_address()
    if ip is None:
        pytest.skip("no non-loopback address to try")
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(5)
        s.connect((ip, port))


def _expand(page, run_name: str) -> None:
    """Click the expander of a parent run's row (the only button in its name cell); its children appear below."""
    link = page.get_by_role("link", name=run_name, exact=True)
    link.wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("gridcell").filter(has=link).get_by_role("button").first.click()


def _save(page, tmp: Path, name: str) -> Path:
    shot = tmp / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("ELECTRA_BENCH_SAVE_SCREENSHOT"):
        (REPO / "results" / "browser").mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, REPO / "results" / "browser" / name)
    return shot


def test_mlflow_ui_shows_nested_runs_and_metric_charts(chromium, ui):  # chromium first: skip before building
    from playwright.sync_api import expect, sync_playwright

    url, tmp, _ = ui
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/#/experiments", timeout=TIMEOUT_MS)
            experiment = page.get_by_role("link", name="e2e", exact=True)
            expect(experiment).to_be_visible(timeout=TIMEOUT_MS)
            training = page.get_by_text("Model training", exact=True)  # MLflow 3 opens GenAI views by default
            if training.count():
                training.first.click()
            experiment.click()
            link = {name: page.get_by_role("link", name=name, exact=True) for name in RUNS}
            expect(link[SUITE_RUN]).to_be_visible(timeout=TIMEOUT_MS)
            expect(link["ELECTRA"]).to_have_count(0)  # nested: hidden under the collapsed suite run
            _expand(page, SUITE_RUN)
            expect(link["ELECTRA"]).to_be_visible(timeout=TIMEOUT_MS)
            expect(link[PRETRAIN_RUN]).to_have_count(0)  # nested under its (still collapsed) cell
            for cell in RUNS[1:3]:  # each cell's pretrain / fine-tune runs
                _expand(page, cell)
            for name in RUNS:
                expect(link[name]).to_be_visible(timeout=TIMEOUT_MS)
            _save(page, tmp, "mlflow_ui.png")

            link[PRETRAIN_RUN].click()
            page.get_by_role("tab", name="Model metrics").click()
            expect(page.get_by_text(f"{PRETRAIN_RUN} (eval/disc_auc)")).to_be_visible(timeout=TIMEOUT_MS)
            chart = page.locator(".js-plotly-plot, canvas").first  # MLflow draws run charts with plotly (SVG)
            expect(chart).to_be_visible(timeout=TIMEOUT_MS)
            assert page.locator(".js-plotly-plot g.trace path, canvas").count() > 0, "the charts have no lines"
            shot = _save(page, tmp, "mlflow_ui_metrics.png")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
