"""Sweep grids: the value syntax (braces, comma lists, ranges, list-valued keys), the product of
cells, and the one-line refusals before anything is created or submitted."""
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import fields_by_name, is_list_valued
from workbench.sweep import GridError, plan
from workbench.sweep.grid import cells, expand_braces, expand_value, parse_grid, varying
from workbench.sweep.plan import SweepOptions, parse_mem_gb, parse_minutes

ROOT = Path(__file__).resolve().parents[1]
TINY = ["epochs=1", "train_per_class=10", "probe_every=0", "progress=false"]


def test_braces_expand_in_place_nested_and_several_times():
    assert expand_braces("cifar100/{a,b}/{kd,dkd}") == ["cifar100/a/kd", "cifar100/a/dkd", "cifar100/b/kd",
                                                       "cifar100/b/dkd"]
    assert expand_braces("x{1,2{a,b}}y") == ["x1y", "x2ay", "x2by"]
    assert expand_braces("plain") == ["plain"]
    with pytest.raises(ValueError, match="unbalanced"):
        expand_braces("a{b,c")


def test_values_lists_ranges_and_list_valued_keys():
    assert expand_value("seed", "0:5") == [0, 1, 2, 3, 4]  # end excluded, as Python's range
    assert expand_value("seed", "0:10:4") == [0, 4, 8]
    assert expand_value("seed", "{0:2,7}") == [0, 1, "7"]  # ranges inside braces; plain items stay text
    assert expand_value("method", "kd,dkd") == ["kd", "dkd"]
    assert expand_value("init", "inherit:a.pt") == ["inherit:a.pt"]  # ':' of a text key is no range
    assert expand_value("lr", "0.1:0.5") == ["0.1:0.5"]  # ranges are for integer keys (the config refuses this)
    assert expand_value("milestones", "150,180,210;100,150") == ["150,180,210", "100,150"]
    assert expand_value("source_classes", "0,1,2") == ["0,1,2"]  # one value: a list-valued key's commas are its own
    assert expand_value("seed", [0, 1]) == [0, 1] and expand_value("milestones", (1, 2)) == [(1, 2)]


def test_list_valued_keys_are_the_comma_list_keys():
    """Every key whose help says it takes a comma list is list-valued (else a sweep would split
    one value into several cells)."""
    for key, f in fields_by_name().items():
        if "comma list" in f.metadata["help"] or f.metadata["kind"] == "tuple":
            assert is_list_valued(key), key


def test_product_order_and_varying_keys():
    grid = parse_grid(["method=kd,dkd", "seed=0:2", "epochs=3"])
    assert cells(grid) == [dict(method="kd", seed=0, epochs="3"), dict(method="kd", seed=1, epochs="3"),
                           dict(method="dkd", seed=0, epochs="3"), dict(method="dkd", seed=1, epochs="3")]
    assert varying(grid) == ["method", "seed"]


@pytest.mark.parametrize("args, message", [
    (["methd=kd"], "unknown config key 'methd' (did you mean 'method'?)"),
    (["seed=5:5"], "seed=5:5 expands to no value"),
    (["seed=0", "seed=1"], "seed: given twice"),
    (["preset=a/{b,c"], "unbalanced"),
    (["seed"], "expected key=value"),
])
def test_bad_grids_are_one_line(args, message):
    with pytest.raises(GridError) as e:
        parse_grid(args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sweep_options():
    assert parse_minutes("90") == 90 and parse_minutes("1:30:00") == 90 and parse_minutes("2-00:00:00") == 2880
    assert parse_mem_gb("32G") == 32 and parse_mem_gb("512M") == 0.5
    collide = set(SweepOptions.keys()) & set(fields_by_name())
    assert collide == {"name"}  # name= is the sweep's (a run name shared by every cell would share a folder)


def _plan(tmp_path, *args, **options):
    return plan(["preset=fashion/demo/{kd,dkd}", "seed=0:2", f"out_dir={tmp_path}", *TINY, *args],
                **{"executor": "debug", **options})


def test_plan_validates_every_cell_and_creates_nothing(tmp_path):
    p = _plan(tmp_path)
    assert [c.label for c in p.cells] == ["preset=fashion/demo/kd seed=0", "preset=fashion/demo/kd seed=1",
                                          "preset=fashion/demo/dkd seed=0", "preset=fashion/demo/dkd seed=1"]
    # a cell's run folder is the one `train` makes with the same keys
    from workbench.config import RunConfig, parse_overrides

    same = RunConfig.from_dict(parse_overrides(["preset=fashion/demo/dkd", "seed=1", f"out_dir={tmp_path}", *TINY]))
    assert p.cells[3].run_dir == same.run_dir()
    assert p.dir == tmp_path / "sweeps" / p.name and p.name.startswith("sweep-")
    assert _plan(tmp_path).name == p.name  # the same grid names the same sweep
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["lr=-1"], "cell 0 (preset=fashion/demo/kd seed=0): lr: value -1.0 is outside the allowed range"),
    (["student=resnet9"], "cell 0 (preset=fashion/demo/kd seed=0): student: unknown model 'resnet9'"),
    (["lr=0.05,0.050"], "are the same run"),
    (["name=x1", "seed=0"], None),
])
def test_a_bad_cell_is_one_line_naming_it(tmp_path, extra, message):
    if message is None:  # name= names the sweep: not a grid key
        assert _plan(tmp_path, "name=x1").name == "x1"
        return
    with pytest.raises(GridError) as e:
        _plan(tmp_path, *extra)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_the_failing_cell_is_named_even_when_others_pass(tmp_path):
    with pytest.raises(GridError) as e:
        plan(["method=ce,kd", "teacher=none", "dataset=digits", "student=resnet8", f"out_dir={tmp_path}", *TINY],
             executor="debug")
    assert str(e.value).startswith("cell 1 (method=kd): teacher: method 'kd' with base 'kd' needs a static teacher")
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_grid_exits_2_with_one_line_and_no_folder(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "workbench", "sweep", "preset=fashion/demo/{kd,dkd}", "seed=0:2",
                        "lr=-1", f"out_dir={tmp_path}", *TINY], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cell 0 (preset=fashion/demo/kd seed=0): "), r.stderr
    assert not any(tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "workbench", "sweep", "--dry-run", "preset=fashion/demo/{kd,dkd}",
                        "seed=0:2", f"out_dir={tmp_path}", *TINY], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("[new]") == 4 and "nothing was created" in r.stdout
    assert not any(tmp_path.iterdir())
