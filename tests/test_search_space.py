"""The distiller search's spec (issue 27): bad spaces are one line before any trial, a trial's
config samples only the keys its method uses, the composed terms are valid for the pair by
construction, the objective is the documented weighted sum of the validation records, and the
best trial becomes a preset at the full budget that ``preset=search/<name>/best`` loads."""
import json

import optuna
import pytest
import yaml

from workbench import search
from workbench.cli import main
from workbench.config import RunConfig
from workbench.methods.composed import pair_taps
from workbench.models import build
from workbench.presets import get_preset
from workbench.search import objective
from workbench.search.space import best_config

from conftest import FAST

BASE = {k: v for k, v in FAST.items() if k not in ("epochs", "progress")}
PROXY = dict(epochs=1, val_per_class=2)


def spec_data(**changes) -> dict:
    data = dict(name="s", base=dict(BASE), proxy=dict(PROXY),
                space=dict(method=["kd", "composed"], gpd=[False, True], kd_T={"float": [1, 8], "log": True},
                           ratio={"float": [1.5, 3.0]}),
                composed=dict(tap=["logits", "stage2"], transform=["none", "sattn"], distance=["kl", "mse"],
                              weight={"float": [0.1, 10], "log": True}),
                study=dict(trials=2, executor="debug"))
    for section, value in changes.items():
        if section.endswith("!"):  # replaced whole
            data[section[:-1]] = value
        elif isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **value}
        else:
            data[section] = value
    return data


# ------------------------------------------------------------------ bad spaces: one line, before any trial
BAD = [
    (dict(space={"kd_TT": {"float": [1, 8]}}), "space: unknown config key 'kd_TT' (did you mean 'kd_T'?)"),
    (dict(space={"kd_T": {"float": [8, 1]}}), "space: kd_T: the range [8, 1] is empty (low > high)"),
    (dict(space={"method": []}), "space: method: the list of values is empty"),
    (dict(space={"kd_T": {"float": [0, 8], "log": True}}), "space: kd_T: a log range needs low > 0"),
    (dict(space={"method": ["kd", "nosuch"]}), "space: unknown method 'nosuch'; valid choices: ce, composed,"),
    (dict(space={"kd_T": [4.0, -1.0]}), "space: kd_T=-1.0: "),
    (dict(composed={"tap": ["logits", "stage4"]}),
     "composed: tap: 'stage4' is not valid for this pair (resnet8 -> resnet8); valid: logits, penultimate, "
     "stage1, stage2, stage3, stages"),
    (dict(composed={"distance": ["kl", "l1"]}), "composed: distance: 'l1' is not valid; valid: kl, mse,"),
    ({"proxy!": {"epochs": 1}}, "proxy: val_per_class is missing"),
    (dict(proxy={"eval_on": "test", "val_per_class": 2}), "proxy: eval_on is set by the search itself"),
    (dict(objective={"top1": 1.0, "gap": 0.1}, proxy={"val_per_class": 2, "probe_every": 0}),
     "objective: gap reads the probes' gap records, and probe_every=0 switches them off"),
    (dict(study={"pruner": "hyperband"}), "study: unknown pruner 'hyperband'; valid choices: median, halving, none"),
    (dict(extra={"a": 1}), "search spec: unknown section 'extra'"),
]


@pytest.mark.parametrize("changes, line", BAD, ids=[b[1].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_a_bad_space_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys, changes, line):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data(**changes)))
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert line in err, err
    assert not (tmp_path / "runs").exists()  # no search folder, no trial, no run folder


