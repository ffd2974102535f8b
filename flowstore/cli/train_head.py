"""``flowstore train-head``."""
from __future__ import annotations

import click

from .choices import RegistryChoice
from .common import user_errors

HELP = """Train a classification head on frozen features (from `flowstore features`), fuse
streams, and evaluate on the test videos.

One --features file trains one head. Several (e.g. rgb and flow) train one head per stream
and fuse their softmax scores: late-avg (mean), late-weighted (weights grid-searched on the
validation scores), svm (Simonyan & Zisserman: a linear SVM on the stacked, L2-normalised
scores, fitted on the validation scores, or with --fusion-folds K on out-of-fold scores), late-perclass
(one learned weight per class and stream), logits-mlp (an MLP on the concatenated logits) and
token-transformer (one token per stream's scores, a small transformer and an MLP) -- the learned
ones fitted on the same held-out scores, their hyper-parameters chosen there by 3-fold
cross-validation and reported; or early-concat trains one head on the
concatenated (per-stream L2-normalised) features. With several streams every score fusion is
fitted and reported; --fusion picks the one whose numbers are the top-level metrics.
mid-conv fuses spatial feature maps (map stores from `flowstore features --pool none`): the
maps resized to the smallest h x w (a 1x1 conv down to the smallest depth where needed),
concatenated along depth, a 1x1 conv, a 3x3 conv and a small FC, trained on the training
videos, its hyper-parameters selected on the validation split and reported (fusion_mid-conv.pt).
Every other fusion and head needs pooled feature stores; the other kind is refused.

Heads: linear and mlp average the segment features (TSN consensus); transformer attends over
the segment tokens. Features are L2-normalised per segment inside the head (a random frozen
net's features scale with motion speed); --no-l2-normalize turns that off. Every epoch a
training video contributes one of its views (--train-views random); testing averages the
softmax scores over all views. A stratified --val-fraction of the training videos is held
out for early stopping, the best epoch and fitting the fusion.

Checks before training: a video in both the training and the test labels is an error
(--allow-overlap trains anyway); so is a training split without a class that the val or test
split holds. A split or --fusion-folds fold that comes out empty or without some class is
reported as a warning. Class names are recorded (config.json, head.json); `flowstore evaluate`
matches labels to them by name.

Multi-task (--head multitask --also FEATURES LABELS, repeatable): Simonyan & Zisserman's
UCF101 + HMDB51 training. --features/--labels are the first dataset, every --also another one
(its own feature store and labels: labels.csv or a UCF101/HMDB51 folder, --split applies); one
shared head body (--hidden, --dropout), one output layer per dataset, and each sample's loss
only from its own dataset's layer. Each dataset is split and scored on its own; metrics.json
holds the first at the top level and every dataset under per_dataset, with
predictions_<dataset>.csv and confusion_<dataset>.png (dataset = the feature file's stem).
Multi-task training runs --epochs on the CPU, without early stopping.

Fine-tuning (--init-from MODEL_DIR): start from the head of a model trained on one dataset
(one --features file, or a multi-task model) and train it on this one. The head type and its
options come from MODEL_DIR; the feature dimension must match (else an error naming both
feature files). The output layer is re-created when the classes differ (the output says so);
config.json and metrics.json record init_from.

\b
Labels (--labels):
  labels.csv            the demo dataset's video_id,label,class_name,split (train/test rows)
  DIR                   UCF101 (classInd.txt, trainlist0N.txt, testlist0N.txt; --split N)
                        or HMDB51 (<class>_test_splitN.txt; --split N)
  list.txt              mmaction2 list of training videos; --test-labels adds the test list

\b
Output directory:
  config.json           arguments, streams (feature files + provenance), labels, splits
  head.pt/.json         the head (or head_<stream>.pt/.json per stream); state_dict + config
  fusion.json           fitted fusion parameters (weights, SVM coefficients, selected hyper-parameters)
  fusion_<name>.pt      the weights of the logits-mlp and token-transformer fusions
  metrics.json          split, n, top1, top5, top5_k, mean_class_accuracy, per_class_accuracy,
                        confusion_matrix, head, fusion, streams, per_stream, per_fusion, val, counts
  predictions.csv       per video: label, prediction, correct, score per class
  confusion.png         confusion matrix; curves.png (curves_<stream>.png): training curves

\b
Examples:
  flowstore train-head --features flow.h5 --labels demo/labels.csv --head linear --out heads/flow
  flowstore train-head --features rgb.h5 --features flow.h5 --labels demo/labels.csv --fusion svm --out heads/fused
  flowstore train-head --features rgb.h5 --labels ucfTrainTestlist --split 1 --head transformer --out heads/t
  flowstore train-head --features ucf.h5 --labels ucfTrainTestlist --also hmdb.h5 hmdb51_splits \
      --head multitask --out heads/mt
  flowstore train-head --features hmdb.h5 --labels hmdb51_splits --head mlp --init-from heads/ucf_mlp --out heads/ft
  flowstore train-head --features rgb_maps.h5 --features flow_maps.h5 --labels demo/labels.csv --fusion mid-conv \
      --out heads/midconv     (map stores: flowstore features --pool none)
"""


