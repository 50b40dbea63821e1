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

from workbench.config import fields_by_name
from workbench.notebook import PARAMETERS

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def annotation(name: str, default) -> str:
    """The type papermill shows with --help-notebook (the config's string annotation, e.g.
    "Optional[float]", for None defaults)."""
    return f'"{fields_by_name()[name].type}"' if default is None else type(default).__name__


def parameters(notebook: str, intro: str):
    lines = [f"# {intro}"]
    for name, default, help in PARAMETERS[notebook]:
        if "=" in help:  # papermill skips any parameter line holding two '=' (no help then)
            raise ValueError(f"help text of {notebook}:{name} must not contain '=': {help!r}")
        lines.append(f"{name}: {annotation(name, default)} = {default!r}  # {help}")
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
* Offline CPU demo (embedded Fashion-MNIST subset): `make demo`, or `-p dataset fashion_mnist`.
  With `preset="auto"`, parameters you leave at their default take the measured demo values
  (the shipped resnet20 teacher, student resnet8 on 100 images/class, 20 epochs, cosine lr);
  `-p dataset digits` is the smaller digits demo. Anything you pass explicitly wins.
"""),
        parameters("gpd", "Defaults: a real GPU run of the CIFAR-100 protocol (resnet32x4 -> resnet8x4, GPD on DKD)."),
        md("## 1. Validate the parameters\nEvery parameter is checked before any work starts; a bad value stops here with one line naming it."),
        code(VALIDATE.format(name="gpd")),
        md("## 2. Train (or reuse) the static teacher, then run GPD\nA finished run is reused instantly (resume); the teacher is cached under `runs/teachers/`."),
        code("""
result, models = nb.train(cfg, setup.options["nproc"])
records = result.records
print("run folder:", result.run_dir)
nb.headline(records)
"""),
        md("## 3. Gap curves\nT_s-S is the static teacher's gap, T_d-S the dynamic teacher's. GPD's claim: T_d-S stays "
           "moderate while T_s-S is large. Moderate is not positive: T_d starts as the student and shares its weights, so it "
           "leads only where its extra width buys accuracy. On the CPU demo (1000 training images, 20 epochs) it does not: "
           "T_d's network trained alone is no better than the student's, and T_d ends level with S or a point below "
           "(README, \"Why T_d does not lead S here\": a 3-seed study)."),
        code('figures.gap_curves(records, metrics=["acc_gap", "kl", "cka"])'),
        md("## 4. Top-1 of S, T_d and T_s over epochs"),
        code("figures.top1_curves(records)"),
        md("## 5. Discriminability vs transferability\nDiscriminability: source-task accuracy. Transferability: a linear probe on frozen features of a *different* target set (digits, fashion_mnist: set `source_classes`, the other classes become the target; CIFAR-100: CIFAR-10 when present). Without a target the figure shows discriminability alone and says so."),
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


# ------------------------------------------------------------------------------- teaching
def teaching_notebook() -> list:
    return [
        md("""
# GPD in one sitting: a reading-group walk-through

Runs offline on a CPU (the embedded Fashion-MNIST subset and its shipped teacher: nothing to
download, no teacher to train): about a minute on 2 idle cores (60 s measured with papermill) and
longer on a busy machine -- the progress line under section 4 gives the ETA. Four ideas, each shown in code, and every
sentence this notebook prints is computed from its own run (and checked):

1. **Inverse Reparameterization (IR)**: widen the student into a dynamic teacher T_d *without
   changing its function* (extra conv branches, then channel copies).
2. **Channel-Branch Reparameterization (CBR)**: slice the student's channels out of every tensor
   and fold the branches back -> the student again, exactly. In GPD the student *is* this slice of
   T_d (hard parameter sharing).
3. **Training**: T_d learns from labels + the static teacher T_s; the student learns from labels,
   T_s and T_d.
4. **The gap**: T_s is far ahead of the student; T_d starts level with it and stays close.
"""),
        parameters("teaching", "Small CPU settings: change them here (or pass papermill -p name value)."),
        code("""
import torch
import workbench.notebook as nb
from workbench import gpd, models
from workbench.probes import figures
nb.init_plotly()
params = nb.params_from(globals(), "teaching")
options = {k: params.pop(k) for k in ("surgery_ratio", "surgery_branches")}
setup = nb.setup(dict(params, dataset="fashion_mnist", preset="fashion/demo/gpd_dkd", method="gpd", base="dkd"))
cfg = setup.cfg  # the GPD run of section 4: the demo preset (ratio 2, default branches, grad clip 5)
surgery_ratio = nb.NOTEBOOK_CHECKS["surgery_ratio"]("surgery_ratio", options["surgery_ratio"])
surgery_branches = nb.NOTEBOOK_CHECKS["surgery_branches"]("surgery_branches", options["surgery_branches"])
LEARNED_X_CHANCE = 3  # "learned" = top-1 above 3x chance
torch.manual_seed(0);  # the surgery demo below draws random weights
"""),
        md("""
