"""workbench.notebook: parameter checks, the digits auto preset, tables, live curves (no kernels)."""
import math
from pathlib import Path

import pytest

import workbench.notebook as nb
from workbench.presets import get_preset


def gpd_params(**changes):
    return dict(nb.defaults("gpd"), **changes)


def test_setup_converts_papermill_strings_and_keeps_cifar_defaults(tmp_path):
    su = nb.setup(gpd_params(epochs="3", ratio="1.5", nproc="2", out_dir=str(tmp_path)), nb.defaults("gpd"),
                  check_files=False)
    assert (su.cfg.epochs, su.cfg.ratio, su.options["nproc"]) == (3, 1.5, 2)
    assert (su.cfg.dataset, su.cfg.teacher, su.cfg.student, su.cfg.resolved_base) == ("cifar100", "resnet32x4", "resnet8x4", "dkd")
    assert su.preset == ""  # auto preset only on digits


@pytest.mark.parametrize("key, value, must_contain", [
    ("epochs", "ten", ["epochs", "'ten'", "integer"]),
    ("method", "foo", ["method", "'foo'", "gpd", "kd"]),
    ("embed_method", "umpa", ["embed_method", "'umpa'", "tsne", "did you mean 'umap'"]),
    ("nproc", 0, ["nproc", "0", "[1, inf]"]),
    ("ratio", 0.5, ["ratio", "0.5", "allowed range"]),
    ("student", "resnet9", ["student", "resnet9", "resnet8"]),
])
def test_bad_parameter_names_parameter_value_and_choices(tmp_path, key, value, must_contain):
    with pytest.raises(nb.ParameterError) as e:
        nb.setup(gpd_params(**{key: value}, out_dir=str(tmp_path)), nb.defaults("gpd"))
    for s in must_contain:
        assert s in str(e.value), (s, str(e.value))


def test_parameter_error_renders_as_one_line():
    err = nb.ParameterError("epochs: expected an integer, got 'ten'")
    assert isinstance(err, ValueError)
    assert err._render_traceback_() == ["ParameterError: epochs: expected an integer, got 'ten'"]


def test_unknown_parameter_is_rejected():
    with pytest.raises(nb.ParameterError, match="unknown parameter 'epoch'.*did you mean 'epochs'"):
        nb.setup(dict(gpd_params(), epoch=3), check_files=False)


def test_digits_auto_preset_fills_untouched_defaults_and_explicit_values_win(tmp_path):
    d = nb.defaults("gpd")
    su = nb.setup(gpd_params(dataset="digits", epochs=7, out_dir=str(tmp_path)), d, check_files=False)
    preset = get_preset("digits/demo/gpd_dkd")
    assert su.preset == "digits/demo/gpd_dkd"
    assert su.cfg.epochs == 7  # explicit value wins over the preset's 60
    for k in ("teacher", "student", "train_per_class", "lr", "schedule", "teacher_epochs"):
        assert getattr(su.cfg, k) == preset[k], k
    assert su.options["embed_points"] == nb.DIGITS_EXTRAS["embed_points"]
    # the method keys never come from a preset
    assert (su.cfg.method, su.cfg.resolved_base, su.cfg.grad_clip) == ("gpd", "dkd", d["grad_clip"])


@pytest.mark.parametrize("params, name", [
    (dict(method="gpd", base="none"), "digits/demo/gpd_scratch"),
    (dict(method="gpd", base="kd"), "digits/demo/gpd_kd"),
    (dict(method="kd", dot=True), "digits/demo/kd_dot"),
    (dict(method="ctkd", base="kd"), "digits/demo/kd_ctkd"),
    (dict(method="dkd", dot="true"), "digits/demo/dkd"),  # no dkd_dot digits preset: the one of the same method
    (dict(method="gpd", base="reviewkd"), "digits/demo/gpd_kd"),  # the first GPD preset of the family
    (dict(method="fitnet"), "digits/demo/ce"),  # no preset of the method: the method-free settings
    (dict(method="nonesuch"), "digits/demo/ce"),  # invalid method keys: setup() reports them
    (dict(dataset="fashion_mnist", method="composed"), "fashion/demo/composed_kd_at"),  # found by what it trains
    (dict(dataset="cifar100", method="kd"), ""),  # no demo presets for the dataset
])
def test_preset_name(params, name):
    assert nb.preset_name(params) == name


