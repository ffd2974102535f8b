"""TOML recipes: a list of stages, each one flowstore command with its settings, run in order
(``flowstore run RECIPE`` or :func:`flowstore.run_recipe`).

::

    [recipe]
    name = "ucf101_tvl1"
    stages = ["extract", "verify"]

    [extract]                      # keys are the command's option names (dashes or underscores)
    inputs = ["data/UCF101/videos"]  # positional arguments by their name
    out = "stores/ucf101_tvl1"
    method = "tvl1"
    size = "340x256"

A stage table may also name the command explicitly (``command = "show"``), so one command
can appear twice under different stage names. Values given with ``--set STAGE.KEY=VALUE`` on
the command line override the recipe.
"""
from __future__ import annotations

import dataclasses
import shlex
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import click

from ..errors import FlowstoreError, InputError, MissingFileError, UnknownNameError
from .common import parse_value


def load_recipe(path: str | Path) -> dict:
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"recipe not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    stages = recipe.get("recipe", {}).get("stages")
    if not stages:
        raise InputError(f"{path}: needs [recipe] stages = [\"extract\", ...]")
    for stage in stages:
        if stage not in recipe:
            raise InputError(f"{path}: stage {stage!r} is listed in [recipe] stages but has no [{stage}] table")
    return recipe


def apply_overrides(recipe: dict, overrides: Sequence[str]) -> dict:
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise InputError(f"--set {item!r}: write STAGE.KEY=VALUE, e.g. --set extract.workers=2")
        key, value = item.split("=", 1)
        stage, name = key.split(".", 1)
        if stage not in recipe:
            raise InputError(f"--set {item!r}: the recipe has no stage {stage!r}; stages: {recipe['recipe']['stages']}")
        recipe[stage][name] = parse_value(value)
    return recipe


def _setting_names(param: click.Parameter) -> set[str]:
    """A setting may be written as the parameter's name or as any of its long option names."""
    names = {param.name}
    names.update(opt.lstrip("-").replace("-", "_") for opt in param.opts if opt.startswith("--"))
    return names


def _check_type(param: click.Parameter, value, where: str) -> None:
    """A recipe value must have the type of the option it sets: ``true``/``false`` for a flag
    (not the string "true"), a single value unless the option repeats, a whole number for an
    INT option, a number for a FLOAT one, never a boolean for a valued option."""
    if getattr(param, "is_flag", False):
        if not isinstance(value, bool):
            raise InputError(f"{where} = {value!r}: a flag takes true or false (no quotes)")
        return
    if isinstance(value, dict):
        if not (getattr(param, "multiple", False) and param.name == "params"):
            raise InputError(f"{where} = {value!r}: a table is only for param = {{KEY = VALUE}}")
        return
    if isinstance(value, list):
        if not (getattr(param, "multiple", False) or (isinstance(param, click.Argument) and param.nargs == -1)):
            raise InputError(f"{where} = {value!r}: takes one value, not a list")
        items = value
    else:
        items = [value]
    for item in items:
        if isinstance(item, (list, dict)):
            raise InputError(f"{where} = {value!r}: a list of single values is expected")
        if isinstance(item, bool):
            raise InputError(f"{where} = {value!r}: takes a value, not true/false")
        kind = param.type
        if isinstance(kind, click.types.IntParamType) and not isinstance(item, int):
            raise InputError(f"{where} = {item!r}: takes a whole number")
        if isinstance(kind, click.types.FloatParamType) and not isinstance(item, (int, float)):
            raise InputError(f"{where} = {item!r}: takes a number")


