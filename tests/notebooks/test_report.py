"""The HTML report is one file that draws its figures alone and offline (issue 29 item 3): the
vendored plotly.js basic bundle is the one recorded, matches the pinned plotly, and is chosen only
when it holds every trace type of the figures; no tag loads anything from the network; a figure
that cannot be drawn is announced in the page. (The real-browser check is in test_browser.py.)"""
import gzip
import hashlib

import nbformat
import plotly.graph_objects as go
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from workbench.nb import report


def figure_output(fig) -> dict:
    """The outputs the notebooks' renderer writes for ``fig`` (plotly mimetype + HTML fallback)."""
    import plotly.io as pio

    report.use_renderer()
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), pio.renderers.default)
    return new_output("display_data", data=bundle)


def notebook(*figs) -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# Report"), new_code_cell("figures", outputs=[figure_output(f) for f in figs])]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def test_vendored_bundle_is_the_recorded_basic_bundle_of_the_pinned_plotly():
    from plotly.offline import get_plotlyjs_version

    js = gzip.decompress(report.BASIC_BUNDLE.read_bytes())
    assert hashlib.sha256(js).hexdigest() == report.BASIC_SHA256
    assert js.startswith(f"/**\n* plotly.js (basic - minified) v{report.BASIC_VERSION}".encode())
    assert report.BASIC_VERSION == get_plotlyjs_version()  # re-vendor when the plotly pin moves
    assert (report.BASIC_BUNDLE.parent / "LICENSE-plotly.js").read_text().startswith("MIT License")
    assert len(js) < 1_300_000  # vs ~4.8 MB for the full bundle


@pytest.mark.parametrize("types, basic", [({"scatter"}, True), ({"scatter", "bar"}, True), (set(), True),
                                          ({"scatter", "scattergl"}, False), ({"heatmap"}, False)])
def test_bundle_is_basic_only_when_it_holds_every_trace_type(types, basic):
    js, what = report.plotly_bundle(types)
    assert ("(basic - minified)" in js[:200]) == basic and ("basic" in what) == basic
    if not basic:
        assert "full bundle" in what and sorted(types - report.BASIC_TRACES)[0] in what


def test_report_page_is_self_contained_and_announces_figures_that_cannot_draw():
    book = notebook(go.Figure(go.Scatter(x=[0, 1], y=[1, 2])), go.Figure(go.Scatter(x=[0, 1], y=[2, 1])))
    assert report.trace_types(book) == {"scatter"}
    page, what = report.build_page(book)
    assert what == f"plotly.js basic {report.BASIC_VERSION}"
    assert page.count("(basic - minified)") == 1 and page.count("Plotly.newPlot") == 2
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" in book.cells[1].outputs[0]["data"]["text/html"]  # plotly's tag
    assert "<script src=" not in page and not report.NETWORK_TAG.search(page)  # ... left out, as nbconvert's
    assert report.FIGURE_ERROR_CLASS in page and "could not be drawn" in page
    # the watch for errors runs before any figure script, the note after them all
    assert page.index("wbFigureErrors = []") < page.index("Plotly.newPlot") < page.index("could not be drawn")
    heat = notebook(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]])))
    assert "full bundle" in report.build_page(heat)[1]


def test_network_tags_are_recognised():
    tags = ['<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/tex-svg.min.js"></script>',
            "<script type='text/javascript' src='//cdn.example/require.js'></script>",
            '<link rel="stylesheet" href="https://fonts.example/font.css">']
    for tag in tags:
        assert report.NETWORK_TAG.fullmatch(tag), tag
    assert not report.NETWORK_TAG.search('<script src="local.js"></script><a href="https://plotly.com/">x</a>')


def test_inline_script_cannot_be_closed_early():
    assert report.inline_script('var s = "</script><b>";') == '<script>var s = "<\\/script><b>";</script>\n'


def test_headline_is_read_back_from_the_executed_notebook():
    from workbench.nb.summary import Headline

    recs = [{"kind": "train", "epoch": 2}, {"kind": "summary", "role": "student", "last_top1": 80.0}]
    h = Headline(recs)
    out = new_output("display_data", data={"text/plain": str(h), "text/html": h._repr_html_()})
    book = new_notebook(cells=[new_code_cell("nb.headline(records)", outputs=[out])])
    assert report.headline_text(book) == "After 2 epochs the student S reaches 80.00 % top-1 on the test set."
    assert report.headline_text(new_notebook()) == ""