def test_preset_off_and_bad_preset(tmp_path):
    su = nb.setup(gpd_params(dataset="digits", preset="", teacher="resnet8x4", student="resnet8"),
                  nb.defaults("gpd"), check_files=False)
    assert su.cfg.epochs == 240 and su.preset == ""
    with pytest.raises(nb.ParameterError, match="preset.*'nope'"):
        nb.setup(gpd_params(preset="nope"), nb.defaults("gpd"), check_files=False)


def test_setup_many_one_config_per_method_and_seed(tmp_path):
    params = dict(nb.defaults("compare"), dataset="digits", methods="ce, gpd+kd", seeds="3,4", out_dir=str(tmp_path))
    first, runs = nb.setup_many(params, nb.defaults("compare"))
    assert [(m, s) for m, s, _ in runs] == [("ce", 3), ("ce", 4), ("gpd+kd", 3), ("gpd+kd", 4)]
    assert [c.seed for _, _, c in runs] == [3, 4, 3, 4]
    assert [c.method for _, _, c in runs] == ["ce", "ce", "gpd", "gpd"]
    assert runs[2][2].resolved_base == "kd" and runs[2][2].grad_clip == 5.0
    assert len({c.run_dir() for _, _, c in runs}) == 4  # no two runs share a folder
    with pytest.raises(nb.ParameterError, match="methods.*'gpd\\+foo'"):
        nb.setup_many(dict(params, methods="ce,gpd+foo"), nb.defaults("compare"))
    with pytest.raises(nb.ParameterError, match="seeds"):
        nb.setup_many(dict(params, seeds=""), nb.defaults("compare"))


def test_every_notebook_parameter_is_a_config_key_or_checked_here():
    from workbench.config import RunConfig

    for name in nb.PARAMETERS:
        for key in nb.defaults(name):
            assert key in RunConfig.keys() or key in nb.NOTEBOOK_CHECKS, (name, key)


SUMMARY = [
    {"kind": "summary", "epoch": 3, "role": "student", "best_top1": 90.0, "best_epoch": 2, "last_top1": 89.0},
    {"kind": "summary", "epoch": 3, "role": "teacher", "best_top1": 95.0, "best_epoch": 0, "last_top1": 95.0},
    {"kind": "gap", "epoch": 2, "pair": "T_s-S", "metric": "acc_gap", "value": 9.0},
    {"kind": "gap", "epoch": 3, "pair": "T_s-S", "metric": "acc_gap", "value": 6.0},
    {"kind": "gap", "epoch": 3, "pair": "T_s-S", "metric": "kl", "value": 0.25},
]


def test_final_table_separates_accuracies_from_last_epoch_gaps():
    acc, gaps = nb.final_table(SUMMARY).tables
    assert acc.columns[:4] == ["model", "best top-1 (%)", "best epoch", "last top-1 (%)"]
    assert acc.rows == [["S", 90.0, 2, 89.0], ["T_s", 95.0, 0, 95.0]]
    assert gaps.columns[:3] == ["pair", "top-1 gap (points)", "KL (nats)"]
    assert gaps.rows[0][:3] == ["T_s-S", 6.0, 0.25] and gaps.title == "gaps at epoch 3"  # last epoch (3), not 2
    text = str(nb.final_table(SUMMARY))
    assert "89.00" in text and "0.25" in text
    assert "<td>90.00</td>" in nb.final_table(SUMMARY)._repr_html_()
    with_ema = [dict(SUMMARY[0], best_top1_reported=91.0, last_top1_reported=90.5)] + SUMMARY[1:]
    assert nb.accuracy_table(with_ema).rows[0][-2:] == [91.0, 90.5]


def test_compare_table_mean_and_sample_std():
    def run(best, last):
        return [{"kind": "summary", "role": "student", "best_top1": best, "last_top1": last}]

    t = nb.compare_table({"kd": [run(90.0, 88.0), run(92.0, 90.0), run(94.0, 89.0)], "ce": [run(80.0, 80.0)]})
    # kd: mean 92, sample std 2; last: mean 89, std 1
    assert t.rows[0] == ["kd", 3, "92.00 ± 2.00", "89.00 ± 1.00"]
    assert t.rows[1] == ["ce", 1, "80.00 ± 0.00", "80.00 ± 0.00"]


