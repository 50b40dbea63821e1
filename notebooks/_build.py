"""Generate the notebooks from reviewable Python: ``python notebooks/_build.py``.

Each notebook is a list of markdown/code cells below. The ``parameters`` cell is rendered from
``workbench.notebook.PARAMETERS`` (one place for defaults and help text; papermill shows the
inline comments with ``--help-notebook``). Notebooks are written without outputs or execution
counts, with python3 kernelspec metadata (papermill needs it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from workbench.notebook import PARAMETERS

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def annotation(default) -> str:
    """The type papermill shows with --help-notebook (a string annotation for None defaults)."""
    return '"Optional[int]"' if default is None else type(default).__name__


def parameters(notebook: str, intro: str):
    lines = [f"# {intro}"]
    for name, default, help in PARAMETERS[notebook]:
        if "=" in help:  # papermill skips any parameter line holding two '=' (no help then)
            raise ValueError(f"help text of {notebook}:{name} must not contain '=': {help!r}")
        lines.append(f"{name}: {annotation(default)} = {default!r}  # {help}")
    cell = code("\n".join(lines))
    cell.metadata["tags"] = ["parameters"]
    return cell


def write(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                             "language_info": {"name": "python"}})
    for i, c in enumerate(nb.cells):  # stable ids keep diffs small
        c["id"] = f"{name}-{i:02d}"
    path = HERE / f"{name}.ipynb"
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n")
    return path


VALIDATE = """
import workbench.notebook as nb
from workbench.probes import figures
nb.init_plotly()
setup = nb.setup(nb.params_from(globals(), "{name}"), nb.defaults("{name}"))  # fails fast, one clear line
cfg = setup.cfg
setup.show()
"""


# ------------------------------------------------------------------------------------ gpd
def gpd_notebook() -> list:
    return [
        md("""
# Gap Preserving Distillation (GPD)

GPD (Guo et al., ICLR 2025) trains a **dynamic teacher** T_d together with the student S. T_d is
a wider, multi-branch copy of S built by *inverse reparameterization* (same function at the
start, so the S-T_d gap starts at zero) and S is always a slice of T_d (*channel-branch
reparameterization*), so every T_d update moves S too. A pre-trained **static teacher** T_s
(here trained once and cached) supplies the base distillation loss (DKD by default).

This notebook: validates the parameters, trains (or reuses) T_s, runs GPD, and shows the gaps,
the accuracies, discriminability vs transferability, feature maps and the extracted student.

* GPU run (CIFAR-100 protocol): `papermill notebooks/gpd.ipynb out.ipynb -p epochs 240`
* Offline CPU demo (embedded digits, ~4 min): `make demo`, or `-p dataset digits`.
  With `preset="auto"`, parameters you leave at their default take the measured digits demo
  values (teacher resnet8x4, student resnet8, 15 images/class, 60 epochs, cosine lr); anything
  you pass explicitly wins.
"""),
        parameters("gpd", "Defaults: a real GPU run of the CIFAR-100 protocol (resnet32x4 -> resnet8x4, GPD on DKD)."),
        md("## 1. Validate the parameters\nEvery parameter is checked before any work starts; a bad value stops here with one line naming it."),
        code(VALIDATE.format(name="gpd")),
        md("## 2. Train (or reuse) the static teacher, then run GPD\nA finished run is reused instantly (resume); the teacher is cached under `runs/teachers/`."),
        code("""
result, models = nb.train(cfg, setup.options["nproc"])
records = result.records
print("run folder:", result.run_dir)
"""),
        md("## 3. Gap curves\nT_s-S is the static teacher's gap, T_d-S the dynamic teacher's. GPD's claim: T_d-S stays moderate while T_s-S is large."),
        code('figures.gap_curves(records, metrics=["acc_gap", "kl", "cka"])'),
        md("## 4. Top-1 of S, T_d and T_s over epochs"),
        code("figures.top1_curves(records)"),
        md("## 5. Discriminability vs transferability\nDiscriminability: source-task accuracy. Transferability: a linear probe on frozen features of a *different* target set (digits: set `source_classes`; CIFAR-100: CIFAR-10 when present)."),
        code("figures.disc_transfer_curves(records)"),
        md("## 6. Feature maps: student vs dynamic teacher (vs static teacher)\nPenultimate features of the same test images, shared PCA initialisation, panels aligned."),
        code("""
fmap = nb.feature_map_figure(models, cfg, setup.options["embed_points"], setup.options["embed_method"])
fmap if fmap is not None else print("feature maps need the models in this kernel (nproc=1)")
"""),
        md("## 7. Final table and the extracted plain student\n`student.pt` is the ordinary student architecture (folded + sliced out of T_d). It is loaded with `strict=True` and re-evaluated: the two accuracies must agree."),
        code("nb.final_table(records)"),
        code("nb.check_student(cfg, result.run_dir, records)"),
    ]


NOTEBOOKS = {"gpd": gpd_notebook}


def main(names: list[str]) -> None:
    for name in names or list(NOTEBOOKS):
        print("wrote", write(name, NOTEBOOKS[name]()))


if __name__ == "__main__":
    main(sys.argv[1:])
