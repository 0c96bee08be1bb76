"""The explorers work in a real browser: JupyterLab driven by headless Debian Chromium (every lesson with one).

Starts JupyterLab on a free localhost port with the project's kernel, opens a lesson, runs all
cells, checks that each explorer cell renders exactly one explorer (a cell whose last expression
returns the box already displayed shows it twice), moves the explorer's slider with the keyboard and
checks that the picture changed (screenshots before and after differ). Playwright drives the
`chromium` executable on the PATH (Debian's package); it never downloads a browser. Without chromium
the browser tests are skipped; the stored outputs are checked for the same duplicate without one.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Lab settings for the test: never autosave (the stored lessons stay untouched), render every
# cell (no virtual scrolling), no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}
RUN_TIMEOUT_S = 900  # a whole lesson run in the browser: ~1-2 min on an idle 2-core CPU, far more on a busy one


class Lab:
    """A JupyterLab server on localhost, in its own temporary runtime, settings and workspace dirs."""

    def __init__(self, root_dir: Path, scratch: Path):
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = scratch / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(scratch / "runtime"), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root_dir}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={scratch / 'ws'}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
               f"--FileCheckpoints.checkpoint_dir={scratch / 'checkpoints'}"]  # not in notebooks/
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self.log = open(scratch / "lab.log", "wb")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        self.wait_ready()

    def api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", method=method, data=b"" if method == "POST" else None,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{self.tail()}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def shutdown_kernels(self) -> None:
        """Stop every kernel the browser started (one lesson's kernel must not outlive its test)."""
        for session in json.loads(self.api("/api/sessions")):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        """Shut the server down through its API (that stops its kernels), then make sure it is gone."""
        try:
            self.api("/api/shutdown", method="POST")
            self.process.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on the PATH: install Debian's package (apt-get install chromium) "
                    "to run the browser test; .ci/run does this")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    server = Lab(NOTEBOOKS, tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


def open_and_run(page, lab: Lab, notebook: str) -> None:
    """Open `notebook` in JupyterLab, check its kernel, run all cells and wait until they finish."""
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}&reset")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=60_000)
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           ".status === 'idle'", timeout=60_000)
    kernel = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")
    assert kernel == "diffusion-lessons", f"{notebook} opened with kernel {kernel!r}"
    page.evaluate("async () => { await window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');"
                  " window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    state = page.wait_for_function(RUN_STATE, timeout=RUN_TIMEOUT_S * 1000).json_value()
    assert state == "done", f"{notebook} raised an error in JupyterLab: {state}"


# 'done' when every code cell has run, the error's text when one raised (run-all stops there), else false.
RUN_STATE = """() => {
  const model = window.jupyterapp.shell.currentWidget.content.model;
  const cells = Array.from({length: model.cells.length}, (_, i) => model.cells.get(i)).filter(c => c.type === 'code');
  for (const cell of cells) {
    const error = cell.outputs.toJSON().find(o => o.output_type === 'error');
    if (error) return `${error.ename}: ${error.evalue}`;
  }
  return cells.every(c => c.executionCount !== null && c.executionCount !== undefined) ? 'done' : false;
}"""


def find_slider(page, label: re.Pattern):
    """The slider, inside an explorer, whose description matches `label`; (explorer, slider)."""
    explorers = page.locator(".dl-explorer")
    assert explorers.count() > 0, "no explorer (.dl-explorer) rendered: is ipywidgets working?"
    for i in range(explorers.count()):
        sliders = explorers.nth(i).locator(".widget-slider")
        for j in range(sliders.count()):
            if label.search(sliders.nth(j).locator(".widget-label").first.inner_text()):
                return explorers.nth(i), sliders.nth(j)
    found = [s.inner_text() for s in page.locator(".dl-explorer .widget-slider .widget-label").all()]
    raise AssertionError(f"no explorer slider labelled like {label.pattern!r}; found {found}")


def move_slider(page, slider) -> tuple[str, str]:
    """Move the slider with the keyboard (End, else Home); return its readout before and after."""
    readout = slider.locator(".widget-readout")
    before = readout.inner_text()
    handle = slider.locator(".noUi-handle").first
    for key in ("End", "Home"):
        handle.focus()
        page.keyboard.press(key)
        if readout.inner_text() != before:
            return before, readout.inner_text()
    raise AssertionError(f"the slider did not move from {before!r} with the keyboard")


def assert_picture_changes(page, lab: Lab, notebook: str, label: str) -> None:
    """Run `notebook`, move its `label` slider and check the explorer's picture changes."""
    from PIL import Image, ImageChops
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.set_default_timeout(30_000)
    open_and_run(page, lab, notebook)
    assert_one_explorer_per_cell(page, notebook)
    explorer, slider = find_slider(page, re.compile(label, re.I))
    image = explorer.locator(".dl-explorer-image")
    image.scroll_into_view_if_needed()
    src, shot = image.get_attribute("src"), image.screenshot()
    before, after = move_slider(page, slider)
    try:
        page.wait_for_function("([el, old]) => el.getAttribute('src') !== old",
                               arg=[image.element_handle(), src], timeout=60_000)
    except PlaywrightTimeout:
        pytest.fail(f"{notebook}: slider moved {before} -> {after} but no new picture arrived in 60 s")
    page.wait_for_timeout(300)  # let the new picture paint
    old_picture, new_picture = (Image.open(io.BytesIO(png)).convert("RGB") for png in (shot, image.screenshot()))
    changed = old_picture.size != new_picture.size or ImageChops.difference(old_picture, new_picture).getbbox()
    assert changed, f"{notebook}: slider moved {before} -> {after} but the picture did not change"
    assert "Saving file at" not in lab.tail(20_000), f"the browser run saved a file: {lab.tail()}"


# The slider each lesson's explorer is driven by (a regex on its label). Every lesson whose code calls
# explorer(...) must be listed: test_every_explorer_lesson_is_covered fails when a new one is not.
SLIDERS = {
    "01_gaussian_noise.ipynb": r"beta|noise",                       # the amount of noise
    "02_forward_noising.ipynb": r"^\s*t\b|time|step",              # the timestep slider
    "04_sampling.ipynb": r"step",                                   # the trajectory's step
    "05_classifier_free_guidance.ipynb": r"guid|scale|^\s*w\b",    # the guidance-scale slider
    "06_vae.ipynb": r"weight",                                      # the interpolation weight
    "07_text_to_image.ipynb": r"guid|scale",                        # the guidance-scale slider
}


def explorer_cells(notebook: Path) -> list[dict]:
    """The stored code cells of a lesson that build an explorer."""
    cells = json.loads(notebook.read_text())["cells"]
    return [c for c in cells if c["cell_type"] == "code" and "explorer(" in "".join(c["source"])]


def explorer_lessons() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if explorer_cells(p))