@click.command("train-head", help=HELP)
@click.option("--features", "-f", "features", multiple=True, required=True, type=click.Path(path_type=str),
              help="Feature store (repeat for several streams, e.g. rgb then flow).")
@click.option("--name", "names", multiple=True, help="Stream names, one per --features (default: from provenance).")
@click.option("--labels", "-l", required=True, type=click.Path(path_type=str), help="Labels: labels.csv, a UCF101/HMDB51 split folder, or an mmaction2 list.")
@click.option("--also", "also", multiple=True, nargs=2, type=click.Path(path_type=str), metavar="FEATURES LABELS",
              help="Another dataset for --head multitask: its feature store and its labels (repeatable).")
@click.option("--init-from", type=click.Path(path_type=str), default=None, metavar="MODEL_DIR",
              help="Fine-tune: start from the head of this train-head output directory.")
@click.option("--test-labels", type=click.Path(path_type=str), default=None, help="Test videos (mmaction2 list or demo csv); overrides the test set of --labels.")
@click.option("--classes", type=click.Path(path_type=str), default=None, help="classInd.txt naming the classes (for mmaction2 lists).")
@click.option("--split", type=int, default=1, show_default=True, help="Split number for UCF101/HMDB51 label folders.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Output directory.")
@click.option("--head", type=RegistryChoice("flowstore.heads.registry:list_heads"), default="linear", show_default=True)
@click.option("--fusion", type=RegistryChoice("flowstore.heads.fusion:list_fusions"), default="none", show_default=True,
              help="How several streams are combined (none: one --features).")
@click.option("--hidden", type=int, default=None, help="mlp: hidden units (default 512).")
@click.option("--dropout", type=float, default=None, help="Dropout (default: linear 0, mlp 0.5, transformer 0.1).")
@click.option("--dim", type=int, default=None, help="transformer: token width (default 256).")
@click.option("--layers", type=int, default=None, help="transformer: encoder layers (default 2).")
@click.option("--attention-heads", type=int, default=None, help="transformer: attention heads (default 4).")
@click.option("--pooling", type=click.Choice(["cls", "mean"]), default=None, help="transformer: CLS token or mean of tokens (default cls).")
@click.option("--epochs", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak AdamW learning rate.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "cyclic", "constant"]), default="cosine", show_default=True,
              help="cosine decay to 0, or triangular cycles between lr/10 and lr (--cycle-epochs each).")
