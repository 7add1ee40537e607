"""The course in a real browser: JupyterLab in Chromium, driven by Playwright.

One JupyterLab server for the module, started on 127.0.0.1 with a random token, a free port and
temporary config, data, runtime, settings and workspace folders; its root is a temporary folder
holding copies of the notebooks (the committed ones are never opened, so never saved). Chromium is
Debian's package, found on PATH and launched with ``executable_path`` (``.ci/install-browser``
installs it; ``playwright install`` is never used). The test skips, saying why, only where
``chromium`` is not on PATH.

* ``tests/browser/widgets_tour.ipynb`` builds every widget of ``cvlab.widgets`` on tiny inputs:
  each widget test moves every control of one widget and checks that the figure is drawn anew (the
  PNG in the widget's output changes) and that no "Error displaying widget" and no stderr or
  traceback appear anywhere on the page.
* Lesson 00 runs top to bottom (Run > Run All Cells) with no error output and no widget error.

The module's wall time is printed at the end (``browser test: ... s``).
"""
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "tests" / "browser" / "widgets_tour.ipynb"
LESSON = ROOT / "notebooks" / "00_setup_and_torchvision_tour.ipynb"
CHROMIUM = shutil.which("chromium")

if CHROMIUM is None:
    pytest.skip("browser test skipped: `chromium` is not on PATH (install Debian's package: .ci/install-browser, "
                "or apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

SERVER_START_S = 60        # JupyterLab answers /api/status
NOTEBOOK_RUN_S = 150       # Run All Cells, from the click to the last cell's prompt
REDRAW_S = 30              # one control change until the new figure is on the page
WIDGET_ERROR = "Error displaying widget"
IDLE_JS = "/\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')"

# JupyterLab settings for the test: every cell in the DOM (the default windowing leaves cells out of
# view unattached), no autosave (the notebooks are copies, but nothing is saved), no news pop-up.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# Per widget (its CSS class in the tour is cvlab-tour-<name>): the controls in the order they are
# changed. ("select", description, option label), ("slider", description), ("toggle", button text),
# ("checkbox", description). Every control the widget shows must appear here (checked at the end).
STEPS = {
    "predictions": [("select", "class", "bright"), ("slider", "image #")],
    "augmentation": [("select", "image", "coffee"), ("slider", "degrees"),
                     ("select", "transform", "ColorJitter"), ("slider", "brightness"), ("slider", "contrast"),
                     ("slider", "saturation"), ("slider", "hue"),
                     ("select", "transform", "RandomResizedCrop"), ("slider", "seed"), ("slider", "min_scale")],
    "gradcam": [("select", "image", "noise B"), ("select", "class", None), ("select", "layer", "conv1")],
    "detection": [("slider", "score ≥"), ("slider", "NMS IoU")],
    "masks": [("slider", "scene"), ("slider", "opacity"), ("checkbox", "road"), ("checkbox", "car"),
              ("toggle", "truth"), ("toggle", "errors"), ("toggle", "prediction")],
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server of our own and a Chromium to look at it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        self.token = secrets.token_urlsafe(32)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "jupyterlab.log"
        self.times: dict[str, float] = {}
        self.proc = None
        self.pw = self.browser = None
        self.page_errors: list[str] = []

    # -- the server -----------------------------------------------------------------------------
    def start_server(self) -> None:
        env = dict(os.environ)
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                     "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
            folder = self.tmp / name.lower()
            folder.mkdir()
            env[name] = str(folder)
        for plugin, values in LAB_SETTINGS.items():
            path = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {self.proc.returncode} before answering:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if time.perf_counter() - started > SERVER_START_S:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")
                time.sleep(0.2)
        self.times["JupyterLab up"] = time.perf_counter() - started

    def api(self, method: str, path: str):
        request = urllib.request.Request(self.base + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Ends every session (and its kernel) through the server, so that none outlives it."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def stop_server(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.shutdown_kernels()
        except OSError:
            pass
        self.proc.terminate()  # SIGTERM: jupyter_server shuts down its kernels and exits
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def screenshot(self, page, name: str) -> Path:
        path = self.tmp / f"{Path(name).stem}-{time.strftime('%H%M%S')}.png"
        try:
            page.screenshot(path=path)
        except PlaywrightError as error:
            return Path(f"(no screenshot: {error})")
        return path

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return "(no log)"

    # -- the browser ----------------------------------------------------------------------------
    def start_browser(self) -> None:
        started = time.perf_counter()
        self.pw = sync_playwright().start()
        args = ["--disable-dev-shm-usage", "--disable-gpu"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        self.browser = self.pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        self.times["Chromium up"] = time.perf_counter() - started

    def stop_browser(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.pw is not None:
            self.pw.stop()

    def open_notebook(self, name: str):
        """A new page showing ``name`` (in the server's root) with its kernel started and idle."""
        # a browser context and a JupyterLab workspace of its own: no other notebook is restored beside it
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda error: self.page_errors.append(f"{name}: {error}"))
        page.goto(f"{self.base}/lab/workspaces/{Path(name).stem}/tree/{name}?token={self.token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        started = time.perf_counter()
        while not self.kernel_idle(page, name):
            if time.perf_counter() - started > 60:
                pytest.fail(f"{name}: its kernel was not started and idle within 60 s; "
                            f"screenshot {self.screenshot(page, name)}")
            time.sleep(0.2)
        return page

    def kernel_idle(self, page, name: str) -> bool:
        """The notebook's kernel is idle, for the server and for the page (status bar '| Idle')."""
        sessions = [s for s in self.api("GET", "/api/sessions") if s.get("path") == name and s.get("kernel")]
        return (len(sessions) == 1 and sessions[0]["kernel"]["execution_state"] == "idle"
                and page.evaluate(f"() => {IDLE_JS}"))

    def run_all(self, page, name: str) -> float:
        """Run > Run All Cells, then wait until every code cell has run or one failed; the seconds."""
        started = time.perf_counter()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = started + NOTEBOOK_RUN_S
        while True:
            state = page.evaluate("""() => ({
                prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim()),
                errors: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length,
            })""")
            state["idle"] = self.kernel_idle(page, name)
            busy = any("*" in p for p in state["prompts"])
            done = state["prompts"] and all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"])
            if not busy and state["idle"] and (done or state["errors"]):
                break
            if time.perf_counter() > deadline:
                pytest.fail(f"{name}: Run All Cells did not finish within {NOTEBOOK_RUN_S} s; prompts "
                            f"{state['prompts']}; screenshot {self.screenshot(page, name)}")
            time.sleep(0.25)
        seconds = time.perf_counter() - started
        assert_no_errors_on(page, name)
        assert done, f"{name}: not every cell ran: prompts {state['prompts']}"
        return seconds


def wait_until(page, js: str, seconds: float, message: str, arg=None) -> None:
    try:
        page.wait_for_function(js, arg=arg, timeout=seconds * 1000, polling=100)
        return
    except PlaywrightError:
        pass
    pytest.fail(message)  # outside the except: the report shows the message, not Playwright's traceback


def assert_no_errors_on(page, where: str) -> None:
    """No widget that failed to display, no stderr output and no traceback anywhere on the page."""
    found = page.evaluate("""(marker) => ({
        widget: document.body.textContent.includes(marker),
        stderr: [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                .map(e => e.textContent.slice(0, 1500)),
    })""", WIDGET_ERROR)
    assert not found["widget"], f"{where}: the page shows {WIDGET_ERROR!r}"
    assert not found["stderr"], f"{where}: an error or stderr output:\n" + "\n---\n".join(found["stderr"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    started = time.perf_counter()
    hashes = {p: _sha256(p) for p in (TOUR, LESSON)}
    lab = Lab(tmp_path_factory.mktemp("browser"))
    try:
        lab.start_server()
        lab.start_browser()
        yield lab
    finally:
        lab.stop_browser()
        lab.stop_server()
        total = time.perf_counter() - started
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in lab.times.items())
        lines = [f"\nbrowser test: {total:.1f} s wall time ({parts})"]
        if lab.page_errors:
            lines.append("browser test: JavaScript errors on the page:\n  " + "\n  ".join(lab.page_errors))
        capture = request.config.pluginmanager.getplugin("capturemanager")  # None with -p no:capture
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print("\n".join(lines))  # shown without -s too, so that the run time can be quoted
        assert {p: _sha256(p) for p in hashes} == hashes, "a committed notebook changed during the browser test"


@pytest.fixture(scope="module")
def tour(lab):
    """The widget tour, run in JupyterLab: the page."""
    shutil.copy(TOUR, lab.root / TOUR.name)
    started = time.perf_counter()
    page = lab.open_notebook(TOUR.name)
    lab.run_all(page, TOUR.name)
    for name in STEPS:
        _figure(page, name)  # every widget drawn its first figure
    assert_no_errors_on(page, TOUR.name)
    lab.times["widget tour run"] = time.perf_counter() - started
    yield page
    page.context.close()


# -- one widget, every control ------------------------------------------------------------------

def _figure(page, name: str) -> str:
    """The src (a data: URL) of the figure in widget ``name``'s output, waiting for it to be drawn."""
    img = page.locator(f".cvlab-tour-{name} .widget-output img")
    wait_until(page, "(sel) => document.querySelectorAll(sel).length === 1 && document.querySelector(sel).complete",
               REDRAW_S, f"{name}: no figure (one <img> in the widget's output) within {REDRAW_S} s",
               arg=f".cvlab-tour-{name} .widget-output img")
    return img.get_attribute("src")


def _png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:60]
    data = base64.b64decode(src.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def _settle(page, name: str) -> str:
    """Waits until the kernel is idle and the figure stays the same for 0.5 s; its src."""
    src = _figure(page, name)
    quiet_since = time.perf_counter()
    deadline = quiet_since + REDRAW_S
    while time.perf_counter() - quiet_since < 0.5:
        time.sleep(0.1)
        idle = page.evaluate(f"() => {IDLE_JS}")
        now = _figure(page, name)
        if now != src or not idle:
            src, quiet_since = now, time.perf_counter()
        if time.perf_counter() > deadline:
            pytest.fail(f"{name}: the figure kept changing (or the kernel stayed busy) for {REDRAW_S} s")
    return src


def _labelled(root, css: str, label_css: str, text: str):
    found = root.locator(css).filter(has=root.page.locator(label_css, has_text=re.compile(f"^{re.escape(text)}$")))
    assert found.count() == 1, f"{found.count()} controls {css} labelled {text!r}"
    return found


def _change(page, root, step) -> str:
    """Makes the change ``step`` describes; returns what it did, for messages."""
    kind, label, *value = step
    if kind == "select":
        select = _labelled(root, ".widget-dropdown", "label.widget-label", label).locator("select")
        # ipywidgets writes option labels with no-break spaces
        options = [t.replace("\xa0", " ") for t in select.evaluate("s => [...s.options].map(o => o.text)")]
        current = select.evaluate("s => s.selectedIndex")
        target = options.index(value[0]) if value and value[0] is not None and value[0] in options \
            else (current + 1) % len(options) if not value or value[0] is None else None
        assert target is not None and target != current, \
            f"{label}: cannot change {options[current]!r} to {value[0]!r} (options: {options})"
        select.select_option(index=target)
        return f"{label}: {options[current]!r} -> {options[target]!r}"
    if kind == "slider":
        slider = _labelled(root, ".widget-slider", "label.widget-label", label)
        readout, handle = slider.locator(".widget-readout"), slider.locator(".noUi-handle")
        before = readout.inner_text()
        for key in ("ArrowRight", "ArrowLeft"):  # one step up, or down where the slider is at its maximum
            handle.press(key)
            try:
                page.wait_for_function("([el, before]) => el.textContent.trim() !== before",
                                       arg=[readout.element_handle(), before], timeout=2_000, polling=50)
                return f"{label}: {before} -> {readout.inner_text()}"
            except PlaywrightError:
                continue
        pytest.fail(f"slider {label!r} did not move with the arrow keys (readout stayed {before})")
    if kind == "toggle":
        button = root.locator("button.widget-toggle-button", has_text=re.compile(f"^{re.escape(label)}$"))
        assert "mod-active" not in (button.get_attribute("class") or ""), f"{label} is already selected"
        button.click()
        return f"view -> {label}"
    if kind == "checkbox":
        box = _labelled(root, ".widget-checkbox", "span", label).locator("input[type=checkbox]")
        was = box.is_checked()
        box.click()
        assert box.is_checked() != was
        return f"{label}: {'on' if was else 'off'} -> {'off' if was else 'on'}"
    raise ValueError(kind)


def _controls(root) -> set[tuple[str, str]]:
    """Every control the widget shows now, as (kind, description)."""
    found = root.evaluate("""root => ({
        select: [...root.querySelectorAll('.widget-dropdown > label.widget-label')].map(e => e.textContent),
        slider: [...root.querySelectorAll('.widget-slider > label.widget-label')].map(e => e.textContent),
        toggle: [...root.querySelectorAll('button.widget-toggle-button')].map(e => e.textContent),
        checkbox: [...root.querySelectorAll('.widget-checkbox span')].map(e => e.textContent),
    })""")
    return {(kind, text.strip()) for kind, texts in found.items() for text in texts}


@pytest.mark.parametrize("name", list(STEPS))
def test_every_control_of_the_widget_redraws_its_figure_in_the_browser(tour, lab, name):
    page = tour
    root = page.locator(f".cvlab-tour-{name}")
    assert root.count() == 1, f"the tour shows no widget with class cvlab-tour-{name}"
    started = time.perf_counter()
    src = _settle(page, name)
    done = []
    for step in STEPS[name]:
        what = _change(page, root, step)
        wait_until(page, "([sel, old]) => { const img = document.querySelector(sel); "
                         "return img !== null && img.complete && img.src !== old; }",
                   REDRAW_S, f"{name}: after {what} the figure was not redrawn (same PNG) within {REDRAW_S} s; "
                             f"changes before: {done}",
                   arg=[f".cvlab-tour-{name} .widget-output img", src])
        new = _settle(page, name)
        assert _png(new) != _png(src), f"{name}: {what} left the figure as it was"
        assert_no_errors_on(page, f"{name} after {what}")
        done.append(what)
        src = new
    untouched = _controls(root) - {(kind, label) for kind, label, *_ in STEPS[name]}
    assert not untouched, f"{name}: controls the test never changed: {sorted(untouched)} (add them to STEPS)"
    lab.times[f"{name} ({len(done)} changes)"] = time.perf_counter() - started


def test_lesson_00_runs_top_to_bottom_in_the_browser(lab):
    """A copy of lesson 00 without its outputs, run with Run All Cells: every cell runs, no error,
    no widget error, and the key result is printed. The copy is not saved (autosave is off)."""
    lab.shutdown_kernels()  # the tour's kernel: the lesson gets the CPU to itself
    nb = nbformat.read(LESSON, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, lab.root / LESSON.name)
    page = lab.open_notebook(LESSON.name)
    try:
        lab.times["lesson 00 run"] = lab.run_all(page, LESSON.name)
        text = page.locator(".jp-Notebook").inner_text()
        assert "Key result: " in text, "lesson 00 printed no key result"
        images = page.locator(".jp-Notebook .jp-OutputArea-output img").count()
        assert images >= 3, f"lesson 00 shows {images} figures"
    finally:
        page.context.close()
