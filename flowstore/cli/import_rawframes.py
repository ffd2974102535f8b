"""``flowstore import-rawframes``."""
from __future__ import annotations

import sys

import click

from .choices import RegistryChoice
from .common import EXIT_FAILURES, parse_bytes, user_errors

HELP = """Import an mmaction2 rawframes tree or denseflow output into a store, the JPEG (or PNG)
files stored byte for byte: nothing is decoded and re-encoded.

TREE holds one folder per video (its id is the folder path under TREE) with RGB frames and two
8-bit flow component images per index, numbered from 0 or 1: img_00001.jpg, flow_x_00001.jpg /
flow_y_00001.jpg (mmaction2, denseflow) or x_00001.jpg / y_00001.jpg (mmaction2's
flow_extraction.py; found without --flow-template). --list takes an mmaction2 annotation list
(frame_dir total_frames label): only its folders are imported and its labels are written to
STORE/labels.txt.

Declare how the tree's tool made the 8-bit flow: --bound (denseflow's -b, default 32 in
denseflow, 20 in mmaction2's scripts) and --rounding (denseflow: half_to_even;
mmaction2 tools/misc/flow_extraction.py: truncate). See docs/FORMAT.md, section 7.

A video with missing or unreadable files, gaps in its numbering or flows != frames - stride
fails (STORE/failures.jsonl); nothing is padded. Rerunning the command resumes.

\b
Example:
  flowstore import-rawframes rawframes/ --out store --bound 20 --rounding half_to_even --tool denseflow
"""


@click.command("import-rawframes", help=HELP)
@click.argument("tree", type=click.Path(path_type=str, exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Store directory (created if needed).")
@click.option("--bound", type=float, required=True, help="The bound in pixels the tree's flow images were quantized with.")
@click.option("--rounding", type=click.Choice(["half_to_even", "truncate"]), required=True,
              help="How the tree's tool rounded to 8 bits: half_to_even (denseflow's cvRound) or truncate (astype(uint8)).")
@click.option("--tool", default="unknown", show_default=True, help="What made the tree (denseflow, mmaction2, ...), recorded in the manifest.")
@click.option("--method", default="unknown", show_default=True, help="The flow method the tool used (tvl1, farneback, ...), recorded in the manifest.")
@click.option("--list", "list_file", type=click.Path(path_type=str, exists=True, dir_okay=False), help="mmaction2 annotation list: the folders to import and their labels.")
@click.option("--rgb-template", default="img_{:05d}.jpg", show_default=True, help="File name of RGB frame number N.")
@click.option("--flow-template", default=None, help="File name of flow component {x,y} number N, e.g. 'flow_{}_{:05d}.jpg' (default: found in the tree).")
@click.option("--stride", type=int, default=1, show_default=True, help="Frame gap of the tree's flow pairs.")
@click.option("--format", "backend", type=RegistryChoice("flowstore.store.backend:list_backends"), default="lmdb", show_default=True, help="Shard format.")
@click.option("--shard-size", default="1GB", show_default=True, help="Start a new shard file after this many bytes.")
@click.option("--retry-failed", is_flag=True, help="Retry videos listed in failures.jsonl.")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some videos failed.")
@user_errors
def command(tree, out, bound, rounding, tool, method, list_file, rgb_template, flow_template, stride, backend,
            shard_size, retry_failed, allow_failures):
    from ..data.labels import read_mmaction_list
    from ..extract.import_rawframes import ImportConfig, run_import
    from ..quantize import QuantSpec

    cfg = ImportConfig(out=out, quant=QuantSpec("bound", bound, rounding), backend=backend, rgb_tmpl=rgb_template,
                       flow_tmpl=flow_template, stride=stride, tool=tool, method=method,
                       shard_size=parse_bytes(shard_size))
    labels = read_mmaction_list(list_file) if list_file else None
    summary = run_import(tree, cfg, labels=labels, labels_path=list_file, retry_failed=retry_failed)
    click.echo(f"import: {summary.ok} video(s) imported, {summary.failed} failed, "
               f"{summary.skipped_committed} already in the store, {summary.skipped_failed} skipped (failed before)")
    for f in summary.failures:
        click.echo(f"FAILED {f['id']}: {f['reason']}  [{f['source']}]")
    if summary.failures and not allow_failures:
        click.echo(f"{len(summary.failures)} video(s) failed (listed above and in {out}/failures.jsonl); exit code 3.",
                   err=True)
        sys.exit(EXIT_FAILURES)
