"""HTML reports of executed notebooks that stay small: plotly.js (~4.8 MB) is written once as
``plotly.min.js`` beside the report and loaded by it, instead of being embedded in every
notebook and report. Offline, no CDN.

``python -m workbench.nb.report runs/demo/gpd.ipynb [runs/demo/gpd.html]``

Notebooks render figures with the ``workbench`` plotly renderer (:func:`use_renderer`): the
plotly mimetype (JupyterLab draws it with its own plotly) plus an HTML fallback that expects
``Plotly`` on the page -- which this report provides.
"""
from __future__ import annotations

import sys
from pathlib import Path

PLOTLY_FILE = "plotly.min.js"
RENDERER = "workbench_html"
HIDDEN_INPUT_TAGS = ("parameters", "injected-parameters")
HEAD_SCRIPTS = (f'<script>window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>\n'
                f'<script src="{PLOTLY_FILE}"></script>\n')


def use_renderer() -> None:
    """Figures as plotly mimetype + HTML without plotly.js inside (see the module docstring)."""
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    if RENDERER not in pio.renderers:
        renderer = NotebookRenderer(connected=False)
        renderer.global_init = False  # do not embed plotly.js into the notebook on activation
        pio.renderers[RENDERER] = renderer
    pio.renderers.default = f"plotly_mimetype+{RENDERER}"


def lead_with_headline(page: str) -> str:
    """A copy of the run's headline (:class:`workbench.nb.summary.Headline` output) right after
    the page's first heading, so the first screen states the outcome."""
    from .summary import HEADLINE_CLASS

    start = page.find(f'<div class="{HEADLINE_CLASS}">')
    title_end = page.find("</h1>")
    if start < 0 or title_end < 0:
        return page
    end = page.find("</div>", start) + len("</div>")
    at = title_end + len("</h1>")
    return page[:at] + page[start:end] + page[at:]


def write_report(notebook: str | Path, html_path: str | Path | None = None) -> Path:
    """``notebook`` (executed .ipynb) -> ``html_path`` (default: same name, .html) and
    ``plotly.min.js`` beside it. Returns the HTML path."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    from plotly.offline import get_plotlyjs

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    exporter = HTMLExporter()
    # the parameters cells (ours and papermill's) are long and repeated, folded, by the
    # configuration table: the report leaves their source out
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=HIDDEN_INPUT_TAGS, enabled=True), True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    if "</head>" not in body:
        raise ValueError(f"{notebook}: nbconvert produced no <head> to load plotly.js from")
    body = body.replace("</head>", HEAD_SCRIPTS + "</head>", 1)
    body = lead_with_headline(body)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    js = html_path.parent / PLOTLY_FILE
    source = get_plotlyjs()
    if not js.exists() or js.read_text(encoding="utf-8") != source:
        js.write_text(source, encoding="utf-8")
    return html_path


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m workbench.nb.report <executed.ipynb> [out.html]", file=sys.stderr)
        return 2
    out = write_report(*argv)
    print(f"HTML report: {out} (+ {out.parent / PLOTLY_FILE}, shared by the reports in that folder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
