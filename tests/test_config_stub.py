"""Every config key is visible without running the code: ``workbench/config.pyi`` (editors, type
checkers) and ``help(RunConfig)`` list each key with its type and help."""
import dataclasses
import pydoc
import sys
from pathlib import Path

from workbench.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_config_stub  # noqa: E402


def test_the_committed_stub_is_current():
    """Fails when a key (a method's included) was added or changed without rerunning the script."""
    assert make_config_stub.STUB.read_text() == make_config_stub.stub_text(), \
        "workbench/config.pyi is stale: run python scripts/make_config_stub.py"


def test_the_stub_declares_every_key_with_its_type_and_help():
    stub = make_config_stub.STUB.read_text()
    body = stub[stub.index("class RunConfig(RunConfigBase):"):]
    for f in dataclasses.fields(RunConfig):
        kind = {"tuple": "tuple[int, ...]"}.get(f.metadata["kind"], f.metadata["kind"])
        line = f"    {f.name}: {kind} = ...\n"
        assert line in body, f.name
        doc = body[body.index(line) + len(line):].splitlines()[0]
        assert f.metadata["help"][:40] in doc, f.name


def test_help_lists_every_key_with_its_help():
    text = pydoc.render_doc(RunConfig, renderer=pydoc.plaintext)
    for f in dataclasses.fields(RunConfig):
        assert f"{f.name}: {f.metadata['kind']}" in text, f.name
    assert RunConfig.__dataclass_fields__["ratio"].metadata["help"][:50] in " ".join(text.split())
