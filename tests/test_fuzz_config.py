"""Property tests over every config key, through all three entry points: notebook values
(``RunConfig.from_dict`` with Python values), CLI strings (``parse_overrides`` + ``from_dict``) and
the CLI itself (``workbench.cli.main(["train", ...])`` in-process, training stubbed out).

Valid values are generated from each field's metadata (type, choices, low/high bounds) and must
be accepted and converted to the field's type; invalid ones (wrong type, out of range, unknown
choice, unknown key, malformed ``key=value``) must end in a ConfigError / exit code 2 whose message
names the key -- never a traceback. Method/base/teacher/ctkd/dot/optimizer interactions are
checked exhaustively against an oracle written from the method spec.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workbench import cli, experiment
from workbench.config import ConfigError, RunConfig, convert, parse_overrides
from workbench.methods.gpd import gpd_branches
from workbench.presets import PRESETS

#: examples per fuzz test; WORKBENCH_FUZZ_EXAMPLES=5000 for a long hunt before a release
EXAMPLES = int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
BIG = 10**6
# Keys whose validity depends on other keys: covered by the exhaustive interaction test.
COUPLED = {"method", "base", "teacher", "ctkd", "dot", "optimizer", "train_per_class", "source_classes",
           "data_source", "dataset", "branches", "preset", "cache_teacher", "augment"}
COUPLED |= {"ctc_stage_epoch", "ctc_alpha"}  # CTC on needs epochs >= 2 and a stage epoch below epochs: tests/test_ctc.py
COUPLED |= {"sync_bn", "widening"}  # gpd refuses sync_bn=true with widening=reference: tests/test_config.py
COUPLED |= {"eval_on", "val_per_class"}  # val needs val_per_class < train_per_class: tests/test_data_holdout.py
COUPLED |= {"probe_samples", "probe_every"}  # probes on need probe_samples >= 6: tests/test_integrity2.py
COUPLED |= {"noise"}  # -1 (default) or >= 0, not an interval: tests/test_integrity2.py
COUPLED |= {"mix"}  # ORC refuses batch mixing (it mixes its misclassified samples itself): tests/test_group_methods.py
COUPLED |= {"recursivemix_share_fc"}  # refused with method=gpd under mix=recursivemix: tests/test_recursivemix.py


def kind(name: str) -> str:
    f = FIELDS[name]
    if "Optional[int]" in str(f.type):
        return "int"
    if "Optional[float]" in str(f.type):
        return "float"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return {bool: "bool", int: "int", float: "float", tuple: "tuple", str: "str"}[type(default)]


def bounds(name: str):
    meta = FIELDS[name].metadata
    return meta.get("low"), meta.get("high")


def optional(name: str) -> bool:
    return "Optional" in str(FIELDS[name].type)


# Keys checked on their own on top of the (valid) defaults: typed, bounded or with choices.
INDEPENDENT = sorted(n for n in FIELDS if n not in COUPLED
                     and (kind(n) != "str" or FIELDS[n].metadata.get("choices")))


# ------------------------------------------------------------------------------ valid values
def valid_value(name: str) -> st.SearchStrategy:
    """(python value, expected converted value) pairs for one key."""
    meta, k = FIELDS[name].metadata, kind(name)
    low, high = bounds(name)
    if meta.get("choices"):
        return st.sampled_from(meta["choices"]).map(lambda v: (v, v))
    if k == "bool":
        return st.booleans().map(lambda v: (v, v))
    if k == "int":
        lo = low if low is not None else -BIG
        return st.integers(lo, high if high is not None else lo + BIG).map(lambda v: (v, v))
    if k == "float":
        lo = low if low is not None else -BIG
        return st.floats(lo, high if high is not None else lo + BIG, allow_nan=False,
                         allow_infinity=False).map(lambda v: (v, v))
    if k == "tuple":
        return st.lists(st.integers(1, 1000), min_size=1, max_size=5).map(lambda v: (v, tuple(v)))
    raise AssertionError(f"no valid-value strategy for {name}")


def as_cli_string(name: str, value) -> st.SearchStrategy:
    """The ways a user may type ``value`` on the command line."""
    if isinstance(value, bool):
        words = TRUE_WORDS if value else FALSE_WORDS
        return st.sampled_from(words).flatmap(lambda w: st.sampled_from([w, w.upper(), f" {w} "]))
    if isinstance(value, (list, tuple)):
        return st.sampled_from([",".join(map(str, value)), "[" + ",".join(map(str, value)) + "]"])
    if isinstance(value, float):
        return st.sampled_from([repr(value), f"{value:.17g}"])
    return st.just(str(value))


@st.composite
def valid_pair(draw, keys=INDEPENDENT):
    name = draw(st.sampled_from(keys))
    value, expected = draw(valid_value(name))
    return name, value, expected


@FUZZ
@given(valid_pair())
def test_every_valid_notebook_value_is_accepted_and_typed(pair):
    name, value, expected = pair
    cfg = RunConfig.from_dict({name: value})
    assert getattr(cfg, name) == expected
    assert type(getattr(cfg, name)) is type(expected)


@FUZZ
@given(valid_pair().flatmap(lambda p: as_cli_string(p[0], p[1]).map(lambda s: (*p, s))))
def test_every_valid_cli_string_is_accepted_and_converted(item):
    name, _, expected, text = item
    cfg = RunConfig.from_dict(parse_overrides([f"{name}={text}"]))
    got = getattr(cfg, name)
    # float64 parsing of repr() / %.17g round-trips exactly; 1e-15 allows for the last ulp (2.2e-16)
    assert got == expected or (isinstance(expected, float) and math.isclose(got, expected, rel_tol=1e-15))


@FUZZ
@given(st.lists(valid_pair(), min_size=2, max_size=8, unique_by=lambda p: p[0]))
def test_valid_values_combine(pairs):
    """Several independent keys at once: all accepted, each keeps its value."""
    cfg = RunConfig.from_dict({n: v for n, v, _ in pairs})
    for name, _, expected in pairs:
        assert getattr(cfg, name) == expected


def test_optional_keys_take_none_in_every_spelling():
    for name in (n for n in FIELDS if optional(n)):
        for none in (None, "none", "None", "null", ""):
            extra = {"dataset": "digits"} if name == "train_per_class" else {}
            assert getattr(RunConfig.from_dict({name: none, **extra}), name) is None


# ------------------------------------------------------------------------------ invalid values
def invalid_value(name: str) -> st.SearchStrategy:
    meta, k = FIELDS[name].metadata, kind(name)
    low, high = bounds(name)
    junk = st.text(min_size=1, max_size=12).filter(lambda s: not _parses_as_number(s) and s.strip().lower()
                                                   not in TRUE_WORDS + FALSE_WORDS + ("none", "null", ""))  # blank = unset
    wrong_types = st.sampled_from([[1, 2], {"a": 1}, object()]) if k != "tuple" else st.sampled_from([{"a": 1}, object()])
    options = [wrong_types]
    if meta.get("choices"):
        options.append(st.text(max_size=12).filter(lambda s: s not in meta["choices"]))
        options.append(st.integers())
    elif k == "bool":
        options += [junk, st.integers().filter(lambda i: i not in (0, 1)), st.floats(allow_nan=False)]
    elif k in ("int", "float"):
        options.append(junk)
        if k == "int":
            options += [st.booleans(), st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
                        st.sampled_from(["1.5", "1e3", "0x10", "seven"])]
        if low is not None:
            options.append(st.floats(low - BIG, low, exclude_max=True, allow_nan=False).map(
                lambda x: int(math.floor(x)) if k == "int" else x).filter(lambda x: x < low))
        if high is not None:
            options.append(st.floats(high, high + BIG, exclude_min=True, allow_nan=False).map(
                lambda x: int(math.ceil(x)) if k == "int" else x).filter(lambda x: x > high))
    elif k == "tuple":
        options += [junk.filter(lambda s: any(c.isalpha() for c in s)), st.just("1,x,3"),
                    st.lists(st.integers(max_value=0), min_size=1, max_size=3)]  # non-positive milestones
    return st.one_of(options)


def _parses_as_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


@st.composite
def invalid_pair(draw):
    name = draw(st.sampled_from(INDEPENDENT))
    return name, draw(invalid_value(name))


@FUZZ
@given(invalid_pair())
def test_every_invalid_notebook_value_is_a_config_error_naming_the_key(pair):
    name, value = pair
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({name: value})
    assert str(err.value).startswith(f"{name}:"), str(err.value)


@FUZZ
@given(pair=invalid_pair().filter(lambda p: isinstance(p[1], (str, int, float, list))))
def test_every_invalid_cli_value_exits_2_with_one_line_naming_the_key(pair, capsys, monkeypatch):
    name, value = pair
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    assume("\n" not in text and "\r" not in text)
    try:  # the string form of a bad Python value can be a good CLI value (e.g. [1.0] -> "1.0")
        RunConfig.from_dict(parse_overrides([f"{name}={text}"]))
        assume(False)
    except ConfigError:
        pass
    monkeypatch.setattr(experiment, "run", _no_training)
    code = cli.main(["train", f"{name}={text}"])
    out = capsys.readouterr()
    assert code == 2
    assert out.err.startswith(f"error: {name}:") and "Traceback" not in out.err + out.out, out.err


@FUZZ
@given(st.text(min_size=1, max_size=20).filter(lambda s: "=" not in s))
def test_unknown_keys_and_missing_equals_are_config_errors(word):
    key = word.strip().lstrip("-").replace("-", "_")
    assume(key not in FIELDS)
    with pytest.raises(ConfigError, match="unknown config key"):
        parse_overrides([f"{word}=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides([word])
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig.from_dict({key: 1})


def test_cli_key_spellings_are_normalised():
    assert parse_overrides(["--batch-size=32", "  lr=0.1", "warmup-epochs=2"]) == {
        "batch_size": "32", "lr": "0.1", "warmup_epochs": "2"}


class _Stub:
    summary: dict = {}
    run_dir = "stub"


def _no_training(cfg, *a, **k):
    _no_training.cfg = cfg
    return _Stub()


@FUZZ
@given(pairs=st.lists(valid_pair(), min_size=1, max_size=6, unique_by=lambda p: p[0]))
def test_valid_cli_runs_reach_training_with_the_typed_config(pairs, capsys, monkeypatch):
    """``python -m workbench train k=v ...`` with valid values: exit 0 and the run gets exactly
    the converted values (training itself stubbed out)."""
    monkeypatch.setattr(experiment, "run", _no_training)
    args = [f"{n}={','.join(map(str, v)) if isinstance(v, list) else v}" for n, v, _ in pairs]
    assert cli.main(["train", *args]) == 0, capsys.readouterr().err
    for name, _, expected in pairs:
        got = getattr(_no_training.cfg, name)
        assert got == expected or math.isclose(got, expected, rel_tol=1e-15)  # float64 round trip, last ulp


# ------------------------------------------------------------------------------ interactions
#: the methods' rules, written here independently of their specs: valid bases (the first is
#: what `auto` means) of the first methods; the base values tried
METHOD_BASES = {"ce": ("none",), "kd": ("kd",), "dkd": ("dkd",), "ctkd": ("kd", "dkd"), "gpd": ("dkd", "kd", "none")}
METHODS = tuple(METHOD_BASES)
BASES = ("auto", "none", "kd", "dkd")


def oracle(method, base, teacher, ctkd, dot, optimizer) -> bool:
    """Validity from the method spec, written independently of RunConfig.validate."""
    resolved = METHOD_BASES[method][0] if base == "auto" else base
    if resolved not in METHOD_BASES[method]:
        return False
    uses_teacher = method != "ce" and resolved != "none"
    if uses_teacher and teacher == "none":
        return False
    if (ctkd or method == "ctkd") and (method == "ce" or resolved == "none"):
        return False
    if dot and (method == "ce" or optimizer != "sgd"):
        return False
    return True


COMBOS = list(itertools.product(METHODS, BASES, ("resnet32x4", "none"), (False, True), (False, True), ("sgd", "adamw")))


def test_method_base_teacher_ctkd_dot_optimizer_interactions_exhaustively():
    accepted = 0
    for method, base, teacher, ctkd, dot, optimizer in COMBOS:
        values = dict(method=method, base=base, teacher=teacher, ctkd=ctkd, dot=dot, optimizer=optimizer)
        if oracle(method, base, teacher, ctkd, dot, optimizer):
            cfg = RunConfig.from_dict(values)
            assert cfg.ctkd == (ctkd or method == "ctkd")
            accepted += 1
        else:
            with pytest.raises(ConfigError) as err:
                RunConfig.from_dict(values)
            assert str(err.value).split(":")[0] in values, str(err.value)
    assert 0 < accepted < len(COMBOS)


@settings(max_examples=max(60, EXAMPLES * 3 // 10), deadline=None)
@given(st.sampled_from(sorted(PRESETS)), st.sampled_from(INDEPENDENT).flatmap(
    lambda n: valid_value(n).map(lambda v: (n, v[0], v[1]))))
def test_presets_apply_under_explicit_valid_keys(preset, pair):
    name, value, expected = pair
    assume(name not in preset_coupled(preset))
    cfg = RunConfig.from_dict({"preset": preset, name: value})
    assert getattr(cfg, name) == expected
    for k, v in PRESETS[preset].items():
        if k != name:
            assert getattr(cfg, k) == convert(k, v), k


def preset_coupled(preset: str) -> set[str]:
    """Keys a preset ties to its own values: a two-stage CTC preset fixes its stage epoch, so
    ``epochs`` must stay above it (refusal tested in tests/test_ctc.py)."""
    p = PRESETS[preset]
    return {"epochs"} if p.get("method") == "ctc" or p.get("ctc_alpha", 0) else set()


def extreme_values(name: str) -> list:
    """Every choice, both booleans, or the finite bounds of one key."""
    meta, k = FIELDS[name].metadata, kind(name)
    if meta.get("choices"):
        return list(meta["choices"])
    if k == "bool":
        return [True, False]
    return [v for v in bounds(name) if v is not None and abs(v) < BIG]


def test_every_preset_takes_every_independent_key_at_its_extremes():
    """Deterministic sweep behind the fuzz test above: every preset x every independent key x
    its choices / bounds builds, and the key reads back; the only refusals are the couplings
    named in preset_coupled."""
    tried = 0
    for preset in sorted(PRESETS):
        for name in INDEPENDENT:
            for value in extreme_values(name):
                if name in preset_coupled(preset):
                    continue
                assert getattr(RunConfig.from_dict({"preset": preset, name: value}), name) == convert(name, value)
                tried += 1
    assert tried > len(PRESETS) * len(INDEPENDENT)
    ctc = next(p for p in sorted(PRESETS) if "epochs" in preset_coupled(p))
    with pytest.raises(ConfigError, match="^ctc"):
        RunConfig.from_dict({"preset": ctc, "epochs": 1})


@FUZZ
@given(st.text(max_size=16).filter(lambda s: s and s not in PRESETS))
def test_unknown_presets_are_config_errors(name):
    with pytest.raises(ConfigError, match="^preset: "):
        RunConfig.from_dict({"preset": name})


@FUZZ
@given(st.one_of(st.text(max_size=10), st.integers(-5, 50)))
def test_gpd_branches_any_spec_is_accepted_or_names_the_key(spec):
    """Any text for ``branches``: either a valid branch list or a ConfigError naming the key."""
    try:
        cfg = RunConfig.from_dict({"method": "gpd", "branches": spec})
    except ConfigError as e:
        assert str(e).startswith("branches:"), str(e)
    else:
        assert isinstance(gpd_branches(cfg), tuple)


def test_gpd_branches_known_bad_specs():
    for spec in ("xyz", "1x1,nope", "-1", "99"):
        with pytest.raises(ConfigError, match="^branches: "):
            RunConfig.from_dict({"method": "gpd", "branches": spec})


@pytest.mark.parametrize("text", ["nan", "inf", "-nan"])
def test_non_finite_numbers_are_refused(text):
    floats = [n for n in INDEPENDENT if kind(n) == "float"]
    refused = 0
    for name in floats:
        try:
            RunConfig.from_dict({name: text})
        except ConfigError as e:
            assert str(e).startswith(f"{name}:")
            refused += 1
    assert refused == len(floats)


@pytest.mark.parametrize("values", [dict(device="gpu"), dict(device="cuda:99"), dict(amp="fp16", device="cpu")])
def test_device_and_amp_are_checked_before_any_work(values, tmp_path):
    cfg = RunConfig.from_dict(dict(values, dataset="digits", method="ce", student="resnet8", out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="^(device|amp): "):
        experiment.prepare(cfg)