def test_table_formats_nan_none_and_escapes_html():
    t = nb.Table(["a", "b"], [[float("nan"), None], ["<x>", 1.23456]], float_format=".3f")
    assert "<td>&lt;x&gt;</td>" in t._repr_html_()
    assert str(t).splitlines()[-1].split() == ["<x>", "1.235"]
    assert "nan" in str(t)


def test_live_curves_update_figurewidget_traces():
    go = pytest.importorskip("plotly.graph_objects")
    pytest.importorskip("anywidget")
    w = go.FigureWidget()
    for p in ("T_s-S", "T_d-S"):
        w.add_scatter(x=[], y=[], name=p)
    live = nb.LiveCurves(w, metric="acc_gap", pairs=("T_s-S", "T_d-S"))
    recs = [{"kind": "gap", "epoch": e, "pair": "T_s-S", "metric": "acc_gap", "value": 10.0 - e} for e in (2, 0, 1)]
    recs += [{"kind": "gap", "epoch": 1, "pair": "T_s-S", "metric": "kl", "value": 5.0}]
    live.update(recs)
    assert list(w.data[0].x) == [0, 1, 2] and list(w.data[0].y) == [10.0, 9.0, 8.0]
    assert list(w.data[1].x) == [] and live.updates == 1


def test_defaults_rejects_unknown_notebook():
    with pytest.raises(ValueError, match="unknown notebook 'gdp'.*did you mean 'gpd'"):
        nb.defaults("gdp")
    assert math.isclose(nb.defaults("gpd")["gpd_lambda"], 3.0)


# ------------------------------------------------------------------ issue 11, cases 8, 9 and 11
def test_every_run_key_is_a_gpd_notebook_parameter():
    """Everything `python -m workbench train` accepts can be passed to gpd.ipynb with -p (case 8)."""
    from workbench.config import RunConfig

    assert set(RunConfig.keys()) <= set(nb.defaults("gpd"))
    assert {"data_root", "teacher_arch", "teacher_epochs"} <= set(nb.defaults("compare"))


def _namespace(injected: str, notebook="gpd"):
    """A kernel namespace after the parameters cell and papermill's injected cell ran."""
    return dict(nb.defaults(notebook), In=["", "dataset = 'cifar100'\n", injected])


def test_unknown_papermill_name_stops_with_did_you_mean():
    """`-p epoch 3` (typo) was a papermill warning and the run went on with defaults (case 8)."""
    with pytest.raises(nb.ParameterError, match=r"papermill -p epoch: unknown gpd.ipynb parameter 'epoch'.*did you mean 'epochs'"):
        nb.params_from(_namespace("# Parameters\nepoch = 3\n"), "gpd")
    params = nb.params_from(dict(_namespace("# Parameters\nepochs = 3\nkd_T = 2.0\n"), epochs=3, kd_T=2.0), "gpd")
    assert params["epochs"] == 3 and params["kd_T"] == 2.0
    assert nb.injected_names({"In": ["x = 1"]}) == []  # interactive session: nothing injected, nothing checked


def _parameters_cell(notebook: str, extra: str = "") -> str:
    """The committed notebook's parameters cell source, with ``extra`` lines typed into it."""
    import nbformat

    path = Path(__file__).resolve().parents[2] / "notebooks" / f"{notebook}.ipynb"
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return cell.source + extra


VALIDATION_CELL = 'setup = nb.setup(nb.params_from(globals(), "gpd"), nb.defaults("gpd"))\n'


