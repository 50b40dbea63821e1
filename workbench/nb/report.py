"""HTML reports of executed notebooks: one file that draws its figures on its own, offline, and
stays small -- it can be mailed or copied anywhere.

``python -m workbench.nb.report runs/demo/gpd.ipynb [runs/demo/gpd.html]``

Notebooks render figures with the ``workbench`` plotly renderer (:func:`use_renderer`): the
plotly mimetype (JupyterLab draws it with its own plotly) plus an HTML fallback that expects
``Plotly`` on the page, without plotly.js in each output (so executed notebooks stay small). The
report inlines plotly.js once: the vendored *basic* bundle (scatter, bar, pie; 1.2 MB, see
``vendor/README.md``) when every figure uses those traces -- all the notebooks' figures do --
else the full bundle of the installed plotly (4.6 MB). Nothing is requested from the network
(nbconvert's CDN scripts and plotly's MathJax tags are left out), and a figure that cannot be
drawn says so in the page instead of leaving a blank space.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

RENDERER = "workbench_html"
HIDDEN_INPUT_TAGS = ("parameters", "injected-parameters")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
BASIC_BUNDLE = Path(__file__).with_name("vendor") / "plotly-basic.min.js.gz"
BASIC_VERSION = "4.1.1"  # = plotly.offline.get_plotlyjs_version() of the pinned plotly
BASIC_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"  # of the uncompressed file
BASIC_TRACES = frozenset({"scatter", "bar", "pie"})
FIGURE_ERROR_CLASS = "wb-figure-error"
CHECK_AFTER_LOAD_MS = 1000  # figures are drawn by then (plotly draws while the page loads)
# a <script src=...> or <link href=...> pointing at the network (nbconvert's require.js and
# MathJax, plotly's MathJax tag in every figure): left out, the report makes no request
NETWORK_TAG = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^>]*>\s*</script>"""
                         r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^>]*>""", re.I)
# Head: remember why a figure failed; end of body: a visible line in place of each figure that
# was not drawn (plotly.js missing or failing), instead of a blank space.
ERROR_WATCH = """<script>
window.wbFigureErrors = [];
window.addEventListener("error", function (e) { window.wbFigureErrors.push(e.message || String(e)); });
window.addEventListener("unhandledrejection", function (e) { window.wbFigureErrors.push(String(e.reason)); });
</script>
"""
ERROR_NOTE = f"""<script>
window.addEventListener("load", function () {{ setTimeout(function () {{
  var why = typeof window.Plotly === "undefined" ? "plotly.js is missing from this page"
            : (window.wbFigureErrors.join("; ") || "plotly.js drew nothing");
  document.querySelectorAll(".plotly-graph-div").forEach(function (div) {{
    if (div.querySelector(".main-svg") || div.getAttribute("data-wb-checked")) return;
    div.setAttribute("data-wb-checked", "1");
    var note = document.createElement("p");
    note.className = "{FIGURE_ERROR_CLASS}";
    note.style.cssText = "color:#a00;border:1px solid #a00;padding:6px 10px;margin:6px 0";
    note.textContent = "This figure could not be drawn (" + why + "). Its data is in the executed notebook "
                       + "(.ipynb) this report was made from.";
    div.parentNode.insertBefore(note, div);
  }});
}}, {CHECK_AFTER_LOAD_MS}); }});
</script>
"""


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


def headline_text(nb) -> str:
    """The run's headline sentence (text of the :class:`Headline` output), or ``""``."""
    from .summary import HEADLINE_CLASS

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if HEADLINE_CLASS in "".join(data.get("text/html", "")):
                return "".join(data.get("text/plain", "")).strip()
    return ""


def trace_types(nb) -> set[str]:
    """The plotly trace types of every figure in the notebook's outputs."""
    types = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            fig = out.get("data", {}).get(PLOTLY_MIME)
            if isinstance(fig, str):
                fig = json.loads(fig)
            for trace in (fig or {}).get("data", []):
                types.add(trace.get("type", "scatter"))
    return types


def basic_bundle() -> str:
    """The vendored plotly.js basic bundle, checked against its recorded SHA-256."""
    js = gzip.decompress(BASIC_BUNDLE.read_bytes())
    if hashlib.sha256(js).hexdigest() != BASIC_SHA256:
        raise ValueError(f"{BASIC_BUNDLE} is not the vendored plotly.js basic {BASIC_VERSION} (SHA-256 differs)")
    return js.decode("utf-8")


def plotly_bundle(types: set[str]) -> tuple[str, str]:
    """``(plotly.js source, what it is)`` for figures of these trace types: the basic bundle
    when it holds them all, else the installed plotly's full bundle."""
    if types <= BASIC_TRACES:
        return basic_bundle(), f"plotly.js basic {BASIC_VERSION}"
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    other = ", ".join(sorted(types - BASIC_TRACES))
    return get_plotlyjs(), f"plotly.js {get_plotlyjs_version()} (full bundle: the figures use {other})"


def inline_script(js: str) -> str:
    """``js`` in a ``<script>`` element (a ``</script`` inside it would end the element early)."""
    return "<script>" + re.sub(r"</(script)", r"<\\/\1", js, flags=re.I) + "</script>\n"


def build_page(nb) -> tuple[str, str]:
    """``(HTML, plotly bundle description)`` of an executed notebook (see the module docstring)."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    exporter = HTMLExporter()
    # the parameters cells (ours and papermill's) are long and repeated, folded, by the
    # configuration table: the report leaves their source out
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=HIDDEN_INPUT_TAGS, enabled=True), True)
    body, _ = exporter.from_notebook_node(nb)
    if "</head>" not in body or "</body>" not in body:
        raise ValueError("nbconvert produced no <head>/<body> to put plotly.js into")
    body = NETWORK_TAG.sub("", body)
    js, what = plotly_bundle(trace_types(nb))
    head = '<script>window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n' + ERROR_WATCH + inline_script(js)
    body = body.replace("</head>", head + "</head>", 1)
    body = body.replace("</body>", ERROR_NOTE + "</body>", 1)
    return lead_with_headline(body), what


def write_report(notebook: str | Path, html_path: str | Path | None = None) -> Path:
    """``notebook`` (executed .ipynb) -> ``html_path`` (default: same name, .html), one
    self-contained file. Returns the HTML path."""
    import nbformat

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    page, _ = build_page(nbformat.read(notebook, as_version=4))
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    return html_path


def main(argv: list[str]) -> int:
    import nbformat

    if not 1 <= len(argv) <= 2:
        print("usage: python -m workbench.nb.report <executed.ipynb> [out.html]", file=sys.stderr)
        return 2
    out = write_report(*argv)
    book = nbformat.read(argv[0], as_version=4)
    _, bundle = plotly_bundle(trace_types(book))
    print(f"executed notebook: {argv[0]}")
    print(f"HTML report:       {out} ({out.stat().st_size / 1e6:.1f} MB, one file with {bundle}: figures drawn offline)")
    sentence = headline_text(book)
    if sentence:
        print(sentence)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
