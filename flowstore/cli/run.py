"""``flowstore run``: run a TOML recipe from pipelines/."""
from __future__ import annotations

import shlex
import sys
import time

import click

from .common import user_errors
from ..errors import InputError


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=str))
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Override a recipe setting, repeatable (e.g. --set extract.workers=1).")
@click.option("--only", multiple=True, help="Run only these stages (repeatable).")
@click.option("--skip", multiple=True, help="Skip these stages (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the commands without running them.")
@click.pass_context
@user_errors
def command(ctx, recipe, overrides, only, skip, dry_run):
    """Run the stages of RECIPE (a TOML file, e.g. pipelines/demo.toml) in order.

    Each stage is one flowstore command whose options come from the stage's table; --set
    overrides them. The run stops at the first stage that exits non-zero, with its exit code.
    """
    from ..pipeline import apply_overrides, load_recipe, stage_argv
    from .main import cli

    spec = apply_overrides(load_recipe(recipe), list(overrides))
    stages = [s for s in spec["recipe"]["stages"] if (not only or s in only) and s not in skip]
    for stage in stages:
        name = spec[stage].get("command", stage)
        command = cli.get_command(ctx, name)
        if command is None:
            raise InputError(f"stage [{stage}]: unknown command {name!r}; choose from {cli.list_commands(ctx)}")
        argv = stage_argv(command, spec[stage], stage)
        click.echo(f"\n==> [{stage}] flowstore {name} {shlex.join(argv)}", err=True)
        if dry_run:
            continue
        start = time.perf_counter()
        try:
            command.main(args=argv, prog_name=f"flowstore {name}", standalone_mode=False, obj=ctx.obj)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        click.echo(f"<== [{stage}] exit {code} in {time.perf_counter() - start:.1f} s", err=True)
        if code:
            sys.exit(code)
