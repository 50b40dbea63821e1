"""Real-browser check (``make browser-test``): JupyterLab + headless Debian Chromium driven by
Playwright run explore.ipynb; the ipywidgets controls and a plotly figure must render. A
screenshot is saved under ``runs/browser/`` for a human look."""
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90
RENDER_TIMEOUT_MS = 240_000  # kernel start + torch import + the explorer on 2 busy cores
DIALOG_TIMEOUT_MS = 15_000
SCREENSHOT = ROOT / "runs" / "browser" / "explore.png"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc) -> None:
    deadline = time.time() + SERVER_START_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer at {url} within {SERVER_START_S} s")


@pytest.fixture
def workdir(tmp_path):
    """A notebook folder with explore.ipynb pointed at a runs folder holding one tiny GPD run."""
    pm = pytest.importorskip("papermill")
    from workbench import experiment

    runs = tmp_path / "runs"
    experiment.run(dict(dataset="digits", method="gpd", base="none", teacher="none", student="resnet8",
                        train_per_class=5, epochs=2, batch_size=32, eval_batch_size=512, probe_samples=100,
                        progress=False, out_dir=str(runs), name="tiny_gpd"), log=lambda *_: None)
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    pm.execute_notebook(str(ROOT / "notebooks" / "explore.ipynb"), str(nbdir / "explore.ipynb"),
                        parameters=dict(out_dir=str(runs)), prepare_only=True)
    return nbdir


@contextlib.contextmanager
def jupyter_lab(root_dir: Path, log: Path, cwd: Path | None = None):
    """A JupyterLab server on a free local port serving ``root_dir``; yields (base url, token)."""
    port, token = _free_port(), secrets.token_hex(16)
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--allow-root", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root_dir}"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=cwd)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def lab_notebook_run_all(sync_api, lab, notebook: str, profile: Path):
    """Chromium on ``notebook`` in the JupyterLab server ``lab``, after Run All; yields the page."""
    base, token = lab
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.goto(f"{base}/lab/tree/{notebook}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=RENDER_TIMEOUT_MS)
            try:  # JupyterLab may ask which kernel to start: accept the preselected python3
                page.locator(".jp-Dialog .jp-mod-accept").click(timeout=DIALOG_TIMEOUT_MS)
            except sync_api.TimeoutError:
                pass
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator('li[data-command="runmenu:run-all"]').click()
            yield page
        finally:
            ctx.close()


def _need_chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get update && apt-get install -y chromium)")
    return pytest.importorskip("playwright.sync_api")


def test_explore_renders_widgets_and_plotly_in_chromium(workdir, tmp_path):
    sync_api = _need_chromium()
    with jupyter_lab(workdir, tmp_path / "lab.log") as lab, \
            lab_notebook_run_all(sync_api, lab, "explore.ipynb", tmp_path / "chromium-profile") as page:
        try:
            page.wait_for_selector(".widget-select-multiple", timeout=RENDER_TIMEOUT_MS)  # ipywidgets rendered
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=RENDER_TIMEOUT_MS)  # plotly drew
            page.wait_for_selector(".widget-slider", timeout=RENDER_TIMEOUT_MS)
            page.wait_for_timeout(1500)  # let the figure settle before the screenshot
            n_plots = page.locator(".js-plotly-plot").count()
            curves = page.locator(".js-plotly-plot .scatterlayer .trace").count()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT), full_page=False)
        except Exception:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("explore_failure.png")))
            raise
    assert n_plots >= 1
    assert curves >= 1  # the explorer's gap curves of the tiny run were drawn
    assert SCREENSHOT.stat().st_size > 10_000


REPORT_SCREENSHOT = ROOT / "runs" / "browser" / "report.png"


def test_html_report_draws_every_figure_offline_in_chromium(tmp_path):
    """The report of an executed gpd.ipynb (python -m workbench.nb.report) opened from disk, no
    network: every figure is drawn by the one plotly.min.js beside it."""
    sync_api = _need_chromium()
    pm = pytest.importorskip("papermill")
    from workbench.nb.report import write_report

    executed = tmp_path / "gpd.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "gpd.ipynb"), str(executed), progress_bar=False,
                        kernel_name="python3", cwd=str(ROOT),
                        parameters=dict(dataset="digits", epochs=2, teacher_epochs=1, teacher="resnet8",
                                        embed_method="pca", embed_points=40, train_per_class=5, progress=True,
                                        out_dir=str(tmp_path / "runs")))
    report = write_report(executed, tmp_path / "report" / "gpd.html")
    expected = report.read_text().count("Plotly.newPlot")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.route("http*://**", lambda route: route.abort())  # offline: nothing from the network
            page.goto(report.as_uri())
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}",
                                   timeout=RENDER_TIMEOUT_MS)
            drawn = page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            REPORT_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(REPORT_SCREENSHOT), full_page=False)
        finally:
            browser.close()
    assert drawn == expected >= 4  # gap curves, top-1, disc/transfer, feature maps


LAB_SCREENSHOT = ROOT / "runs" / "browser" / "gpd_progress.png"
LONG_EPOCHS = 30  # more progress updates than JupyterLab's output limit used to show


@pytest.fixture
def gpd_workdir(tmp_path):
    pm = pytest.importorskip("papermill")
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    pm.execute_notebook(str(ROOT / "notebooks" / "gpd.ipynb"), str(nbdir / "gpd.ipynb"), prepare_only=True,
                        parameters=dict(dataset="digits", epochs=LONG_EPOCHS, teacher_epochs=LONG_EPOCHS,
                                        teacher="resnet8", embed_method="pca", embed_points=40, train_per_class=5,
                                        probe_every=5, progress=True, out_dir=str(tmp_path / "runs")))
    return nbdir


def test_gpd_progress_in_jupyterlab_shows_the_latest_epoch_after_a_long_run(gpd_workdir, tmp_path):
    """Run All in JupyterLab: each phase keeps one display updated in place, so after the run
    the visible progress states the last epoch (it used to freeze at ~epoch 16 when JupyterLab
    folded the piling outputs)."""
    sync_api = _need_chromium()
    with jupyter_lab(gpd_workdir, tmp_path / "lab.log", cwd=ROOT) as lab, \
            lab_notebook_run_all(sync_api, lab, "gpd.ipynb", tmp_path / "profile") as page:
        done = f"done: {LONG_EPOCHS}/{LONG_EPOCHS} epochs"
        # the visible display: the output area may also hold a hidden copy (inner text '')
        progress = page.locator(".wb-progress", has_text="gpd (base dkd)").filter(visible=True)
        progress.filter(has_text=done).first.wait_for(timeout=RENDER_TIMEOUT_MS * 2)
        finished = progress.filter(has_text=done).first
        finished.scroll_into_view_if_needed()
        shown = finished.is_visible()
        # textContent: JupyterLab 4 may skip rendering cells outside the viewport
        # (content-visibility), and innerText of a skipped element is '' although it is displayed
        visible = finished.text_content()
        live_lines = page.locator(".wb-live-gaps polyline").count()
        LAB_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(LAB_SCREENSHOT), full_page=False)
        widgets_errors = page.locator("text=Error displaying widget").count()
    assert shown and done in visible and f"epoch {LONG_EPOCHS}/{LONG_EPOCHS}" in visible
    assert widgets_errors == 0
    assert live_lines == 3  # the live chart: T_s-S, T_d-S, T_s-T_d