def stage_argv(command: click.Command, settings: dict, stage: str) -> list[str]:
    """Turn a stage table into the command line of ``command``."""
    settings = {k.replace("-", "_"): v for k, v in settings.items() if k != "command"}
    argv: list[str] = []
    positional: list[str] = []
    used: set[str] = set()
    for param in command.params:
        names = _setting_names(param) & set(settings)
        if not names:
            continue
        if len(names) > 1:
            raise InputError(f"stage [{stage}]: {sorted(names)} name the same setting; keep one")
        key = names.pop()
        used.add(key)
        value = settings[key]
        if isinstance(param, click.Argument):
            positional += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            continue
        flag = max(param.opts, key=len)  # the long form
        _check_type(param, value, f"stage [{stage}] {key}")
        if getattr(param, "is_flag", False):
            if value:
                argv.append(flag)
        elif isinstance(value, list) and getattr(param, "multiple", False):
            for v in value:
                argv += [flag, str(v)]
        elif isinstance(value, dict):  # e.g. param = {winsize = 21}
            for k, v in value.items():
                argv += [flag, f"{k}={v}"]
        else:
            argv += [flag, str(value)]
    unknown = sorted(set(settings) - used)
    if unknown:
        options = sorted(set().union(*(_setting_names(p) for p in command.params)))
        raise InputError(f"stage [{stage}]: unknown setting(s) {unknown} for `flowstore {command.name}`; choose from {options}")
    return argv + ["--"] + positional if positional else argv


@dataclasses.dataclass
class Stage:
    """One stage as it will run: ``flowstore COMMAND ARGV``."""

    name: str
    command: str
    argv: list[str]
    exit_code: int | None = None  # None until it ran
    seconds: float = 0.0

    @property
    def command_line(self) -> str:
        return f"flowstore {self.command} {shlex.join(self.argv)}"


class StageFailed(FlowstoreError):
    """A stage exited non-zero; the recipe stops there with that stage's exit code."""

    def __init__(self, stage: Stage, stages: list[Stage]):
        super().__init__(f"stage [{stage.name}] exited {stage.exit_code}")
        self.exit_code = int(stage.exit_code)
        self.stage, self.stages = stage, stages


def plan_stages(recipe: dict, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Stage]:
    """The stages to run (in the recipe's order) with each one's command line."""
    from .main import cli

    listed = recipe["recipe"]["stages"]
    for name in (*only, *skip):
        if name not in listed:
            raise UnknownNameError(f"no stage {name!r} in the recipe; choose from {listed}")
    stages = []
    ctx = click.Context(cli)
    for stage in listed:
        if (only and stage not in only) or stage in skip:
            continue
        name = recipe[stage].get("command", stage)
        if name == "run":
            raise InputError(f"stage [{stage}]: a recipe cannot run a recipe (command 'run')")
        command = cli.get_command(ctx, name)
        if command is None:
            raise UnknownNameError(f"stage [{stage}]: unknown command {name!r}; choose from {cli.list_commands(ctx)}")
        stages.append(Stage(stage, name, stage_argv(command, recipe[stage], stage)))
    return stages


def run_recipe(path: str | Path, overrides: Sequence[str] = (), *, only: Sequence[str] = (),
               skip: Sequence[str] = (), dry_run: bool = False, obj=None) -> list[Stage]:
    """Run the stages of the recipe at ``path`` in order (``overrides``: ``STAGE.KEY=VALUE``).

    Returns the stages with their exit codes and times; the first stage that exits non-zero
    raises :class:`StageFailed` (its ``exit_code`` is the stage's).
    """
    from .main import cli

    stages = plan_stages(apply_overrides(load_recipe(path), overrides), only, skip)
    ctx = click.Context(cli)
    for stage in stages:
        click.echo(f"\n==> [{stage.name}] {stage.command_line}", err=True)
        if dry_run:
            continue
        start = time.perf_counter()
        try:
            cli.get_command(ctx, stage.command).main(args=stage.argv, prog_name=f"flowstore {stage.command}",
                                                      standalone_mode=False, obj=obj)
            stage.exit_code = 0
        except SystemExit as exc:
            stage.exit_code = exc.code or 0
        except click.ClickException as exc:
            exc.show()
            stage.exit_code = exc.exit_code
        stage.seconds = time.perf_counter() - start
        click.echo(f"<== [{stage.name}] exit {stage.exit_code} in {stage.seconds:.1f} s", err=True)
        if stage.exit_code:
            raise StageFailed(stage, stages)
    return stages
