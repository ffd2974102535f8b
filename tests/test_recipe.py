"""The recipe -> stage mapping (flowstore.cli.recipe): each table becomes one command line."""
import click
import pytest

import flowstore
from flowstore.cli.main import cli
from flowstore.cli.recipe import StageFailed, apply_overrides, load_recipe, plan_stages, stage_argv
from flowstore.errors import InputError, UnknownNameError


def extract_command():
    return cli.get_command(click.Context(cli), "extract")


def test_positional_flags_lists_and_dicts_map_to_the_command_line():
    argv = stage_argv(extract_command(), {
        "inputs": ["a/videos", "b.mp4"], "out": "store", "method": "farneback",
        "param": {"winsize": 21, "levels": 4}, "retry-failed": True, "allow_failures": False, "workers": 2,
    }, "extract")
    # options in the command's parameter order, each in its long form; positionals after "--"
    assert argv[-3:] == ["--", "a/videos", "b.mp4"]
    options = argv[:-3]
    assert options[options.index("--out") + 1] == "store"
    assert options[options.index("--method") + 1] == "farneback"
    assert options[options.index("--workers") + 1] == "2"
    params = [options[i + 1] for i, a in enumerate(options) if a == "--param"]
    assert params == ["winsize=21", "levels=4"]
    assert "--retry-failed" in options and "--allow-failures" not in options  # a false flag is left out


def test_a_setting_may_use_the_option_name_or_the_parameter_name():
    # `format` is the option --format whose parameter is named `backend`
    assert stage_argv(extract_command(), {"format": "hdf5"}, "x") == stage_argv(extract_command(), {"backend": "hdf5"}, "x")


def test_two_names_of_one_setting_and_unknown_settings_are_errors():
    with pytest.raises(InputError, match=r"name the same setting"):
        stage_argv(extract_command(), {"format": "hdf5", "backend": "lmdb"}, "x")
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['colour'\].*choose from"):
        stage_argv(extract_command(), {"colour": "red"}, "x")


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


RECIPE = """
[recipe]
stages = ["extract", "check", "info"]

[extract]
inputs = ["videos"]
out = "store"
workers = 1

[check]
command = "verify"
store = "store"

[info]
store = "store"
"""


def test_stages_in_order_with_command_names_overrides_only_and_skip(tmp_path):
    recipe = apply_overrides(load_recipe(write(tmp_path, RECIPE)), ["extract.workers=2", "extract.method=farneback"])
    stages = plan_stages(recipe)
    assert [(s.name, s.command) for s in stages] == [("extract", "extract"), ("check", "verify"), ("info", "info")]
    argv = stages[0].argv
    assert argv[argv.index("--workers") + 1] == "2" and argv[argv.index("--method") + 1] == "farneback"
    assert [s.name for s in plan_stages(recipe, only=["check"])] == ["check"]
    assert [s.name for s in plan_stages(recipe, skip=["extract"])] == ["check", "info"]
    with pytest.raises(UnknownNameError, match=r"no stage 'chek'.*\['extract', 'check', 'info'\]"):
        plan_stages(recipe, only=["chek"])


def test_bad_recipes_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
    with pytest.raises(InputError, match="not valid TOML"):
        load_recipe(write(tmp_path, "[recipe\n"))
    with pytest.raises(InputError, match="has no \\[b\\] table"):
        load_recipe(write(tmp_path, '[recipe]\nstages = ["b"]\n'))
    with pytest.raises(InputError, match="STAGE.KEY=VALUE"):
        apply_overrides(load_recipe(write(tmp_path, RECIPE)), ["workers=2"])
    with pytest.raises(UnknownNameError, match="unknown command 'extrac'"):
        plan_stages(load_recipe(write(tmp_path, '[recipe]\nstages = ["a"]\n[a]\ncommand = "extrac"\n')))
    with pytest.raises(InputError, match="cannot run a recipe"):
        plan_stages(load_recipe(write(tmp_path, '[recipe]\nstages = ["a"]\n[a]\ncommand = "run"\nrecipe = "r.toml"\n')))


def test_run_recipe_is_the_python_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stages = flowstore.run_recipe(write(tmp_path, RECIPE), dry_run=True)
    assert [s.exit_code for s in stages] == [None, None, None]
    assert "==> [check] flowstore verify -- store" in capsys.readouterr().err
    # a stage that fails stops the recipe with its exit code (no store here: info exits 2)
    with pytest.raises(StageFailed) as failed:
        flowstore.run_recipe(write(tmp_path, RECIPE), only=["info"])
    assert failed.value.exit_code == 2 and failed.value.stage.name == "info"
