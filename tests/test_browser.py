"""End to end: the course's notebooks in a real JupyterLab, driven by a headless browser.

The test starts JupyterLab as `make lab` does (headless, in smoke mode, with a private outputs
folder, private settings and autosave off so the notebooks on disk are never written), opens
notebooks 01, 04 and 06 in Chromium through Playwright and, as a learner would, runs them with
Run > Run All Cells and uses what they show: the frame scrubber of 01, the live learning curve
of 04 and the video and frame-by-frame viewer of 06. Screenshots go to build/browser-screenshots/.

It needs Debian's `chromium` and the `playwright` package (dev extra). Without them it is
skipped, except under CI (`CI` set), where it fails: CI must run it.
"""

from __future__ import annotations

import base64
import contextlib
import io
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

import pytest
from chromium import expect, skip_without_browser

pytestmark = pytest.mark.slow  # left out of the quick lane (make check)

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "browser-screenshots"
START_TIMEOUT = 120  # s for JupyterLab to answer
RUN_TIMEOUT = 300  # s for one notebook to run (smoke mode: well under a minute on a 2-core CPU)
UI_TIMEOUT = 60  # s for the page to react to a click or a key

# JupyterLab's user settings for the test: every cell in the page (no windowing), no autosave
# (the notebooks on disk stay as they are), no news or update checks (no network).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
    "@jupyterlab/docmanager-extension/plugin": '{"autosave": false}',
    "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
}