## 1. A student
A CIFAR-style ResNet-8 for 28x28 grayscale clothing images (10 classes).
"""),
        code("""
student = models.build("resnet8", num_classes=10, in_channels=1, image_size=28).eval()
x = torch.randn(16, 1, 28, 28)  # any input works: the equalities below hold for every x
print(f"student parameters: {nb.param_count(student):,}")
"""),
        md("""
## 2. IR: expand the student into T_d
Each 3x3 stride-1 conv of the student first becomes a multi-branch conv (extra branches whose
per-channel scale starts at 0 here: the reference code's init for a pre-trained student; from
scratch it uses non-zero scales, and T_d still equals the student view). Then every hidden width
C becomes round(r * C): new channels copy existing ones and each copy is divided by its count
(the reference convention: T_d's features are the student's divided by r), so the next layer's
sum reads back the original. This surgery demo uses `surgery_ratio` and `surgery_branches`; the
training run in section 4 uses its preset's own ratio and branches.
"""),
        code("""
dt = gpd.expand(student, ratio=surgery_ratio, branches=surgery_branches, noise=0.0, scale_init="one_zero").eval()
ir_err = nb.max_logit_diff(student, dt, x)
assert ir_err <= nb.EQUAL_LOGITS, ir_err
print(f"T_d parameters: {nb.param_count(dt):,}  (surgery demo: ratio {surgery_ratio}, {surgery_branches} extra branches per conv)")
print(f"IR is exact: max |T_d(x) - S(x)| / max |S(x)| = {ir_err:.1e} (float32 rounding; 'equal' means <= {nb.EQUAL_LOGITS:g})")
nb.surgery_table(dt, student)
"""),
        md("""
## 3. CBR: fold and slice T_d back into a plain student
First change T_d (one SGD step on a random loss) so this is not trivial. The student view
(computed from T_d's weights on every forward) and `extract_student(T_d)` (a plain ResNet-8,
loadable with `strict=True`) give the same logits. Both moved with T_d: the parameters are shared.
"""),
        code("""
opt = torch.optim.SGD(dt.parameters(), lr=0.1)
dt.train(); dt(x).logsumexp(1).mean().backward(); opt.step(); dt.eval()
plain = gpd.extract_student(dt).eval()
student_view = lambda inp: dt(inp, view="student")
cbr_err, moved = nb.max_logit_diff(student_view, plain, x), nb.max_logit_diff(student, student_view, x)
assert cbr_err <= nb.EQUAL_LOGITS and moved > nb.EQUAL_LOGITS, (cbr_err, moved)
models.build("resnet8", num_classes=10, in_channels=1, image_size=28).load_state_dict(plain.state_dict(), strict=True)
print(f"CBR is exact: the extracted {type(plain).__name__} equals the student view within {cbr_err:.1e}, "
      f"and it loads with strict=True into a fresh resnet8")
print(f"the shared weights moved the student with T_d: it now differs from the original by {moved:.1e}")
"""),
        md("""
## 4. A short GPD run
T_s: the shipped resnet20 (trained on all 5000 training images of the subset). The student
resnet8 sees 100 images per class. GPD on DKD trains T_d and the student together; losses per
batch: `L_D = CE(z_D, y) + DKD(z_D, z_T)` and `L_S = CE(z_S, y) + DKD(z_S, z_T) + 3 SCE(z_S, sg(z_D))`,
one optimizer step on T_d (gradient-norm clip 5, as the reference code).
"""),
        code("""
result, trained = nb.train(cfg, live_curves=False)  # the progress bar while it trains; the gaps follow in section 5
records = result.records
figures.top1_curves(records)
"""),
        code("""
out = nb.outcome(records)
chance = 100.0 / 10
learned = out["S"] > LEARNED_X_CHANCE * chance
print(("The student learned: " if learned else "Too few epochs to learn much (raise epochs): ")
      + f"{out['S']:.1f} % top-1 after {out['epochs']} epochs (chance: {chance:.0f} %); "
      f"T_d {out['T_d']:.1f} %, T_s {out['T_s']:.1f} %.")
"""),
        md("""