@click.option("--cycle-epochs", type=int, default=4, show_default=True)
@click.option("--class-weighted", is_flag=True, help="Weight the loss by inverse class frequency.")
@click.option("--early-stopping", type=int, default=None, metavar="PATIENCE", help="Stop after PATIENCE epochs without improvement on the validation split.")
@click.option("--monitor", type=click.Choice(["val_loss", "val_acc"]), default="val_loss", show_default=True,
              help="What picks the best epoch and drives early stopping.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True, help="Stratified share of the training videos held out for validation (0: none).")
@click.option("--fusion-folds", type=int, default=0, show_default=True, metavar="K",
              help="Fit the fusions on K-fold out-of-fold scores of the training videos (K+1 heads per stream) "
                   "instead of on the validation split; useful with few videos (--val-fraction 0).")
@click.option("--group-pattern", default=None, metavar="REGEX",
              help="Keep videos whose ids share this regex's match (its first group) on one side of the "
                   "validation split and the folds, e.g. '_g(\\d+)_' for UCF101 groups.")
@click.option("--train-views", type=click.Choice(["random", "all", "first"]), default="random", show_default=True,
              help="Training views: one random view per video and epoch, every view, or only the first.")
@click.option("--no-l2-normalize", is_flag=True, help="Do not L2-normalise each segment's features in the head.")
@click.option("--svm-c", type=float, default=1.0, show_default=True, help="C of the SVM fusion.")
@click.option("--allow-overlap", is_flag=True,
              help="Train even if some videos are in both the training and the test labels (otherwise an "
                   "error naming them: their test accuracy would measure memory).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, initialisation and shuffling.")
@click.option("--device", default=None, help="Torch device (default cpu).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Torch CPU threads; heads are small, so more threads mostly add overhead.")
@click.option("--gpu", type=int, default=None, help="GPU index; same as --device cuda:N.")
@user_errors
def command(features, names, labels, also, init_from, test_labels, classes, split, out, head, fusion, hidden, dropout, dim, layers,
            attention_heads, pooling, epochs, lr, weight_decay, batch_size, schedule, cycle_epochs, class_weighted,
            early_stopping, monitor, val_fraction, fusion_folds, group_pattern, train_views, no_l2_normalize, svm_c, allow_overlap,
            seed, device, gpu, threads):
    import torch

    from ..heads.modeldir import TrainArgs, train_model
    from ..heads.splits import load_label_sets
    from ..heads.streams import open_streams

    if threads:
        torch.set_num_threads(threads)
    if gpu is not None and device is not None:
        raise click.UsageError("give --gpu or --device, not both")
    device = f"cuda:{gpu}" if gpu is not None else (device or "cpu")
    from ..heads.registry import head_options, list_heads

    head_kwargs = {}
    for key, value in (("hidden", hidden), ("dropout", dropout), ("dim", dim), ("layers", layers),
                       ("heads", attention_heads), ("pooling", pooling)):
        if value is None:
            continue
        if key not in head_options(head):
            opt = "--attention-heads" if key == "heads" else f"--{key}"
            heads = [name for name in list_heads() if key in head_options(name)]
            raise click.UsageError(f"{opt} applies to the {'/'.join(heads)} head, not {head}")
        head_kwargs[key] = value
    args = TrainArgs(head=head, fusion=fusion, head_kwargs=head_kwargs, epochs=epochs, lr=lr,
                     weight_decay=weight_decay, batch_size=batch_size, class_weighted=class_weighted,
                     schedule=schedule, cycle_epochs=cycle_epochs, early_stopping=early_stopping, monitor=monitor,
                     seed=seed, l2_normalize=not no_l2_normalize, train_views=train_views,
                     val_fraction=val_fraction, fusion_folds=fusion_folds, group_pattern=group_pattern, svm_c=svm_c, device=device,
                     allow_overlap=allow_overlap, init_from=init_from)
    label_sets = load_label_sets(labels, test_labels=test_labels, classes=classes, split=split)
    if also or head == "multitask":
        _multitask(features, names, label_sets, also, split, out, args)
        return
    streams = open_streams(features, list(names) or None, kind="maps" if fusion == "mid-conv" else "vectors",
                           needed_by=f"train-head --fusion {fusion}")
    try:
        result = train_model(streams, label_sets, out, args, log=lambda m: click.echo(m, err=True))
    finally:
        for s in streams:
            s.store.close()
    click.echo(f"train-head: {result['fusion'] if result['fusion'] != 'none' else result['streams'][0]} "
               f"({head}) on {result['split']} (n={result['n']}): top-1 {result['top1']:.1%}, "
               f"top-{result['top5_k']} {result['top5']:.1%}, mean class accuracy {result['mean_class_accuracy']:.1%}")
    for name, m in result["per_stream"].items():
        click.echo(f"  stream {name}: top-1 {m['top1']:.1%}")
    for name, m in result["per_fusion"].items():
        extra = ""
        if "weights" in m:
            extra = " (weights " + ", ".join(f"{k} {v:.2f}" for k, v in m["weights"].items()) + ")"
        click.echo(f"  fusion {name}: top-1 {m['top1']:.1%}{extra}")
    click.echo(f"train-head: wrote {out}/metrics.json, predictions.csv, confusion.png")


def _multitask(features, names, label_sets, also, split, out, args) -> None:
    """``--head multitask``: the first dataset from --features/--labels, the others from --also."""
    from ..heads.multitask_model import Task, dataset_names, train_multitask_model
    from ..heads.splits import load_label_sets
    from ..heads.streams import open_streams

    if len(features) != 1:
        raise click.UsageError(f"--head multitask takes one --features file per dataset (the first; the others "
                               f"with --also), got {len(features)}")
    if names:
        raise click.UsageError("--name names fused streams; multi-task datasets are named by their feature files")
    paths = [features[0]] + [f for f, _ in also]
    sets = [label_sets] + [load_label_sets(lab, split=split) for _, lab in also]
    streams = []
    try:
        for name, path in zip(dataset_names(paths), paths):
            streams += open_streams([path], [name], needed_by="train-head --head multitask")
        tasks = [Task(s.name, s, ls) for s, ls in zip(streams, sets)]
        result = train_multitask_model(tasks, out, args, log=lambda m: click.echo(m, err=True))
    finally:
        for s in streams:
            s.store.close()
    for name, m in result["per_dataset"].items():
        click.echo(f"train-head: multitask [{name}] on {m['split']} (n={m['n']}): top-1 {m['top1']:.1%}, "
                   f"top-{m['top5_k']} {m['top5']:.1%}, mean class accuracy {m['mean_class_accuracy']:.1%}")
    click.echo(f"train-head: wrote {out}/metrics.json (per_dataset), predictions_<dataset>.csv, confusion_<dataset>.png")
