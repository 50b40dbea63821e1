"""The package's layers run one way (``bench/import_graph.py``: the layer table and the reader):
a module imports only its own layer and the layers below, function-level imports included, and
no import circle exists. The checker itself is tested on a copy of the package with a planted
upward import and a planted circle."""
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import import_graph as ig  # noqa: E402


def test_no_upward_import_and_no_circle():
    edges = ig.graph()
    assert ig.upward(edges) == [], "imports that run up the layers (bench/import_graph.py LAYERS)"
    assert ig.circles(edges) == []


def test_every_module_is_in_a_layer():
    for module in ig.modules():
        ig.layer_of(module)  # raises for a module the table does not place


@pytest.fixture
def copy(tmp_path):
    shutil.copytree(ROOT / "workbench", tmp_path / "workbench", ignore=shutil.ignore_patterns("*.pt", "*.npz"))
    return tmp_path


def _plant(root: Path, rel: str, text: str) -> None:
    path = root / "workbench" / rel
    path.write_text(path.read_text() + text)


def test_the_checker_sees_a_planted_function_level_upward_import(copy):
    _plant(copy, "methods/kd.py", "\n\ndef _planted():\n    from ..experiment import run  # noqa\n")
    assert ("workbench.methods.kd", "workbench.experiment") in [(m, t) for m, t, _ in ig.upward(ig.graph(copy))]


def test_the_checker_sees_a_planted_circle(copy):
    # two modules of one layer importing each other: no upward import, but a circle
    _plant(copy, "losses.py", "\n\ndef _planted():\n    from . import losses_spatial  # noqa\n")
    edges = ig.graph(copy)
    assert ig.upward(edges) == []
    assert ["workbench.losses", "workbench.losses_spatial"] in ig.circles(edges)


def test_the_readme_shows_the_layers_as_they_are():
    """README's Layout block: one line per layer, top to bottom, in the order of the table, each
    naming every module prefix the table places in it."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout\n", 1)[1].split("```\n", 2)[1]
    entries, current = {}, None
    for line in block.splitlines():
        if line[:1].strip():  # a layer's first line starts in column 0
            current = line.split()[0]
            entries[current] = line
        elif current:
            entries[current] += " " + line.strip()
    table = [name for name, _ in ig.LAYERS if name != "package"]
    assert list(entries) == table[::-1], "README Layout lists other layers than bench/import_graph.py LAYERS"
    for name, prefixes in ig.LAYERS:
        for prefix in prefixes:
            short = prefix.rsplit(".", 1)[-1]
            if name != "package" and not short.startswith("__"):
                assert short in entries[name], f"README Layout: {short} is not named in layer {name}"
