"""The import graph of ``workbench/`` and the layer rule it must keep (``tests/test_layers.py``).

    python bench/import_graph.py            # circles, upward imports, largest files
    python bench/import_graph.py --edges    # also every edge that crosses a layer

Imports are read with ``ast`` from the source, *function-level imports included* (an import
inside a function is still a dependency; it only hides from a reader). ``from . import x``
counts as an import of the submodule ``x`` when there is one, else of the package itself.

The layers, bottom to top (:data:`LAYERS`): a module may import its own layer and the layers
below it, never above, and the module graph has no circle.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "workbench"

#: (layer, module prefixes), bottom to top. A module belongs to the layer of its longest prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("workbench.keys", "workbench.registry", "workbench.paths", "workbench.digest")),
    ("data", ("workbench.data",)),
    ("models", ("workbench.models",)),
    ("losses", ("workbench.losses", "workbench.losses_spatial")),
    ("gpd", ("workbench.gpd",)),
    ("engine", ("workbench.engine",)),
    ("methods", ("workbench.methods",)),
    ("probes", ("workbench.probes",)),
    ("assembly", ("workbench.references", "workbench.embedded_teachers", "workbench.torchvision_teachers", "workbench.student_init",
                  "workbench.config", "workbench.presets", "workbench.naming", "workbench.experiment")),
    ("front", ("workbench.cli", "workbench.launch", "workbench.sweep", "workbench.search", "workbench.table",
               "workbench.published",
               "workbench.export", "workbench.__main__")),
    ("notebooks", ("workbench.nb", "workbench.notebook")),
    ("package", ("workbench",)),
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(module: str, node: ast.AST, is_package: bool, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]


def graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` within the package (every import statement)."""
    known = modules(root)
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        out: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, node, path.name == "__init__.py", known):
                while target and target not in known:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    out.setdefault(target, node.lineno)
        edges[module] = out
    return edges


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    if index is None:
        raise KeyError(f"module {module} is in no layer of bench/import_graph.py LAYERS")
    return index


def circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(edges.get(w, {}))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def upward(edges: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """``(module, imported module, line)`` for every import of a higher layer."""
    return [(m, t, line) for m, ts in edges.items() for t, line in ts.items() if layer_of(t) > layer_of(m)]


def largest_files(root: Path = ROOT, n: int = 5) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(root))) for p in modules(root).values()]
    return sorted(sizes, reverse=True)[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout to read (default: this one)")
    ap.add_argument("--edges", action="store_true", help="print every edge between layers")
    args = ap.parse_args()
    edges = graph(args.root)
    found = circles(edges)
    print(f"{len(edges)} modules, {sum(len(t) for t in edges.values())} imports")
    print(f"circles: {len(found)}" + "".join(f"\n  {len(c)} modules: {', '.join(c)}" for c in found))
    up = upward(edges)
    print(f"upward imports: {len(up)}" + "".join(f"\n  {m}:{line} -> {t}" for m, t, line in up))
    print("largest files:" + "".join(f"\n  {n:5d} {p}" for n, p in largest_files(args.root)))
    if args.edges:
        by_pair = defaultdict(list)
        for m, ts in edges.items():
            for t in ts:
                if layer_of(m) != layer_of(t):
                    by_pair[(LAYERS[layer_of(m)][0], LAYERS[layer_of(t)][0])].append(f"{m} -> {t}")
        for (a, b), items in sorted(by_pair.items()):
            print(f"{a} -> {b}: {len(items)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