## 5. Static gap vs dynamic gap
The static teacher's accuracy gap to the student (T_s-S) starts large; the dynamic teacher's
gap (T_d-S) starts at zero (IR) and stays small, because T_d grows with the student. Small, not
positive: T_d need not lead. On this data T_d's wider network is no more accurate than the
student's, so T_d ends level with S or a little below it (README: "Why T_d does not lead S here",
a 3-seed study).
"""),
        code("""
figures.gap_curves(records, metrics=["acc_gap", "kl"])
"""),
        code("""
gaps = nb.gap_summary(records)
start = gaps["T_d-S"]["epoch 0"]
assert abs(start) < 1.0, start  # IR: T_d starts as the student (up to the symmetry-breaking noise)
print(f"At epoch 0 the dynamic gap is {start:+.1f} points (IR), the static gap {gaps['T_s-S']['epoch 0']:+.1f}.")
print(nb.gap_sentence(gaps))
nb.Table(["pair", "gap at epoch 0", "mean |gap| over epochs", "final gap"],
         [(p, g["epoch 0"], g["mean abs"], g["final"]) for p, g in gaps.items()],
         title="top-1 gap (percentage points)")
"""),
        md("""
## Takeaway
* **IR and CBR are exact.** The dynamic teacher starts as the student (section 2), and the plain
  student can be read back out of it at any moment without retraining (section 3): the two
  networks share their weights, so training one moves the other.
* **Two teachers, two kinds of gap.** The static gap T_s-S is set by a fixed, stronger network
  and closes only as fast as the student learns. The dynamic gap T_d-S starts at zero (IR) and
  moves with the student, because T_d trains together with it on the same data. GPD's bet is
  that a teacher kept this close to the student is easier to learn from.