skip_without_browser()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    return SHOTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server: its address, token and REST calls."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, log: Path) -> None:
        self.proc, self.port, self.token, self.log = proc, port, token, log
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, method: str = "GET", timeout: float = 10) -> bytes:
        request = urllib.request.Request(
            f"{self.base}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def url(self, workspace: str, notebook: str) -> str:
        return (
            f"{self.base}/lab/workspaces/{workspace}/tree/notebooks/{notebook}?token={self.token}"
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def shutdown_kernels(self) -> None:
        import json

        for session in json.loads(self.api("/api/sessions")):
            self.api(f"/api/sessions/{session['id']}", method="DELETE", timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The course's JupyterLab (`make lab`, headless) in smoke mode; stopped, kernels and all."""
    import psutil

    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings"
    for plugin, text in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    env.update(
        DQN_COURSE_MODE="smoke",
        DQN_COURSE_OUTPUT_DIR=str(tmp / "outputs"),
        SDL_VIDEODRIVER="dummy",
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        PYTHONUNBUFFERED="1",
    )
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
        f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",  # not in notebooks/
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(proc, port, token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api("/api/status", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in {START_TIMEOUT} s:\n{server.log_tail()}"
                    )
                time.sleep(0.5)
        yield server
    finally:
        # Kernels and whatever they started are the server's descendants: stop the server
        # cleanly (it shuts its kernels down), then end anything still running.
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        with contextlib.suppress(OSError):
            server.api("/api/shutdown", method="POST", timeout=30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _, alive = psutil.wait_procs(family, timeout=15)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=10)


@contextlib.contextmanager
def open_notebook(browser, lab: Lab, notebook: str, screenshots: Path):
    """A fresh page with `notebook` open in its own workspace and its kernel ready.

    Afterwards: a screenshot of the whole page, the page closed, the kernel shut down.
    """
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT * 1000)
    stem = notebook.split("_")[0]
    try:
        page.goto(lab.url(f"test{stem}", notebook))
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=START_TIMEOUT * 1000)
        wait_kernel_idle(page, START_TIMEOUT)
        yield page
    finally:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(screenshots / f"{stem}_page.png"), full_page=True)
        with contextlib.suppress(Exception):
            page.close()
        with contextlib.suppress(OSError):
            lab.shutdown_kernels()


def wait_kernel_idle(page, timeout: float = RUN_TIMEOUT) -> None:
    """Wait for the notebook toolbar's kernel indicator to say idle."""
    page.wait_for_selector(
        '.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=timeout * 1000
    )


def run_all_cells(page, timeout: float = RUN_TIMEOUT, while_running=None) -> None:
    """Run > Run All Cells, wait until no cell is queued or running, and fail on an error.

    `while_running`, if given, is called once the cells are queued, before waiting for them.
    """
    page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").first.click()  # the notebook
    page.click('.lm-MenuBar-itemLabel:text-is("Run")')
    page.click('.lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel:text-is("Run All Cells")')
    prompts = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"
    page.wait_for_function(f"{prompts}.some(p => p.includes('*'))", timeout=UI_TIMEOUT * 1000)
    if while_running is not None:
        while_running()
    page.wait_for_function(
        f"""() => !{prompts}.some(p => p.includes('*'))
            && document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'""",
        timeout=timeout * 1000,
        polling=250,
    )
    errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
    if errors.count():
        pytest.fail(f"a cell raised an error:\n{errors.first.inner_text()[-3000:]}", pytrace=False)
    unnumbered = [p for p in page.evaluate(prompts) if not re.fullmatch(r"\[\d+\]:", p)]
    assert not unnumbered, f"cells that did not run: {unnumbered}"


def code_cell(page, source: str):
    """The code cell whose source contains `source`, once JupyterLab has rendered it (a long
    notebook's cells appear in the page a few at a time)."""
    cell = page.locator(".jp-CodeCell").filter(
        has=page.locator(".jp-InputArea-editor", has_text=source)
    )
    with contextlib.suppress(Exception):  # the assertion below says what is missing
        cell.first.wait_for(state="attached", timeout=UI_TIMEOUT * 1000)
    assert cell.count() == 1, f"{cell.count()} code cells contain {source!r}"
    return cell


def png(src: str):
    """The pixels of a `data:image/png;base64,...` image, as an RGB array."""
    import numpy as np
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def changed(before, after, columns: slice) -> bool:
    """Whether two images of the same figure differ in `columns`, below the panels' titles."""
    assert before.shape == after.shape, (before.shape, after.shape)
    below_titles = slice(before.shape[0] // 4, None)
    return bool((before[below_titles, columns] != after[below_titles, columns]).any())


def scrub(page, cell, steps: int, shots: Path, name: str) -> tuple[str, str]:
    """Move the viewer's slider `steps` steps right with the keyboard, as a learner would.

    Each step's figure has the step in its title, so every key press must change the image:
    wait for that before the next press (the last image is then the last step's). Returns the
    images shown before and after.
    """
    handle = cell.locator(".widget-slider .noUi-handle")
    image = cell.locator(".widget-output img")
    expect(image).to_have_count(1)
    first = int(float(handle.get_attribute("aria-valuenow")))
    before = shown = image.get_attribute("src")
    cell.screenshot(path=str(shots / f"{name}_before.png"))
    handle.focus()
    for step in range(first + 1, first + steps + 1):
        handle.press("ArrowRight")
        expect(cell.locator(".widget-slider .widget-readout")).to_have_text(str(step))
        expect(image).to_have_count(1)
        expect(image).not_to_have_attribute("src", shown)
        shown = image.get_attribute("src")
    wait_kernel_idle(page)
    after = image.get_attribute("src")
    assert after == shown, "the viewer drew again after its last step"
    cell.screenshot(path=str(shots / f"{name}_after.png"))
    return before, after


def test_notebook_01_frame_scrubber(browser, lab, screenshots):
    with open_notebook(browser, lab, "01_environment.ipynb", screenshots) as page:
        run_all_cells(page)
        viewer = code_cell(page, "widgets.interact(show_step")
        before, after = scrub(page, viewer, 5, screenshots, "01_scrubber")
        # The figure: the raw frame (its leftmost fifth), then the 4 stacked channels.
        raw_frame = slice(0, png(before).shape[1] // 5)
        assert changed(png(before), png(after), raw_frame), "the scrubber showed the same frame"


# Records every distinct image drawn in a cell's outputs, and whether the cell was running.
WATCH_IMAGES = """cell => {
    const prompt = cell.querySelector('.jp-InputPrompt');
    const seen = new Map();
    const hash = s => { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0; return h; };
    const record = () => {
        for (const img of cell.querySelectorAll('.jp-OutputArea-output img')) {
            const src = img.getAttribute('src') || '';
            const key = src.length + ':' + hash(src);
            if (src.startsWith('data:image/') && !seen.has(key))
                seen.set(key, prompt.textContent.includes('*'));
        }
        window.__drawn = [...seen.values()];
    };
    window.__drawn = [];
    new MutationObserver(record).observe(cell, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def test_notebook_04_live_learning_curve(browser, lab, screenshots):
    with open_notebook(browser, lab, "04_td0.ipynb", screenshots) as page:
        training = code_cell(page, "result = train(")
        training.evaluate(WATCH_IMAGES)

        def redrawn() -> None:  # a screenshot once the curve has been drawn again
            page.wait_for_function(
                "window.__drawn.filter(Boolean).length >= 2", timeout=RUN_TIMEOUT * 1000
            )
            training.screenshot(path=str(screenshots / "04_live_curve_running.png"))

        run_all_cells(page, while_running=redrawn)
        training.screenshot(path=str(screenshots / "04_live_curve_done.png"))
        drawn = page.evaluate("window.__drawn")
        while_running = sum(drawn)
        print(f"live curve: {len(drawn)} drawings, {while_running} while the cell ran")
        assert while_running >= 2, (
            f"the live curve was drawn {len(drawn)} times, {while_running} while the cell ran: "
            "expected a first drawing and at least one redraw during training"
        )
        curves = training.locator(".jp-OutputArea-output img").count()
        assert curves == 1, (
            f"{curves} images in the training cell's output: expected one, redrawn in place"
        )


def test_notebook_06_video_and_viewer(browser, lab, screenshots):
    with open_notebook(browser, lab, "06_video.ipynb", screenshots) as page:
        run_all_cells(page)
        video_cell = code_cell(page, "embed_video(mp4)")
        video = video_cell.locator("video")
        video.scroll_into_view_if_needed()
        metadata = video.evaluate(
            """v => new Promise((resolve, reject) => {
                const done = () => resolve({duration: v.duration, width: v.videoWidth, height: v.videoHeight});
                if (v.readyState >= 1) return done();
                v.addEventListener('loadedmetadata', done, {once: true});
                v.addEventListener('error', () => reject(new Error('video error ' + (v.error && v.error.code))), {once: true});
                setTimeout(() => reject(new Error('no loadedmetadata after 30 s')), 30000);
            })"""
        )
        video_cell.screenshot(path=str(screenshots / "06_video.png"))
        assert 0 < metadata["duration"] < float("inf"), metadata
        assert metadata["width"] > 0 and metadata["height"] > 0, metadata

        viewer = code_cell(page, "widgets.interact(show_step")
        before, after = scrub(page, viewer, 10, screenshots, "06_viewer")
        before, after = png(before), png(after)
        # The figure's six panels: the raw frame, the 4 input channels, then the Q-values as
        # bars, titled with the chosen action: the first and the last must change with the step.
        width = before.shape[1]
        raw_frame, q_values = slice(0, width // 5), slice(width - width // 7, width)
        assert changed(before, after, raw_frame), "the viewer showed the same frame"
        assert changed(before, after, q_values), "the viewer showed the same Q-values"
