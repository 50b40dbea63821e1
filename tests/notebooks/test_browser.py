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
    for epochs in (2, 3):  # one recipe, two epoch counts: same readable name, different settings hash
        experiment.run(dict(dataset="digits", method="gpd", base="none", teacher="none", student="resnet8",
                            train_per_class=5, epochs=epochs, batch_size=32, eval_batch_size=512, probe_samples=100,
                            progress=False, out_dir=str(runs)), log=lambda *_: None)
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
    """The explorer in JupyterLab: widgets and figure drawn; the two runs of one recipe are listed
    by what differs (epochs=2 / epochs=3), not by their settings hash (issue 29 item 9)."""
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
            listed = [t.replace("\xa0", " ") for t in page.locator(".widget-select-multiple option").all_text_contents()]
            refresh = page.locator("button", has_text="refresh").count()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOT), full_page=False)
        except Exception:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("explore_failure.png")))
            raise
    assert n_plots >= 1
    assert curves >= 1  # the explorer's gap curves of the tiny run were drawn
    assert sorted(listed) == ["digits_resnet8_gpd_s0 (epochs=2)", "digits_resnet8_gpd_s0 (epochs=3)"], listed
    assert refresh == 1
    assert SCREENSHOT.stat().st_size > 10_000


REPORT_SHOTS = ROOT / "runs" / "browser"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
FIGURE_CHECK_MS = 3000  # > the report's own check after load (report.CHECK_AFTER_LOAD_MS)


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """The report of gpd.ipynb on the demo's data (embedded Fashion-MNIST, its auto preset and
    shipped teacher), 2 epochs: no transferability target, as in `make demo`."""
    pm = pytest.importorskip("papermill")
    from workbench.nb.report import write_report

    tmp = tmp_path_factory.mktemp("report")
    executed = tmp / "gpd.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "gpd.ipynb"), str(executed), progress_bar=False,
                        kernel_name="python3", cwd=str(ROOT),
                        parameters=dict(dataset="fashion_mnist", epochs=2, embed_method="pca", embed_points=200,
                                        train_per_class=10, out_dir=str(tmp / "runs")))
    return write_report(executed, tmp / "made" / "gpd.html")


def _open_offline(sync_api, page_file: Path, shots: list[tuple[str, str]]):
    """Open ``page_file`` in Chromium with every non-local request refused (and recorded); returns
    (requests refused, figures, figures drawn, error notes shown) and saves screenshots of the
    elements ``shots`` = [(css selector, file name)]."""
    refused = []

    def offline(route):
        if route.request.url.startswith(LOCAL_SCHEMES):
            return route.continue_()
        refused.append(route.request.url)
        return route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.route("**/*", offline)
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_timeout(FIGURE_CHECK_MS)
            figures = page.locator(".plotly-graph-div").count()
            drawn = page.evaluate("[...document.querySelectorAll('.plotly-graph-div')]"
                                  ".filter(d => d.querySelector('.main-svg')).length")
            notes = page.locator(".wb-figure-error").filter(visible=True).count()
            REPORT_SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(REPORT_SHOTS / shots[0][1]))  # the first screen
            for selector, name in shots[1:]:
                element = page.locator(selector).first
                element.scroll_into_view_if_needed()
                element.screenshot(path=str(REPORT_SHOTS / name))
        finally:
            browser.close()
    return refused, figures, drawn, notes


def test_html_report_alone_draws_every_figure_offline_in_chromium(demo_report, tmp_path):
    """Issue 29 item 3: the report copied alone into an empty folder, every network request
    refused: every figure draws (its plotly SVG is there), nothing is even requested, no error
    note. Screenshots: runs/browser/report_*.png."""
    sync_api = _need_chromium()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(demo_report, alone / "gpd.html")
    expected = (alone / "gpd.html").read_text().count("Plotly.newPlot")
    refused, figures, drawn, notes = _open_offline(sync_api, alone / "gpd.html", [
        ("body", "report_top.png"),
        (".plotly-graph-div >> nth=2", "report_disc_transfer.png"),
        (".plotly-graph-div >> nth=3", "report_feature_maps.png"),
        (".wb-live-gaps", "report_live_chart.png"),
    ])
    assert refused == []
    assert figures == drawn == expected >= 4  # gap curves, top-1, disc/transfer, feature maps
    assert notes == 0


def test_html_report_says_so_when_a_figure_cannot_draw(demo_report, tmp_path):
    """A report whose plotly.js is gone (here: cut out) shows a visible line per figure instead
    of blank space."""
    import re

    sync_api = _need_chromium()
    page = demo_report.read_text()
    broken = re.sub(r"<script>/\*\*\n\* plotly\.js.*?</script>", "", page, count=1, flags=re.S)
    assert len(broken) < len(page) - 1_000_000
    (tmp_path / "broken.html").write_text(broken)
    refused, figures, drawn, notes = _open_offline(sync_api, tmp_path / "broken.html",
                                                   [("body", "report_broken_top.png"),
                                                    (".wb-figure-error", "report_broken_note.png")])
    assert refused == [] and drawn == 0 and figures >= 4
    assert notes == figures  # one visible note per figure


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