def test_a_good_space_passes_the_dry_run_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path / "runs"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data()))
    assert main(["search", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "composed.tap = {logits, stage2}" in out and "nothing was run" in out
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ the pair's taps
def test_pair_taps_lists_the_stages_both_models_have():
    r8, r18, vgg = (build(m, 10, 1, image_size=8) for m in ("resnet8", "resnet18", "vgg8"))
    assert pair_taps(r8, r8) == ["logits", "penultimate", "stage1", "stage2", "stage3", "stages"]
    assert pair_taps(r8, r18) == ["logits", "penultimate", "stage1", "stage2", "stage3"]  # 3 vs 4 stages
    assert pair_taps(vgg, r18) == ["logits", "penultimate", "stage1", "stage2", "stage3", "stage4"]
    assert search.pair_taps(dict(BASE)) == pair_taps(r8, r8)  # from a config: the built pair


# ------------------------------------------------------------------ a trial's config
def sampled(params: dict, **changes) -> dict:
    spec = search.parse(spec_data(**changes))
    return search.sample(spec, optuna.trial.FixedTrial(params))


def test_a_trial_samples_only_the_keys_its_methods_use():
    kd = sampled({"method": "kd", "gpd": False, "kd_T": 2.5})
    assert kd["method"] == "kd" and kd["kd_T"] == 2.5 and "ratio" not in kd and "composed_terms" not in kd
    assert kd["eval_on"] == "val" and kd["val_per_class"] == 2 and kd["epochs"] == 1
    gpd = sampled({"method": "kd", "gpd": True, "kd_T": 2.5, "ratio": 2.0})
    assert (gpd["method"], gpd["base"], gpd["ratio"], gpd["grad_clip"]) == ("gpd", "kd", 2.0, 5.0)
    trial = optuna.trial.FixedTrial({"method": "composed", "gpd": False, "composed.1.tap": "logits",
                                     "composed.1.distance": "kl", "composed.1.weight": 0.9})
    comp = search.sample(search.parse(spec_data()), trial)
    assert comp["composed_terms"] == "logits:none:kl:0.9" and "kd_T" not in comp
    # a vector tap takes 'none' only: no transform was asked for (FixedTrial would have raised)
    RunConfig.from_dict(comp)


def test_cache_teacher_is_kept_where_the_method_allows_it_and_dropped_elsewhere():
    proxy = dict(PROXY, augment=False, cache_teacher=True)
    kd = sampled({"method": "kd", "gpd": False, "kd_T": 4.0}, proxy=proxy)
    assert kd["cache_teacher"] is True
    feat = sampled({"method": "composed", "gpd": False, "composed.1.tap": "stage2", "composed.1.transform": "sattn",
                    "composed.1.distance": "mse", "composed.1.weight": 1.0}, proxy=proxy)
    assert feat["cache_teacher"] is False  # feature terms read the teacher's maps: no cache
    RunConfig.from_dict(feat)


def test_the_best_preset_is_the_full_budget_with_the_proxy_dropped_and_resolves(tmp_path, monkeypatch):
    data = spec_data(**{"base!": dict(preset="fashion/demo/kd", dkd_warmup=2.0)},
                     **{"proxy!": dict(epochs=3, val_per_class=10, dkd_warmup=1.0, augment=False)})
    spec = search.parse(data)
    values = search.trial_config(spec, {"method": "dkd", "dkd_beta": 3.0}, gpd=False, terms=None)
    best = best_config(spec, values)
    demo = get_preset("fashion/demo/kd")
    assert best["epochs"] == demo["epochs"] == 20 and "augment" not in best  # proxy keys gone
    assert best["dkd_warmup"] == 2.0 and best["method"] == "dkd" and best["dkd_beta"] == 3.0
    assert "eval_on" not in best and "val_per_class" not in best and "preset" not in best
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    folder = tmp_path / "searches" / "mine"
    folder.mkdir(parents=True)
    (folder / "best.json").write_text(json.dumps({"config": best}))
    cfg = RunConfig.from_dict({"preset": "search/mine/best", "seed": 1})
    assert (cfg.method, cfg.dkd_beta, cfg.epochs, cfg.eval_on, cfg.seed) == ("dkd", 3.0, 20, "test", 1)
    with pytest.raises(Exception, match=r"preset: unknown preset 'search/other/best': no search wrote"):
        RunConfig.from_dict({"preset": "search/other/best"})


# ------------------------------------------------------------------ the objective
def test_the_score_is_the_weighted_sum_of_the_validation_records():
    recs = [{"kind": "eval", "epoch": 1, "split": "val", "role": "student", "top1": 40.0, "loss": 1.5},
            {"kind": "eval", "epoch": 1, "split": "val", "role": "teacher", "top1": 90.0, "loss": 0.3},
            {"kind": "gap", "pair": "T_s-S", "metric": "cka", "value": 0.75, "epoch": 1},
            {"kind": "gap", "pair": "T_s-S", "metric": "kl", "value": 9.0, "epoch": 1},
            {"kind": "eval", "epoch": 2, "split": "val", "role": "student", "top1": 60.0, "loss": 1.0}]
    w = {"top1": 1.0, "loss": 0.5, "gap": 0.1}
    # epoch 1: 0.40 - 0.5 * 1.5 - 0.1 * (1 - 0.75); epoch 2 lacks its gap record: not scored yet
    assert objective.epoch_scores(recs, w) == {1: pytest.approx(0.40 - 0.75 - 0.025, abs=1e-12)}
    assert objective.epoch_scores(recs, {"top1": 1.0})[2] == pytest.approx(0.60, abs=1e-12)
    with pytest.raises(objective.TestSetRecord, match="split 'test'; a search scores on the validation split"):
        objective.epoch_scores([dict(recs[0], split="test")], w)


# ------------------------------------------------------------------ the notebook's figures
def test_the_compare_notebook_section_shows_optunas_figures_of_each_search(tmp_path, capsys):
    from workbench.nb.search import search_figures
    from workbench.search.study import open_study

    root = tmp_path / "searches"
    assert search_figures(root, show=lambda f: None) == []
    assert "no search under" in capsys.readouterr().out
    spec = search.parse(spec_data(name="figs"))
    folder = root / "figs"
    folder.mkdir(parents=True)
    study = open_study(spec, folder)
    for i in range(6):  # a synthetic study: no training needed for the figures
        t = study.ask()
        x, m = t.suggest_float("kd_T", 1, 8, log=True), t.suggest_categorical("method", ["kd", "composed"])
        study.tell(t, 0.5 + 0.01 * x + (0.1 if m == "kd" else 0.0))
    shown = []
    figs = search_figures(root, show=shown.append)
    assert len(figs) == len(shown) == 3
    titles = [f.layout.title.text for f in figs]
    assert "score per trial" in titles[0] and "parameter importance" in titles[1] and "coloured by score" in titles[2]
    assert figs[0].layout.xaxis.title.text == "trial" and figs[0].layout.yaxis.title.text.startswith("score")
