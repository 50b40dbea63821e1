"""Render the gap-curves figure of a digits run to a PNG via headless Debian chromium:
``python docs/render_figure.py <run_dir> docs/demo_gap_curves.png``."""
import sys, tempfile
from pathlib import Path
from playwright.sync_api import sync_playwright
from workbench.probes import figures

run_dir, out = sys.argv[1], sys.argv[2]
fig = figures.gap_curves(run_dir, metrics=["acc_gap", "kl"])
fig.update_layout(width=900, height=560, title="make demo: teacher-student gaps on digits 0-4, GPD on DKD (T_s: resnet8x4, S: resnet8)")
html = Path(tempfile.mkdtemp()) / "fig.html"
html.write_text(fig.to_html(include_plotlyjs=True, full_html=True))
args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
with sync_playwright() as p:
    ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(), executable_path="/usr/bin/chromium", headless=True, args=args)
    page = ctx.new_page()
    page.goto(html.as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg")
    page.locator(".js-plotly-plot").first.screenshot(path=out)
    ctx.close()
print("wrote", out)
