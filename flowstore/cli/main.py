"""The ``flowstore`` command: a click group; every command lives in its own module here."""
from __future__ import annotations

import importlib

import click

from .. import __version__

#: command name -> module in flowstore.cli defining a click command named ``command``
COMMANDS = {
    "extract": "extract",
    "import-rawframes": "import_rawframes",
    "export": "export",
    "verify": "verify",
    "merge": "merge",
    "info": "info",
    "show": "show",
    "flow": "flow",
    "methods": "methods",
    "run": "run",
    "make-demo-data": "make_demo_data",
    "bench-flow": "bench_flow",
    "bench-loader": "bench_loader",
    "features": "features",
    "clip-features": "clip_features",
    "train-head": "train_head",
    "evaluate": "evaluate",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs, so ``--help`` stays fast and
    ``flowstore info`` does not load torch."""

    def list_commands(self, ctx):
        return [name for name, module in COMMANDS.items() if self._module_exists(module)]

    @staticmethod
    def _module_exists(module: str) -> bool:
        return importlib.util.find_spec(f"{__package__}.{module}") is not None

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None or not self._module_exists(module):
            return None
        return importlib.import_module(f"{__package__}.{module}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowstore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """flowstore: videos -> dense optical flow -> 8-bit quantized, sharded LMDB/HDF5 store,
    with two-stream loaders and frozen-backbone heads on top.

    Start with `flowstore make-demo-data demo` (writes demo/videos, demo/labels.csv)
    and `flowstore extract demo/videos --out demo/store`, or run a recipe with
    `flowstore run pipelines/demo.toml`.
    """
    ctx.ensure_object(dict)


if __name__ == "__main__":  # pragma: no cover
    cli()
