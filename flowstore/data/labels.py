"""Label files: mmaction2 annotation lists, UCF101 and HMDB51 splits, the demo dataset's labels.

Every parser returns :class:`Annotations`: one :class:`LabelEntry` per video with a **0-based**
label and ``where`` = ``"file:line"``, so any later problem (a video missing from the store, an
unknown class) is reported with the line it came from. Malformed files raise :class:`LabelError`
naming the file and line.

Formats:

* mmaction2 lists: ``frame_dir total_frames label`` (rawframes), ``frame_dir offset
  total_frames label`` (with offsets) or ``filename label`` (video lists); labels 0-based.
* UCF101: ``classInd.txt`` (``1 ApplyEyeMakeup``, 1-based), ``trainlist0N.txt``
  (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``, label 1-based and checked against the
  class folder) and ``testlist0N.txt`` (path only; the class is the folder).
* HMDB51: ``<class>_test_splitN.txt`` per class with ``<video>.avi T`` lines, T = 1 train,
  2 test, 0 unused; classes are numbered in sorted name order.
* Demo dataset (:mod:`flowstore.synthetic`): ``labels.csv`` with ``video_id,label,class_name,split``
  (label 0-based) checked against ``classInd.txt`` beside it when present.

Video names are matched to store ids by :meth:`Annotations.resolve`: the exact id, else the
name without its video extension, else its basename without extension when that is unique.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from ..decode import VIDEO_EXTENSIONS
from ..errors import InputError


class LabelError(InputError):
    """A malformed label file or an entry that does not match the store; names file and line."""


@dataclasses.dataclass(frozen=True)
class LabelEntry:
    video: str
    label: int
    where: str
    num_frames: int | None = None
    split: str | None = None


@dataclasses.dataclass
class Annotations:
    entries: list[LabelEntry]
    classes: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def videos(self) -> list[str]:
        return [e.video for e in self.entries]

    @property
    def labels(self) -> dict[str, int]:
        return {e.video: e.label for e in self.entries}

    def subset(self, split: str) -> "Annotations":
        return Annotations([e for e in self.entries if e.split == split], self.classes, self.source)

    def resolve(self, videos: Iterable[str], store_name: str = "the store") -> "Annotations":
        """Entries renamed to the matching store ids; a name with no match is a LabelError."""
        index = VideoIndex(videos)
        out, seen = [], {}
        for e in self.entries:
            vid = index.find(e.video)
            if vid is None:
                raise LabelError(f"{e.where}: video {e.video!r} is not in {store_name}"
                                 f"{index.hint(e.video)}")
            if vid in seen:
                raise LabelError(f"{e.where}: video {e.video!r} is listed twice (first at {seen[vid]})")
            seen[vid] = e.where
            out.append(dataclasses.replace(e, video=vid))
        return Annotations(out, self.classes, self.source)


def _strip_ext(name: str) -> str:
    p = PurePosixPath(name)
    return str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else name


class VideoIndex:
    """Match a listed video name to a store id (exact, extension stripped, unique basename)."""

    def __init__(self, videos: Iterable[str]):
        self.videos = set(videos)
        self._by_base: dict[str, list[str]] = {}
        for v in self.videos:
            self._by_base.setdefault(PurePosixPath(v).name, []).append(v)

    def find(self, name: str) -> str | None:
        name = name.replace(os.sep, "/").strip("/")
        for cand in (name, _strip_ext(name)):
            if cand in self.videos:
                return cand
        hits = self._by_base.get(PurePosixPath(_strip_ext(name)).name, [])
        return hits[0] if len(hits) == 1 else None

    def hint(self, name: str) -> str:
        hits = self._by_base.get(PurePosixPath(_strip_ext(name)).name, [])
        if len(hits) > 1:
            return f" (ambiguous: {sorted(hits)[:3]} share its basename)"
        some = sorted(self.videos)[:3]
        return f" (store ids look like {some})" if some else " (the store is empty)"


def _lines(path) -> Iterable[tuple[int, str, str]]:
    """``(line number, stripped text, "file:line")`` of non-empty, non-comment lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelError(f"label file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield n, line, f"{path}:{n}"


def _int(token: str, where: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise LabelError(f"{where}: {what} must be an integer, got {token!r}") from None


def _check_label(label: int, classes, where: str) -> None:
    if label < 0:
        raise LabelError(f"{where}: label {label} is negative")
    if classes is not None and label >= len(classes):
        raise LabelError(f"{where}: unknown class {label} (there are {len(classes)} classes, 0..{len(classes) - 1})")


def read_class_index(path) -> list[str]:
    """``classInd.txt`` (``1 ApplyEyeMakeup`` lines, numbered 1..N in order) -> class names."""
    classes: list[str] = []
    for _, line, where in _lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise LabelError(f"{where}: expected '<index> <class name>', got {line!r}")
        idx = _int(parts[0], where, "class index")
        if idx != len(classes) + 1:
            raise LabelError(f"{where}: class index {idx} out of order (expected {len(classes) + 1}; "
                             "classInd numbers classes 1..N)")
        if parts[1] in classes:
            raise LabelError(f"{where}: class {parts[1]!r} is listed twice")
        classes.append(parts[1])
    if not classes:
        raise LabelError(f"{path}: no classes")
    return classes


def _classes_arg(classes) -> list[str] | None:
    if classes is None or isinstance(classes, (list, tuple)):
        return None if classes is None else list(classes)
    return read_class_index(classes)


def read_mmaction_list(path, classes=None) -> Annotations:
    """mmaction2 annotation list (``frame_dir total_frames label``, ``frame_dir offset
    total_frames label`` or ``filename label``). ``classes``: names or a classInd.txt path."""
    classes = _classes_arg(classes)
    entries = []
    for _, line, where in _lines(path):
        parts = line.split()
        if len(parts) == 2:
            video, label, frames = parts[0], _int(parts[1], where, "label"), None
        elif len(parts) == 3:
            video, frames, label = parts[0], _int(parts[1], where, "total_frames"), _int(parts[2], where, "label")
        elif len(parts) == 4:
            video, frames, label = parts[0], _int(parts[2], where, "total_frames"), _int(parts[3], where, "label")
            _int(parts[1], where, "offset")
        else:
            raise LabelError(f"{where}: expected 'frame_dir total_frames label' (or 'filename label'), "
                             f"got {len(parts)} fields: {line!r}")
        if frames is not None and frames < 1:
            raise LabelError(f"{where}: total_frames must be positive, got {frames}")
        _check_label(label, classes, where)
        entries.append(LabelEntry(video, label, where, frames))
    return Annotations(entries, classes, str(path))


def read_ucf101(split_dir, split: int = 1, subset: str = "train") -> Annotations:
    """UCF101 ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt`` from ``split_dir``."""
    if subset not in ("train", "test"):
        raise InputError(f"subset must be 'train' or 'test', got {subset!r}")
    split_dir = Path(split_dir)
    classes = read_class_index(split_dir / "classInd.txt")
    number = {name: i for i, name in enumerate(classes)}
    path = split_dir / f"{subset}list{split:02d}.txt"
    entries = []
    for _, line, where in _lines(path):
        parts = line.split()
        if len(parts) not in ((2,) if subset == "train" else (1, 2)):
            want = "'<class>/<video>.avi <class index>'" if subset == "train" else "'<class>/<video>.avi'"
            raise LabelError(f"{where}: expected {want}, got {line!r}")
        rel = parts[0]
        if "/" not in rel:
            raise LabelError(f"{where}: expected '<class>/<video>', got {rel!r}")
        cls = rel.split("/")[0]
        if cls not in number:
            raise LabelError(f"{where}: unknown class {cls!r} (not in {split_dir / 'classInd.txt'})")
        label = number[cls]
        if len(parts) == 2:
            given = _int(parts[1], where, "class index")
            if given != label + 1:
                raise LabelError(f"{where}: class index {given} does not match folder {cls!r} "
                                 f"(classInd.txt gives {label + 1})")
        entries.append(LabelEntry(_strip_ext(rel), label, where, split=subset))
    return Annotations(entries, classes, str(path))


_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<n>\d+)\.txt$")
_HMDB_TAGS = {"1": "train", "2": "test", "0": None}


def read_hmdb51(split_dir, split: int = 1, subset: str | None = "train", classes=None) -> Annotations:
    """HMDB51 ``<class>_test_splitN.txt`` files in ``split_dir``.

    ``subset`` ``train`` (tag 1), ``test`` (tag 2) or None (both; tag-0 videos are never
    returned). Classes are numbered in sorted name order unless ``classes`` (names or a
    classInd.txt path) is given; then a file for a class not in it is an error.
    """
    if subset not in ("train", "test", None):
        raise InputError(f"subset must be 'train', 'test' or None, got {subset!r}")
    split_dir = Path(split_dir)
    files = {}
    if not split_dir.is_dir():
        raise LabelError(f"HMDB51 split folder not found: {split_dir}")
    for f in sorted(split_dir.iterdir()):
        m = _HMDB_FILE.match(f.name)
        if m and int(m["n"]) == split:
            files[m["cls"]] = f
    if not files:
        raise LabelError(f"{split_dir}: no '<class>_test_split{split}.txt' files")
    names = _classes_arg(classes)
    if names is None:
        names = sorted(files)
    number = {n: i for i, n in enumerate(names)}
    entries = []
    for cls, f in files.items():
        if cls not in number:
            raise LabelError(f"{f}: unknown class {cls!r} (not in the given class list)")
        for _, line, where in _lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in _HMDB_TAGS:
                raise LabelError(f"{where}: expected '<video>.avi <0|1|2>' (1 train, 2 test, 0 unused), got {line!r}")
            tag = _HMDB_TAGS[parts[1]]
            if tag is None or (subset is not None and tag != subset):
                continue
            entries.append(LabelEntry(f"{cls}/{_strip_ext(parts[0])}", number[cls], where, split=tag))
    return Annotations(entries, names, str(split_dir))


DEMO_COLUMNS = ("video_id", "label", "class_name", "split")


def read_demo_labels(path, split: str | None = None, class_index=None) -> Annotations:
    """The demo dataset's ``labels.csv`` (``video_id,label,class_name,split``; label 0-based).

    The class names are checked against ``class_index`` (default: ``classInd.txt`` beside the
    file, when it exists). Without one they come from the ``class_name`` column (each label one
    name, each name one label; labels 0..N-1 all present), so the classes are known by name.
    ``split`` keeps only ``train`` or ``test`` rows.
    """
    path = Path(path)
    if class_index is None and (path.parent / "classInd.txt").exists():
        class_index = path.parent / "classInd.txt"
    classes = _classes_arg(class_index)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelError(f"label file not found: {path}") from None
    entries, named = [], {}
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != DEMO_COLUMNS:
            raise LabelError(f"{path}:1: expected the header {','.join(DEMO_COLUMNS)}, got {header!r}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(DEMO_COLUMNS):
                raise LabelError(f"{where}: expected {len(DEMO_COLUMNS)} fields "
                                 f"({','.join(DEMO_COLUMNS)}), got {len(row)}")
            video, label_s, name, row_split = (c.strip() for c in row)
            label = _int(label_s, where, "label")
            _check_label(label, classes, where)
            if classes is not None and classes[label] != name:
                raise LabelError(f"{where}: class {name!r} does not match label {label} "
                                 f"({classes[label]!r} in {class_index})")
            if row_split not in ("train", "test"):
                raise LabelError(f"{where}: split must be 'train' or 'test', got {row_split!r}")
            if classes is None:
                _name_label(named, label, name, where)
            if split is None or row_split == split:
                entries.append(LabelEntry(video, label, where, split=row_split))
    if classes is None and named and sorted(named["labels"]) == list(range(len(named["labels"]))):
        classes = [named["labels"][i][0] for i in range(len(named["labels"]))]
    return Annotations(entries, classes, str(path))


def _name_label(seen: dict, label: int, name: str, where: str) -> None:
    """Record ``label <-> name`` of a demo csv row; a label with two names or a name with two
    labels is an error (the class names would not mean one thing)."""
    labels, names = seen.setdefault("labels", {}), seen.setdefault("names", {})
    if label in labels and labels[label][0] != name:
        raise LabelError(f"{where}: label {label} is class {name!r} here but {labels[label][0]!r} "
                         f"at {labels[label][1]}")
    if name in names and names[name][0] != label:
        raise LabelError(f"{where}: class {name!r} has label {label} here but {names[name][0]} at {names[name][1]}")
    labels.setdefault(label, (name, where))
    names.setdefault(name, (label, where))


def as_label_map(labels, videos: Iterable[str], store_name: str = "the store") -> tuple[list[str], dict[str, int]]:
    """Normalise a dataset's ``labels`` argument to ``(videos in order, {video: label})``.

    ``labels`` is :class:`Annotations` (resolved against ``videos``, errors name the line), a
    mapping ``{video id: label}`` (ids must be in the store) or None (all videos, label -1).
    """
    videos = list(videos)
    if labels is None:
        return videos, {v: -1 for v in videos}
    if isinstance(labels, Annotations):
        resolved = labels.resolve(videos, store_name)
        return resolved.videos, resolved.labels
    if isinstance(labels, Mapping):
        known = set(videos)
        missing = [v for v in labels if v not in known]
        if missing:
            raise LabelError(f"video {missing[0]!r} of the label mapping is not in {store_name}")
        return list(labels), {v: int(lab) for v, lab in labels.items()}
    raise TypeError(f"labels must be Annotations, a mapping or None, not {type(labels).__name__}")


__all__ = [
    "Annotations", "LabelEntry", "LabelError", "VideoIndex", "as_label_map", "read_class_index",
    "read_demo_labels", "read_hmdb51", "read_mmaction_list", "read_ucf101",
]
