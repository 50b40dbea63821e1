"""The README and docs point only at what a clone has, and the published numbers page agrees with
the code that names the same things."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "published.md", ROOT / "bench" / "README.md", ROOT / "datasets" / "README.md"]


def test_links_stay_inside_the_repository():
    """No link or path outside the clone (the specs under ../shared are not part of it), and every
    relative markdown link resolves to a file of the repository."""
    for doc in DOCS:
        text = doc.read_text()
        assert "../shared" not in text and "shared/spec" not in text, f"{doc.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if "://" in target:
                continue
            assert (doc.parent / target).resolve().is_file(), f"{doc.name}: link {target} is not a file of the repository"
    assert "[`docs/published.md`](docs/published.md)" in (ROOT / "README.md").read_text()


def test_published_cifar_pairs_are_preset_pairs():
    """Each CIFAR-100 row of docs/published.md names a teacher -> student pair of the presets."""
    from workbench.presets import CIFAR_PAIRS

    pairs = {(t, s) for t, s, *_ in CIFAR_PAIRS.values()}
    rows = re.findall(r"^\| (\w+) -> (\w+) \| [\d.]+ \|", (ROOT / "docs" / "published.md").read_text(), flags=re.M)
    assert len(rows) == 5 and set(rows) <= pairs