def test_unknown_name_typed_in_the_parameters_cell_stops_with_did_you_mean():
    """Issue 29 item 7: `epoch = 5` typed in Lab's parameters cell was ignored (20 epochs ran)."""
    typed = dict(nb.defaults("gpd"), epoch=5)
    lab = dict(typed, In=["", _parameters_cell("gpd", "\nepoch = 5\n"), VALIDATION_CELL])
    with pytest.raises(nb.ParameterError) as e:
        nb.params_from(lab, "gpd")
    msg = str(e.value)
    assert msg.startswith("parameters cell: epoch = ...: unknown gpd.ipynb parameter 'epoch' (did you mean 'epochs'?)"), msg
    assert f"the parameters cell lists all {len(nb.defaults('gpd'))}" in msg and "kd_T" not in msg, msg
    # a cell of assignments added under the parameters cell counts too; the cell running is not one
    below = dict(typed, In=["", _parameters_cell("gpd"), "epoch = 5", VALIDATION_CELL])
    with pytest.raises(nb.ParameterError, match="did you mean 'epochs'"):
        nb.params_from(below, "gpd")
    # a few parameters (teaching): the line lists them all
    with pytest.raises(nb.ParameterError, match=r"unknown teaching.ipynb parameter 'epoch'; valid choices: epochs, .*did you mean 'epochs'"):
        nb.params_from(dict(nb.defaults("teaching"), In=["", _parameters_cell("teaching", "\nepoch = 5"), "x"]), "teaching")
    # the parameters cell as committed, or any other cell before the validation: nothing to object to
    assert nb.params_from(dict(nb.defaults("gpd"), In=["", _parameters_cell("gpd"), VALIDATION_CELL]), "gpd")
    assert nb.parameters_cell_names({"In": ["", "import torch\nx = 1", VALIDATION_CELL]}) == []
    assert nb.parameters_cell_names({"In": ["", "epoch = 5", "print(epoch)", VALIDATION_CELL]}) == []
    assert nb.parameters_cell_names({"In": ["", "a = 1  # note\nb: int = 2", "c = 3", VALIDATION_CELL]}) == ["a", "b", "c"]


def _teacher_file(tmp_path, num_classes):
    import torch

    from workbench import models

    path = tmp_path / "save" / "models" / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model": models.build("resnet8", num_classes, 1).state_dict()}, path)
    return path


def test_wrong_teacher_file_fails_in_the_validation_cell(tmp_path):
    """A teacher file of the wrong class count used to fail with a traceback in step 2 (case 9)."""
    path = _teacher_file(tmp_path, num_classes=100)
    with pytest.raises(nb.ParameterError, match=r"teacher: .*100.*10"):
        nb.setup(gpd_params(dataset="digits", teacher=str(path), out_dir=str(tmp_path / "runs")), nb.defaults("gpd"))
    assert not (tmp_path / "runs").exists()


def test_refused_resume_fails_in_the_validation_cell(tmp_path):
    """A run folder holding a run of other settings is refused by setup, before any training (case 9)."""
    from workbench.experiment import run

    fast = dict(dataset="digits", method="ce", student="resnet8", train_per_class=5, epochs=1, probe_every=0,
                progress=False, out_dir=str(tmp_path), name="mine", preset="")
    run(fast, log=lambda *_: None)
    with pytest.raises(nb.ParameterError, match=r"different config \(lr: saved 0.05 vs now 0.1"):
        nb.setup(dict(fast, lr=0.1))


def test_method_kd_alone_works_in_the_gpd_notebook(tmp_path):
    """The notebook's base follows the method unless given: `-p method kd` alone is valid (case 11)."""
    su = nb.setup(gpd_params(method="kd", out_dir=str(tmp_path)), nb.defaults("gpd"), check_files=False)
    assert (su.cfg.method, su.cfg.resolved_base) == ("kd", "kd")


def test_training_failures_show_as_one_line(tmp_path):
    """A refusal raised while training (here: the run folder is in use) renders as one line."""
    from workbench.engine.lock import RunLock

    cfg = nb.setup(dict(dataset="digits", method="ce", student="resnet8", train_per_class=5, epochs=1,
                        probe_every=0, progress=False, out_dir=str(tmp_path), name="busy")).cfg
    with RunLock(tmp_path / "busy"):
        with pytest.raises(nb.RunError) as e:
            nb.train(cfg)
    assert e.value._render_traceback_() == [f"RunError: {e.value}"] and "in use by process" in str(e.value)


def test_committed_notebook_defaults_are_runconfigs_unless_an_override_is_declared():
    """What papermill would inject (the committed parameters cells) against RunConfig itself, not
    against nb.PARAMETERS: a changed RunConfig default without rebuilt notebooks, or a literal
    default restated in a spec, fails here."""
    import papermill as pm

    from workbench.config import RunConfig

    checked = 0
    for name in nb.PARAMETERS:
        stored = pm.inspect_notebook(f"notebooks/{name}.ipynb")
        for key, info in stored.items():
            if key in RunConfig.keys():
                expected = nb.OVERRIDES.get(name, {}).get(key, RunConfig.default(key))
                checked += 1
            else:
                expected = nb.NOTEBOOK_ONLY[key]  # KeyError: an undeclared notebook-only parameter
            assert info["default"] == repr(expected), (name, key, info["default"], expected)
    assert checked > 40  # gpd.ipynb alone lists every run key
    for name, over in nb.OVERRIDES.items():
        for key, value in over.items():
            assert value != RunConfig.default(key), f"{name}: override of {key} restates RunConfig's default"


