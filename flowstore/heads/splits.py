"""Which videos a head is trained, validated and tested on: label files read into train and
test sets (:func:`load_label_sets`), and the validation split and cross-validation folds
drawn from the training videos, per class or by video group (:func:`split_validation`,
:func:`stratified_folds`, :func:`video_groups`)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


class ClassMismatchError(InputError):
    """Labels whose class names are not the ones a head was trained with (matched by name)."""


def placeholder_classes(names) -> bool:
    """Whether ``names`` are the stand-ins ``"0" .. "N-1"`` given to labels that name no classes
    (an mmaction2 list without ``--classes``): their labels can only be matched by number."""
    names = list(names)
    return names == [str(i) for i in range(len(names))]


def _some(names, k: int = 5) -> str:
    names = list(names)
    return ", ".join(map(repr, names[:k])) + (f" and {len(names) - k} more" if len(names) > k else "")


def align_classes(entries, have, want, what: str, target: str) -> tuple[list, bool]:
    """``entries`` (labels numbered by the class list ``have``) relabelled to the class list
    ``want`` by class NAME; returns ``(entries, reordered)``.

    The same names in another order are remapped. Names missing from ``have`` or not in ``want``
    are a :class:`ClassMismatchError` naming them (``what``: the labels, ``target``: what was
    trained on ``want``). Labels that name no classes can only be numbers: they are kept when
    ``want`` names none either and every label is one of its classes."""
    have, want = list(have), list(want)
    entries = list(entries)
    if have == want:
        return entries, False
    if placeholder_classes(have) and placeholder_classes(want):
        # the count of stand-in names is 1 + the largest label listed, so fewer is fine
        top = max((e.label for e in entries), default=-1)
        if top >= len(want):
            raise ClassMismatchError(f"{what} use label {top}, but {target} has {len(want)} classes "
                                     f"(0..{len(want) - 1})")
        return entries, False
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing or extra or len(have) != len(want):
        parts = []
        if missing:
            parts.append(f"missing {_some(missing)}")
        if extra:
            parts.append(f"not trained on {_some(extra)}")
        if not parts:  # the same names but one listed twice
            parts.append(f"{len(have)} classes for {len(want)}")
        hint = (" (these labels name no classes: pass --classes classInd.txt)" if placeholder_classes(have)
                else "")
        raise ClassMismatchError(f"{what} do not have the classes {target} was trained with "
                                 f"(classes are matched by name): {'; '.join(parts)}{hint}")
    index = {c: i for i, c in enumerate(want)}
    return [dataclasses.replace(e, label=index[have[e.label]]) for e in entries], True


def missing_classes(labels: np.ndarray, classes) -> list[str]:
    """The names of ``classes`` that no label in ``labels`` has."""
    present = set(np.asarray(labels, np.int64).tolist())
    return [c for i, c in enumerate(classes) if i not in present]


@dataclass
class LabelSets:
    """Labelled videos of each split (``{video name: label}`` in file order) and class names."""

    train: list = field(default_factory=list)       # LabelEntry
    test: list = field(default_factory=list)
    classes: list[str] | None = None
    source: dict = field(default_factory=dict)


def load_label_sets(labels, *, test_labels=None, classes=None, split: int = 1) -> LabelSets:
    """Read labels in any format :mod:`flowstore.data.labels` knows, into train and test sets.

    * a ``.csv`` file: the demo dataset's ``labels.csv`` (its ``split`` column: train/test);
    * a directory with ``classInd.txt`` and ``trainlist0N.txt``: UCF101 split ``split``;
    * a directory with ``<class>_test_splitN.txt`` files: HMDB51 split ``split``;
    * any other file: an mmaction2 list (training videos); ``test_labels`` adds the test list.

    ``classes`` (a classInd.txt path) names the classes of mmaction2 lists. ``test_labels``
    (an mmaction2 list, or a demo csv whose ``test`` rows are used) overrides the test set.
    """
    from ..data import labels as L

    path = Path(os.fspath(labels))
    source = {"labels": str(path.resolve()), "split": int(split),
              "test_labels": None if test_labels is None else str(Path(test_labels).resolve()),
              "classes": None if classes is None else str(Path(classes).resolve())}
    if path.is_dir():
        if (path / "classInd.txt").exists() and (path / f"trainlist{split:02d}.txt").exists():
            tr = L.read_ucf101(path, split, "train")
            te = L.read_ucf101(path, split, "test")
            source["format"] = "ucf101"
        elif list(path.glob(f"*_test_split{split}.txt")):
            tr = L.read_hmdb51(path, split, "train", classes)
            te = L.read_hmdb51(path, split, "test", tr.classes)
            source["format"] = "hmdb51"
        else:
            raise L.LabelError(f"{path}: a label directory must hold UCF101 (classInd.txt, trainlist{split:02d}.txt) "
                               f"or HMDB51 (<class>_test_split{split}.txt) files")
    elif path.suffix.lower() == ".csv":
        both = L.read_demo_labels(path, class_index=classes)
        tr, te = both.subset("train"), both.subset("test")
        source["format"] = "demo-csv"
    else:
        tr = L.read_mmaction_list(path, classes)
        te = L.Annotations([], tr.classes, "")
        source["format"] = "mmaction"
    if test_labels is not None:
        tp = Path(os.fspath(test_labels))
        te = (L.read_demo_labels(tp, split="test") if tp.suffix.lower() == ".csv"
              else L.read_mmaction_list(tp, classes if classes is not None else tr.classes))
        if not len(te):
            raise L.LabelError(f"{tp}: no test videos")
        if te.classes is not None and tr.classes is not None:
            # a test csv numbers its classes by its own classInd.txt: match them by name
            ents, _ = align_classes(te, te.classes, tr.classes, f"test labels {tp}", f"the training labels {path}")
            te = L.Annotations(ents, tr.classes, te.source)
    names = tr.classes or te.classes
    if names is None:
        n = 1 + max([e.label for e in list(tr) + list(te)], default=-1)
        names = [str(i) for i in range(n)]
    if not len(tr):
        raise L.LabelError(f"{path}: no training videos")
    return LabelSets(train=list(tr), test=list(te), classes=list(names), source=source)


def resolve_labels(entries, videos, name: str) -> tuple[list[str], np.ndarray]:
    """``(video ids, labels)`` of label ``entries`` matched against a store's ``videos``
    (``name`` names the store in errors)."""
    from ..data.labels import Annotations

    if not entries:
        return [], np.zeros(0, np.int64)
    ann = Annotations(list(entries)).resolve(videos, name)
    return ann.videos, np.array([e.label for e in ann.entries], np.int64)


def video_groups(videos, pattern: str | None) -> list[str] | None:
    """Group key of every video id: the regex ``pattern``'s first group (or whole match) when it
    matches, else the id itself. Videos of one group never end up on both sides of a split
    (e.g. ``_g(\\d+)_`` for UCF101's groups, ``_(\\d+)$`` for the demo's paired appearances)."""
    if not pattern:
        return None
    import re

    rx = re.compile(pattern)
    out = []
    for v in videos:
        m = rx.search(v)
        out.append(v if m is None else (m.group(1) if rx.groups else m.group(0)))
    return out


def stratified_folds(labels: np.ndarray, k: int, seed: int, groups=None) -> np.ndarray:
    """Fold number (0..k-1) of every sample. Without ``groups``: each class is shuffled with
    ``seed`` and dealt round-robin, so every fold holds about 1/k of every class. With
    ``groups``: whole groups are shuffled and dealt round-robin."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), 0xF01D])
    folds = np.empty(len(labels), np.int64)
    if groups is not None:
        keys = sorted(set(groups))
        if len(keys) < k:
            raise InputError(f"{len(keys)} video groups cannot fill {k} folds")
        fold_of = {g: i % k for i, g in enumerate(keys[j] for j in rng.permutation(len(keys)))}
        return np.array([fold_of[g] for g in groups], np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


def split_validation(labels: np.ndarray, fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """``(train_index, val_index)``. Without ``groups``: stratified, ``round(fraction * n_c)``
    videos of each class (at least one when the class has two or more) go to validation.
    With ``groups``: ``round(fraction * n_groups)`` whole groups (at least one) do."""
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([int(seed), 0x7A1])
    val = []
    if fraction > 0 and groups is not None:
        keys = sorted(set(groups))
        if len(keys) >= 2:
            k = min(max(int(np.floor(fraction * len(keys) + 0.5)), 1), len(keys) - 1)
            chosen = {keys[j] for j in rng.permutation(len(keys))[:k]}
            val = [i for i, g in enumerate(groups) if g in chosen]
    elif fraction > 0:
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            k = int(np.floor(fraction * len(idx) + 0.5))
            if len(idx) >= 2:
                k = min(max(k, 1), len(idx) - 1)
            else:
                k = 0
            val.extend(rng.permutation(idx)[:k].tolist())
    val = np.array(sorted(val), np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


__all__ = ["ClassMismatchError", "LabelSets", "align_classes", "load_label_sets", "missing_classes", "placeholder_classes",
           "resolve_labels", "split_validation", "stratified_folds", "video_groups"]
