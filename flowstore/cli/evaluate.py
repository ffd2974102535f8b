"""``flowstore evaluate``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..io import atomic_write_text
from .common import user_errors

HELP = """Evaluate trained heads (output directories of `flowstore train-head`) with multi-view
testing, and print an accuracy table.

Every video's score is the softmax averaged over its test views (temporal positions x
crops stored by `flowstore features`); the segments of a view are combined by the head
(average consensus, or the transformer). A fused model reports every fusion it has fitted
(late-avg, late-weighted, svm); the one it was trained with is marked *. A mid-conv model
reads its two map stores (`features --pool none`). A multi-task model (`train-head --head
multitask`) is evaluated per dataset, each on its own feature store, recorded labels and
classes: one row per dataset, per_dataset in metrics.json, predictions_<dataset>.csv and
confusion_<dataset>.png (--features: one per dataset, in order; --labels does not apply).

By default each model reads the feature files and labels recorded when it was trained;
--features (one per stream, single --model only) and --labels override them. The feature
files must have been made like the training ones (same backbone, weights, sampling, views,
input values; checked from their provenance) unless --allow-mismatch, and fit the heads
(feature dimension; segments for a transformer). The labels' classes are matched to the ones
the model was trained with by name: the same names in another order are remapped, other or
missing names are an error. Test videos the model was trained or validated on are an error
unless --allow-overlap. A damaged model directory (a file missing, cut short or not matching
the others) is an error naming the file.

\b
Output (--out DIR): DIR/<model>/metrics.json, predictions.csv, confusion.png per model,
DIR/summary.json (all rows) and DIR/table.md (the table, also printed; --table elsewhere).
--reference ROW=TEXT adds a column beside the accuracies, e.g. a paper's number for that row
(pipelines/demo_sz_table.toml: Simonyan & Zisserman's tables).

\b
Examples:
  flowstore evaluate --model heads/rgb --model heads/flow --model heads/fused --out eval
  flowstore evaluate --model heads/flow --features flow_test.h5 --labels test.txt --subset all --views 1
"""


@click.command("evaluate", help=HELP)
@click.option("--model", "-m", "models", multiple=True, required=True, type=click.Path(path_type=str),
              help="train-head output directory (repeatable).")
@click.option("--features", "-f", "features", multiple=True, type=click.Path(path_type=str),
              help="Feature stores to use instead of the recorded ones, in the model's stream order.")
@click.option("--labels", "-l", type=click.Path(path_type=str), default=None, help="Labels instead of the recorded ones (same formats as train-head).")
@click.option("--test-labels", type=click.Path(path_type=str), default=None, help="Test list (mmaction2 list or demo csv).")
@click.option("--classes", type=click.Path(path_type=str), default=None, help="classInd.txt for mmaction2 lists.")
@click.option("--split", type=int, default=1, show_default=True, help="UCF101/HMDB51 split number (with --labels DIR).")
@click.option("--subset", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True,
              help="Which labelled videos: test, the model's validation videos, train (incl. val) or all.")
@click.option("--views", type=int, default=None, help="Use only the first N stored views (default: all).")
@click.option("--out", "-o", type=click.Path(path_type=str), default=None, help="Output directory.")
@click.option("--table", type=click.Path(path_type=str), default=None, help="Also write the markdown table here.")
@click.option("--reference", "references", multiple=True, metavar="ROW=TEXT",
              help="Add a reference column to the table (e.g. a paper's number): ROW is a model's name, or "
                   "MODEL:FUSION for a fused model's rows (fused:svm); repeatable.")
@click.option("--views-grid", is_flag=True,
              help="Also score every (N_t, N_s) subset of the stored views: clip- and video-level accuracy and "
                   "seconds per video per pair, printed, plotted and written to OUT/<model>/views_grid.*.")
@click.option("--allow-mismatch", is_flag=True, help="Evaluate even if the features were made differently from the training ones.")
@click.option("--allow-overlap", is_flag=True,
              help="With --subset test: evaluate even if some test videos are ones the model was trained or "
                   "validated on (otherwise an error naming them).")
@click.option("--device", default=None, help="Torch device (default cpu).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Torch CPU threads; heads are small, so more threads mostly add overhead.")
@user_errors
def command(models, features, labels, test_labels, classes, split, subset, views, out, table, references, views_grid,
            allow_mismatch, allow_overlap, device, threads):
    import torch

    from ..heads.modeleval import accuracy_table, evaluate_model, row_key
    from ..heads.splits import load_label_sets

    if threads:
        torch.set_num_threads(threads)
    if features and len(models) != 1:
        raise click.UsageError("--features overrides the features of ONE --model")
    reference = dict(_reference(r) for r in references)
    label_sets = None
    if labels is not None:
        label_sets = load_label_sets(labels, test_labels=test_labels, classes=classes, split=split)
    elif test_labels is not None:
        raise click.UsageError("--test-labels needs --labels")
    names = [Path(m).name or str(m) for m in models]
    if len(set(names)) != len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    rows, results = [], []
    for model, name in zip(models, names):
        res = evaluate_model(model, features=list(features) or None, label_sets=label_sets, subset=subset,
                             views=views, out=None if out is None else Path(out) / name,
                             allow_mismatch=allow_mismatch, allow_overlap=allow_overlap, device=device or "cpu",
                             log=lambda m: click.echo(m, err=True))
        rows += res["rows"]
        results.append({k: v for k, v in res.items() if k not in ("per_class_accuracy", "confusion_matrix")})
    unknown = sorted(set(reference) - {row_key(r) for r in rows})
    if unknown:
        raise click.UsageError(f"--reference names no row of the table: {unknown}; "
                               f"choose from {[row_key(r) for r in rows]}")
    text = accuracy_table(rows, reference)
    click.echo(f"\nAccuracy on {subset} videos (multi-view: softmax averaged over the views; * = the model's chosen fusion):\n")
    click.echo(text)
    targets = [Path(table)] if table else []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        targets.append(Path(out) / "table.md")
        atomic_write_text(Path(out) / "summary.json",
                          json.dumps({"subset": subset, "rows": rows, "models": results}, indent=1) + "\n")
    for t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(t, text + "\n")
    from ..heads.views import report_views

    report_views(models, names, features=list(features) or None, label_sets=label_sets, subset=subset, out=out,
                 grid=views_grid, device=device or "cpu", echo=click.echo)


def _reference(text: str) -> tuple[str, str]:
    row, sep, value = text.partition("=")
    if not sep or not row.strip():
        raise click.UsageError(f"--reference {text!r}: give ROW=TEXT (e.g. flow=81.0%)")
    return row.strip(), value.strip()