@pytest.mark.parametrize("word, value", [("true", True), ("on", True), ("Yes", True), ("1", True), (1, True),
                                         ("false", False), ("off", False), ("no", False), (0, False)])
def test_notebook_booleans_use_the_config_parser(word, value):
    from workbench.config import parse_bool

    assert nb.NOTEBOOK_CHECKS["live"]("live", word) is value is parse_bool("live", word)
    with pytest.raises(nb.ParameterError, match="live: expected a boolean"):
        nb.NOTEBOOK_CHECKS["live"]("live", "maybe")


def test_one_role_label_map():
    assert [nb.role_label(r) for r in ("student", "teacher", "dynamic_teacher", "student_ema", "dynamic_teacher_ema", "x")] \
        == ["S", "T_s", "T_d", "S_ema", "T_d_ema", "x"]
    import workbench.engine.trainer as trainer_module
    import workbench.probes.figures as figures_module

    assert not hasattr(trainer_module, "ROLE_SHORT") and not hasattr(figures_module, "ROLE_LABELS")


def _progress_with_fake_display(monkeypatch):
    import workbench.nb.progress as progress

    shown = []
    monkeypatch.setattr(progress, "_display", lambda obj, handle=None: shown.append(obj) or "handle")
    return progress.NotebookProgress(), shown


def test_notebook_progress_of_a_resumed_phase_counts_the_epochs_done_before(monkeypatch):
    """Issue 29 item 8: a run resumed at epoch 7 of 10 restarted its bar at 0 (then 5 %); it
    starts at 60 %, and the epoch is said once ("epoch 4/30 · epoch 4/30" before)."""
    p, shown = _progress_with_fake_display(monkeypatch)
    p.phase("kd: resnet20 -> resnet8", epochs=10, start=7)  # resumed: epochs 1..6 done before
    assert p.fraction() == pytest.approx(0.6) and "60%" in shown[-1]["text/html"]
    for epoch in (7, 8):
        for i in p.bar(range(4), f"epoch {epoch}/10", 4, epoch=epoch):
            if epoch == 8 and i == 1:
                assert p.fraction() == pytest.approx((6 + 1 + 1 / 4) / 10)  # 6 before + 1 done + 1 of 4 steps
                state = p.status()[0]
                assert state.count("epoch 8/10") == 1 and "epoch 8/10 · train step 1/4" in state, state
        p.line(f"epoch {epoch}/10 ...")
    assert p.fraction() == pytest.approx(0.8)
    p.close()  # stopped early (an error, Ctrl-C): the saved record says so
    text = shown[-1]["text/plain"]
    assert text.startswith("kd: resnet20 -> resnet8 | stopped at epoch 8/10") and "epoch 8/10 ..." in text
    assert "<progress" in shown[-1]["text/html"]


def test_notebook_progress_eta_is_this_sessions_pace(monkeypatch):
    import workbench.nb.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    p, _ = _progress_with_fake_display(monkeypatch)
    p.phase("kd", epochs=10, start=7)
    assert p.eta() is None
    now[0] += 30.0
    p.line("epoch 7/10 ...")  # 30 s per epoch here; 3 epochs left (not 9)
    assert p.eta() == pytest.approx(90.0) and "ETA 1:30" in p.status()[0]


def test_notebook_progress_echoes_headers_and_epoch_lines_with_eta_to_the_terminal(monkeypatch):
    import workbench.nb.progress as progress

    lines = []
    monkeypatch.setattr(progress, "_display", lambda obj, handle=None: "handle")
    p = progress.NotebookProgress(echo=lines.append)
    p.phase("gpd (base dkd): resnet20 -> resnet8", epochs=2)
    for epoch in (1, 2):
        list(p.bar(range(3), f"epoch {epoch}/2", 3, epoch=epoch))
        p.line(f"epoch {epoch}/2  loss 1.0")
    p.close()
    assert lines[0] == "== gpd (base dkd): resnet20 -> resnet8: epochs 1..2 =="
    assert lines[1].startswith("epoch 1/2  loss 1.0  | elapsed ") and "ETA" in lines[1], lines
    assert lines[2].startswith("epoch 2/2  loss 1.0  | elapsed ") and lines[2].endswith("done"), lines
    assert len(lines) == 3  # no per-step chatter


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("", False), ("0", False), ("off", False)])
def test_terminal_echo_only_when_asked(monkeypatch, value, on):
    import workbench.nb.progress as progress

    monkeypatch.setenv(progress.ECHO_ENV, value)
    assert (progress.terminal_echo() is not None) == on