* **Read the sign from the curves, not from the method.** Whether T_d ends above or below S is
  something a run measures, not something GPD guarantees, and a short run on 100 images per
  class is one data point: compare several seeds and longer schedules (the README's tables)
  before concluding. This run, in numbers:
"""),
        code("""
print(nb.gap_takeaway(gaps))
"""),
    ]


# -------------------------------------------------------------------------------- compare
def compare_notebook() -> list:
    return [
        md("""
# Compare methods on one teacher-student pair

Several methods x seeds, same data, same protocol: CE, KD, DKD, KD+DOT, KD+CTKD, GPD on KD / DKD
and GPD from scratch (no static teacher). The runs form one sweep (`workbench.sweep`, on submitit):
`executor=local` trains them side by side on this machine (one per GPU, or per CPU core),
`executor=slurm` submits one job array and waits, `executor=debug` trains them in this kernel.
Every run is an ordinary run folder under `out_dir` (finished runs are picked up, killed ones
resume). Shows the results table (mean +- std over seeds, best and last epoch, the gaps, published
numbers where a row follows a published protocol), the gap curves overlaid, and one feature-map
panel per method.

Offline CPU: `papermill notebooks/compare.ipynb out.ipynb -p dataset digits -p seeds 0,1,2`.
A cluster: `papermill notebooks/compare.ipynb out.ipynb -p executor slurm -p partition gpu -p time_limit 1440`.
"""),
        parameters("compare", "Defaults: CIFAR-100 resnet32x4 -> resnet8x4, 8 methods x 3 seeds (a GPU job)."),
        code("""
import workbench.notebook as nb
from workbench.probes import figures
nb.init_plotly()
first, runs = nb.setup_many(nb.params_from(globals(), "compare"), nb.defaults("compare"), check_files=False)
cfg, options = first.cfg, first.options
sweep = nb.plan_compare(runs, options)  # validates every run before anything starts
nb.Table(["method", "seed", "run folder"], [(m, s, c.run_dir()) for m, s, c in runs], title=f"runs of sweep {sweep.dir}")
"""),
        md("## Train (or pick up) every run\nOne line per run, updated in place; static teachers are trained first and cached."),
        code("statuses = nb.run_sweep(sweep)"),
        md("## Results: one row per method (mean +- sample std over seeds)"),
        code("nb.results_table(sweep)"),
        code("""
records = nb.sweep_records(sweep, runs)
students = nb.first_students(sweep, runs)
"""),
        md("## Gap curves overlaid (first seed; line style per method)\nGPD runs also have T_d-S and T_s-T_d; CE has no teacher, hence no gap."),
        code('figures.gap_curves({label: recs[0] for label, recs in records.items()}, metrics=["acc_gap", "kl"], pairs=["T_s-S", "T_d-S"])'),
        code('figures.top1_curves({label: recs[0] for label, recs in records.items()}, roles=["student"])'),
        md("""
## Group methods: every network of the group (DML, ORC)

DML trains its networks together (the student `S` and its peers `P1` ...); ORC also fine-tunes its
pivot teacher `T_p` (epoch 0: the static teacher as loaded). First seed, top-1 of every network,
then ORC's role change: how often each student was the temporary teacher, per epoch.
"""),
        code("""
groups = {label: recs[0] for label, recs in records.items() if any(r.get("role") == "peer1" for r in recs[0])}
if groups:
    display(figures.top1_curves(groups))
    orc = {label: recs for label, recs in groups.items() if any(k.startswith(figures.TT_SHARE) for r in recs for k in r)}
    display(figures.temporary_teacher_shares(orc)) if orc else None
else:
    print("no group method among the compared methods: add dml or orc to methods")
"""),
        md("## Feature maps of each method's student (first seed)"),
        code('nb.method_feature_maps(students, cfg, options["embed_points"], options["embed_method"])'),
        md("""
## Discriminability vs transferability: CTC and DisCo-style embedding distillation

The runs of `python bench/ctc_embed_study.py` (Fashion-MNIST classes 0-4 as the source task, the
held-out classes 5-9 as the transfer target; CE, CTC with both paper presets, KD, `embed` at three
`embed_hidden` widths; under `<out_dir>/ctc_embed_study/`): source test top-1 (top) and the linear
probe on the held-out classes (bottom) per epoch, mean over seeds. Over-compression shows as a
transfer curve that peaks and then falls while the source curve still rises.
"""),
        code("""
study = nb.study_runs(nb.study_root(cfg))
nb.study_disc_transfer(study) if study else print(f"no study runs under {nb.study_root(cfg)}: run python bench/ctc_embed_study.py")
"""),
        md("""
## Distiller search (after Auto-KD, on Optuna)

Every search under `<out_dir>/searches/` (`python -m workbench search bench/search_fashion.yaml`):
the score of each trial on the validation split (history), which parameters mattered (fANOVA
importance) and every trial's parameters against its score (parallel coordinates). The winner is
`preset=search/<name>/best`; its re-run at the full budget beside the baselines is the README's
search table (`python bench/search_study.py`).
"""),
        code("figs = nb.search_figures(nb.search_root(cfg))"),
    ]


# -------------------------------------------------------------------------------- explore
def explore_notebook() -> list:
    return [
        md("""
# Explore runs interactively

Open in JupyterLab (`make lab`). Pick runs from `runs/` and a metric, toggle the pairs
(T_s-S, T_d-S, T_s-T_d), scrub epochs with the slider (dotted line + values at that epoch).
Runs of one recipe are named by the settings that tell them apart (e.g. `(epochs=30)`), not by
their settings hash; runs still training are marked `[training]`, and *refresh* (or *follow*,
every few seconds while one trains) reads new runs and new epochs.
Set `live = True` to train a small digits GPD run (from scratch: no teacher to train first) and
watch its gap curves update as epochs finish.
"""),
        parameters("explore", "Interactive settings."),
        code("""
from pathlib import Path
from IPython.display import display
import workbench.notebook as nb
from workbench import paths
nb.init_plotly()
setup = nb.setup(nb.params_from(globals(), "explore"), check_files=False)
root = Path(setup.cfg.out_dir) if setup.cfg.out_dir else paths.runs_root()
nb.runs_table(root)
"""),
        md("## Runs, metrics, pairs, epochs"),
        code("""
explorer = nb.Explorer(root)
explorer.widget()
"""),
        md("## Live mode\nTrains `live_epochs` epochs of GPD from scratch on digits (no static teacher, so "
           "the one pair is T_d-S); progress and the gap figure update in place after every epoch."),
        code("""
if setup.options["live"]:
    live_cfg = nb.setup(dict(dataset="digits", preset="digits/demo/gpd_scratch", method="gpd", base="none",
                             teacher="none", epochs=setup.options["live_epochs"], out_dir=str(root),
                             name=f"live_gpd_scratch_e{setup.options['live_epochs']}",
                             progress=setup.cfg.progress)).cfg
    result, _ = nb.train(live_cfg)  # live gap curves: nb.train's default in a notebook
    print(f"run folder: {result.run_dir}")
else:
    print("live = False: set live = True (or papermill -p live True) to train and watch a run")
"""),
    ]


NOTEBOOKS = {"gpd": gpd_notebook, "teaching": teaching_notebook, "compare": compare_notebook,
             "explore": explore_notebook}


def main(names: list[str]) -> None:
    for name in names or list(NOTEBOOKS):
        print("wrote", write(name, NOTEBOOKS[name]()))


if __name__ == "__main__":
    main(sys.argv[1:])
