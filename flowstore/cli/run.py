"""``flowstore run``: run a TOML recipe from pipelines/."""
from __future__ import annotations

import sys

import click

from .common import user_errors


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
    from .recipe import StageFailed, run_recipe

    try:
        run_recipe(recipe, overrides, only=only, skip=skip, dry_run=dry_run, obj=ctx.obj)
    except StageFailed as exc:  # the stage has said why
        sys.exit(exc.exit_code)