def test_terminal_echo_writes_to_the_real_stderr_not_the_notebook(monkeypatch, tmp_path):
    import os

    import workbench.nb.progress as progress

    target = tmp_path / "terminal.txt"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)

    class KernelStream:  # ipykernel's OutStream: fileno() is a copy of the original descriptor
        def fileno(self):
            return fd

        def write(self, text):  # would go to the notebook
            raise AssertionError("written into the notebook stream")

    monkeypatch.setenv(progress.ECHO_ENV, "1")
    monkeypatch.setattr(progress.sys, "stderr", KernelStream())
    progress.terminal_echo()("epoch 1/2 ...")
    os.close(fd)
    assert target.read_text() == "epoch 1/2 ...\n"


@pytest.mark.parametrize("values, ticks", [
    ([-0.8, 8.2], [-2.5, 0, 2.5, 5, 7.5, 10]),
    ([0.0, 14.7], [0, 5, 10, 15]),
    ([-3.3, -0.4], [-4, -3, -2, -1, 0]),
])
def test_live_chart_has_round_ticks_and_a_zero_line(values, ticks):
    """Issue 29 item 8: the live chart's y ticks were the range cut in four (3.7, 7.4, ...) and
    no zero line marked where a gap changes sign."""
    import re

    from workbench.nb.progress import svg_chart

    page = svg_chart({"T_d-S": [(e, v) for e, v in enumerate(values)]}, epochs=30)
    labels = [float(t) for t in re.findall(r'text-anchor="end">(-?[0-9.]+)</text>', page)]
    assert labels == ticks
    assert page.count("wb-zero-line") == 1
    xs = [int(t) for t in re.findall(r'text-anchor="middle">(\d+)</text>', page)]
    assert xs == [0, 10, 20, 30]
    assert [int(t) for t in re.findall(r'text-anchor="middle">(\d+)</text>', svg_chart({"a": [(0, 1.0)]}, epochs=21))] \
        == [0, 10, 21]  # the last epoch labelled, the round tick crowding it (20) left out