def test_every_explorer_lesson_is_covered() -> None:
    found = explorer_lessons()
    assert found, "no lesson builds an explorer: is the notebooks folder there?"
    missing = [name for name in found if name not in SLIDERS]
    assert not missing, f"lessons with an explorer but no slider to drive in SLIDERS: {missing}"


@pytest.mark.parametrize("notebook", explorer_lessons())
def test_stored_explorer_cells_show_one_explorer(notebook: str) -> None:
    """No browser needed: in the stored outputs each explorer cell holds exactly one Explorer view."""
    for cell in explorer_cells(NOTEBOOKS / notebook):
        views = [o for o in cell.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
                 and "".join(o["data"].get("text/plain", "")).startswith("Explorer(")]
        last_line = "".join(cell["source"]).strip().splitlines()[-1]
        assert len(views) == 1, (f"{notebook}: the explorer cell ending in {last_line!r} stores {len(views)} "
                                 f"explorer views (a last expression that returns the box displays it again)")


# Per code cell of the open notebook: does it build an explorer, and how many explorers did it render?
EXPLORERS_PER_CELL = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .filter(w => w.model.type === 'code')
  .map(w => ({builds: w.model.sharedModel.getSource().includes('explorer('),
               rendered: w.node.querySelectorAll('.dl-explorer').length}))"""


def assert_one_explorer_per_cell(page, notebook: str) -> None:
    """Each cell that builds an explorer renders exactly one (.dl-explorer), and no other cell renders one."""
    page.wait_for_function(f"() => ({EXPLORERS_PER_CELL})().every(c => !c.builds || c.rendered > 0)",
                           timeout=60_000)
    page.wait_for_timeout(1000)  # let any second view of the same widget render too
    cells = page.evaluate(EXPLORERS_PER_CELL)
    wrong = [(i, c["rendered"]) for i, c in enumerate(cells) if c["rendered"] != (1 if c["builds"] else 0)]
    assert not wrong, f"{notebook}: (code cell, explorers rendered) where each explorer cell must show one: {wrong}"


@pytest.mark.browser
@pytest.mark.parametrize("notebook", explorer_lessons())
def test_explorer_slider_changes_picture(notebook: str, request) -> None:
    browser, lab = request.getfixturevalue("browser"), request.getfixturevalue("lab")
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    try:
        assert_picture_changes(page, lab, notebook, SLIDERS[notebook])
    finally:
        page.close()
        lab.shutdown_kernels()