def test_run_failure_in_a_notebook_is_one_line_with_the_traceback_collapsed_above(monkeypatch, fast_cfg):
    import workbench.nb.run as nbrun

    shown = []
    monkeypatch.setattr(nbrun, "in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    cfg = nb.setup(dict(fast_cfg, method="kd", lr=1e6, epochs=2, progress=False), check_files=False).cfg
    with pytest.raises(nb.RunError, match="non-finite") as e:
        nb.train(cfg, live_curves=False)
    assert e.value._render_traceback_() == [f"RunError: {e.value}"]  # the visible end of the cell: one line
    details = [o.data for o in shown if "<details>" in getattr(o, "data", "")]
    assert len(details) == 1 and "NonFiniteLossError" in details[0] and "Traceback" in details[0]


def test_configuration_is_folded_in_html_and_complete_in_text(tmp_path):
    su = nb.setup(gpd_params(out_dir=str(tmp_path)), nb.defaults("gpd"), check_files=False)
    shown = su.show()
    page = shown._repr_html_()
    n = len(su.cfg.to_dict()) + len(su.options)
    assert page.startswith("<details><summary>") and f"{n} parameters (click to expand)" in page
    assert len(str(shown).splitlines()) == n + 3  # title, header, rule, one line per parameter


def _gap_run(path, offset=0.0):
    from workbench.engine.metrics import MetricsLog

    MetricsLog(path).append([{"kind": "gap", "epoch": e, "pair": p, "metric": "acc_gap", "value": e + offset}
                             for e in range(3) for p in ("T_s-S", "T_d-S")])


def test_explorer_lists_runs_not_the_teacher_cache_and_toggles_look_different(tmp_path):
    _gap_run(tmp_path / "a_very_long_run_name_of_a_gpd_experiment_with_many_settings")
    _gap_run(tmp_path / "b", 1.0)
    _gap_run(tmp_path / "teachers" / "digits_resnet8_ce_s0-123")
    ex = nb.Explorer(tmp_path)
    assert sorted(ex.runs) == ["a_very_long_run_name_of_a_gpd_experiment_with_many_settings", "b"]
    assert ex.fig.layout.legend.orientation == "h"  # long names below the plot, not beside it
    before = set(ex.series())
    off = ex.pairs["T_d-S"]
    off.value = False  # observed: redraws
    assert {n for n in before if n.startswith("T_d-S")} and not any(n.startswith("T_d-S") for n in ex.series())
    on = ex.pairs["T_s-S"]
    assert (on.button_style, on.icon) == ("info", "check") and (off.button_style, off.icon) == ("", "")


def test_explorer_axis_titles_say_meaning_and_unit(tmp_path):
    _gap_run(tmp_path / "b")
    ex = nb.Explorer(tmp_path)
    assert ex.fig.layout.yaxis.title.text == "top-1 gap (percentage points)"
    assert ex.fig.layout.xaxis.title.text == "epoch" and ex.fig.layout.xaxis.dtick == 1  # 2 epochs: no 0.5 ticks
    ex.metric.value = "top1"
    assert ex.fig.layout.yaxis.title.text == "top-1 (%)"


def _configured_run(path, offset=0.0, **config):
    import json

    from workbench.config import RunConfig

    _gap_run(path, offset)
    (path / "config.json").write_text(json.dumps(dict(RunConfig.from_dict(dict(dataset="digits")).to_dict(), **config)))


def test_runs_differing_only_by_their_hash_are_named_by_what_differs(tmp_path):
    """Issue 29 item 9: two runs of one recipe (here 20 vs 30 epochs; a GPD and a KD run's
    method keys) were told apart only by the settings hash in lists and legends."""
    stem = "digits_resnet8-resnet8_gpd-dkd_s0"
    _configured_run(tmp_path / f"{stem}-0a1b2c3d", epochs=20, out_dir="x")
    _configured_run(tmp_path / f"{stem}-4e5f6a7b", 1.0, epochs=30, out_dir="y")  # out_dir: runtime, not shown
    _configured_run(tmp_path / "digits_resnet8_kd_s0-11111111", method="kd", grad_clip=None)
    _configured_run(tmp_path / "digits_resnet8_kd_s0-22222222", method="kd", grad_clip=5.0, lr=0.1)
    labels = nb.run_labels(nb.find_runs(tmp_path))
    assert labels[f"{stem}-0a1b2c3d"] == f"{stem} (epochs=20)" and labels[f"{stem}-4e5f6a7b"] == f"{stem} (epochs=30)"
    assert labels["digits_resnet8_kd_s0-11111111"] == "digits_resnet8_kd_s0 (grad_clip=None, lr=0.05)"
    assert labels["digits_resnet8_kd_s0-22222222"] == "digits_resnet8_kd_s0 (grad_clip=5.0, lr=0.1)"
    ex = nb.Explorer(tmp_path, selected=[f"{stem}-0a1b2c3d", f"{stem}-4e5f6a7b"])
    assert set(ex.series()) >= {f"T_s-S ({stem} (epochs=20))", f"T_s-S ({stem} (epochs=30))"}  # legends
    assert [label for label, _ in ex.run_select.options if label.startswith(stem)] == [f"{stem} (epochs=20)",
                                                                                       f"{stem} (epochs=30)"]
    table = nb.runs_table(tmp_path).as_dicts()
    assert {r["run"] for r in table} == set(labels.values()) and {r["epochs"] for r in table} >= {"0/20", "0/30"}  # (gap records only: no epoch trained)
    # a lone run drops the hash (it says nothing); no config to compare: the full name stays
    _gap_run(tmp_path / "lone_s1-33333333")
    _gap_run(tmp_path / "twin_s1-44444444")
    _gap_run(tmp_path / "twin_s1-55555555")
    labels = nb.run_labels(nb.find_runs(tmp_path))
    assert labels["lone_s1-33333333"] == "lone_s1" and labels["twin_s1-44444444"] == "twin_s1-44444444"


def test_explorer_picks_up_runs_still_training(tmp_path):
    """A run started (or advanced) after explore opened shows up on refresh, marked as training
    while a live process holds its lock; follow mode stops once nothing trains."""
    import os

    from workbench.engine.lock import LOCK_FILE
    from workbench.engine.metrics import MetricsLog

    _gap_run(tmp_path / "first")
    ex = nb.Explorer(tmp_path)
    assert list(ex.runs) == ["first"] and ex.epoch.max == 2
    running = tmp_path / "running"
    _gap_run(running)
    (running / LOCK_FILE).write_text(f"{os.getpid()}\n")  # held by a live process (this one)
    ex.refresh()
    assert list(ex.runs) == ["first", "running"] and ex.training() == ["running"]
    assert dict((v, k) for k, v in ex.run_select.options)["running"] == "running [training]"
    assert ex.run_select.value == ("first",)  # the selection is kept
    MetricsLog(running).append([{"kind": "gap", "epoch": 3, "pair": "T_s-S", "metric": "acc_gap",
                                                    "value": 9.0}])
    ex.run_select.value = ("running",)
    ex.follow.value = True
    ex.follow.value = False  # (the thread waits FOLLOW_S before its first look; the step itself:)
    ex.follow.value = True
    assert ex.follow_tick() and ex.series()["T_s-S"][0][-1] == 3  # the new epoch is drawn
    assert ex.epoch.max == 3
    (running / LOCK_FILE).write_text("999999999\n")  # a lock left by a killed run: a dead pid
    assert not ex.follow_tick() and ex.follow.value is False and ex.training() == []
    assert {r["run"]: r["state"] for r in nb.runs_table(tmp_path).as_dicts()} == {"first": "stopped", "running": "stopped"}


def test_study_helpers_group_runs_by_method_and_average_curves_over_seeds(tmp_path):
    """compare.ipynb's discriminability/transferability section reads bench/ctc_embed_study.py's
    run folders (``<method>_s<seed>``): curves are the mean over seeds, epoch by epoch."""
    import json

    def fake_run(name, top1, transfer):
        d = tmp_path / name
        d.mkdir()
        recs = [{"kind": "eval", "epoch": e, "role": "student", "split": "test", "top1": t} for e, t in enumerate(top1)]
        recs += [{"kind": "probe", "probe": "transferability", "role": "student", "metric": "linear_top1", "epoch": e,
                  "value": v, "target": "fashion_mnist[5-9]"} for e, v in enumerate(transfer)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "summary.json").write_text("{}")

    fake_run("ctc_transfer_s0", [20.0, 60.0, 70.0], [50.0, 80.0, 76.0])
    fake_run("ctc_transfer_s1", [30.0, 70.0, 80.0], [60.0, 90.0, 84.0])
    fake_run("ce_s0", [25.0, 65.0, 75.0], [55.0, 85.0, 70.0])
    (tmp_path / "unfinished_s0").mkdir()  # no summary.json: left out
    runs = nb.study_runs(tmp_path)
    assert list(runs) == ["ce", "ctc_transfer"] and [p.name for p in runs["ctc_transfer"]] == ["ctc_transfer_s0", "ctc_transfer_s1"]
    curves = nb.mean_curves(runs["ctc_transfer"])
    top1 = [r["top1"] for r in curves if r["kind"] == "eval"]
    transfer = [r["value"] for r in curves if r["kind"] == "probe"]
    assert top1 == [25.0, 65.0, 75.0] and transfer == [55.0, 85.0, 80.0]  # means of two exact halves
    assert nb.mean_curves(iter(runs["ctc_transfer"])) == curves  # any iterable of run folders
    fig = nb.study_disc_transfer(runs)
    names = {t.name for t in fig.data}
    assert len(fig.data) == 4 and any("ctc_transfer (mean of 2)" in n for n in names)
    assert fig.layout.yaxis.title.text == "source test top-1 (%)" and fig.layout.xaxis2.title.text == "epoch"


@pytest.mark.parametrize("final, where", [(-1.4, "below"), (0.7, "above"), (0.0, "level with"), (-0.04, "level with")])
def test_gap_takeaway_says_where_td_ended_from_the_numbers(final, where):
    gaps = {"T_s-S": {"epoch 0": 80.9, "mean abs": 35.25, "final": 28.9},
            "T_d-S": {"epoch 0": 0.0, "mean abs": 1.04, "final": final}}
    text = nb.gap_takeaway(gaps)
    assert text.startswith("The static gap T_s-S averaged 35.2 points and ended at +28.9; the dynamic gap T_d-S "
                           "averaged 1.0 points in size")
    assert text.endswith(f"T_d finished {where} the student in this run.")
