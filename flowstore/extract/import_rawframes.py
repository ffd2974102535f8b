"""``flowstore import-rawframes``: an mmaction2 rawframes or denseflow tree -> a store, the image
files stored byte for byte (no re-encoding).

A tree holds one folder per video with an RGB frame and two flow component images per index::

    TREE/<video id>/img_00001.jpg  flow_x_00001.jpg  flow_y_00001.jpg   mmaction2 / old denseflow
    TREE/<video id>/img_00000.jpg  flow_x_00000.jpg  flow_y_00000.jpg   denseflow since 2019 (0-based)
    TREE/<video id>/img_00001.jpg  x_00001.jpg       y_00001.jpg        mmaction2 tools/misc/flow_extraction.py

The file number of the first frame (0 or 1) is found per video; store indices are 0-based
(``index = file number - first number``). The flow files hold 8-bit levels the tree's tool made;
the user declares how (``bound`` and ``rounding``, docs/FORMAT.md section 7) and the manifest
records it with the tree it came from (header key ``imported``).

A video whose files are missing, unreadable, not images of one size, numbered with gaps, or whose
flow count is not ``frames - stride`` fails (``failures.jsonl``); nothing is padded or trimmed.
The run is resumable like ``extract``: committed videos are skipped, the commit protocol is the
same (:mod:`flowstore.store.writer`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import string
import time
from pathlib import Path


from ..codec import decode_gray, decode_rgb
from ..decode import FrameResize
from ..errors import InputError, StoreWriteError
from ..quantize import QuantSpec
from ..store.backend import BACKENDS
from ..store.format import FLOW_X, FLOW_Y, MAX_RECORDS_PER_VIDEO, RGB, VideoEntry, check_video_id
from ..store.records import FLOW_COMPONENTS
from ..store.writer import ShardAllocator, StoreLock, StoreWriter, describe_os_error
from .config import DEFAULT_SHARD_SIZE
from .plan import VideoJob
from .run import ExtractSummary, check_writable, choose_todo, commit_result
from .worker import VideoResult, open_next_shard

RGB_TMPL = "img_{:05d}.jpg"
#: flow templates tried in this order when none is given: mmaction2/denseflow, then x_/y_
FLOW_TMPLS = ("flow_{}_{:05d}.jpg", "{}_{:05d}.jpg")
COMPONENT_NAMES = {FLOW_X: "x", FLOW_Y: "y"}  # what a flow template's first field becomes
_EXT_CODEC = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


class ImportFailure(InputError):
    """One video cannot be imported (becomes a line of failures.jsonl)."""


def template_regex(template: str, fields: int) -> re.Pattern:
    """A file-name template (``img_{:05d}.jpg``, ``flow_{}_{:05d}.jpg``; mmaction2's
    ``filename_tmpl``) as a regex whose group ``n`` is the file number; a flow template's first
    field is the component (``x``/``y``), captured as group ``c``."""
    parts, names = [], (["c", "n"] if fields == 2 else ["n"])
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            if not names or field not in ("", "0", "1"):
                raise InputError(f"file template {template!r} must have {fields} field(s), like "
                                 f"{'flow_{}_{:05d}.jpg' if fields == 2 else 'img_{:05d}.jpg'}")
            name = names.pop(0)
            parts.append(f"(?P<{name}>[0-9]+)" if name == "n" else "(?P<c>[^/]+?)")
    if names:
        raise InputError(f"file template {template!r} must have {fields} field(s)")
    return re.compile("".join(parts), re.ASCII)


def template_codec(template: str) -> str:
    ext = os.path.splitext(template)[1].lower()
    if ext not in _EXT_CODEC:
        raise InputError(f"file template {template!r}: import reads .jpg/.jpeg or .png images")
    return _EXT_CODEC[ext]


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    out: str
    quant: QuantSpec                 # declared by the user: how the tree's tool made the levels
    backend: str = "lmdb"
    rgb_tmpl: str = RGB_TMPL
    flow_tmpl: str | None = None     # None: the first of FLOW_TMPLS that matches the tree
    stride: int = 1
    tool: str = "unknown"            # what made the tree (denseflow, mmaction2, ...): provenance
    method: str = "unknown"          # the flow method the tree's tool used: provenance
    shard_size: int = DEFAULT_SHARD_SIZE

    def __post_init__(self):
        BACKENDS.check(self.backend)
        if self.quant.scheme != "bound":
            raise InputError("import reads 8-bit flow made with a fixed bound (--bound); minmax trees carry no ranges")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        template_regex(self.rgb_tmpl, 1)
        template_codec(self.rgb_tmpl)
        if self.flow_tmpl is not None:
            template_regex(self.flow_tmpl, 2)
            template_codec(self.flow_tmpl)

    def settings(self, tree: str, flow_tmpl: str, labels: str | None) -> dict:
        """The manifest settings (every run extending the store repeats them) and the header key
        ``imported``: where the store came from."""
        return {
            "backend": self.backend,
            "frames": {"codec": template_codec(self.rgb_tmpl), "quality": None, "color": "RGB"},
            "resize": FrameResize().to_manifest(),
            "decoder": "imported",
            "stride": self.stride,
            "flow": {"method": self.method, "engine": "imported", "library": self.tool,
                     "codec": template_codec(flow_tmpl), "quality": None, "components": list(FLOW_COMPONENTS),
                     "input": f"imported 8-bit flow images of a rawframes tree made by {self.tool}"},
            "quantization": self.quant.to_manifest(),
            "imported": {"from": "rawframes", "tree": tree, "tool": self.tool,
                         "rgb_template": self.rgb_tmpl, "flow_template": flow_tmpl, "labels": labels},
        }


# -- one video folder ---------------------------------------------------------------------
def _numbered(files: list[str], pattern: re.Pattern, component: str | None = None) -> dict[int, str]:
    out: dict[int, str] = {}
    for name in files:
        m = pattern.fullmatch(name)
        if m and (component is None or m.group("c") == component):
            out[int(m.group("n"))] = name
    return out


def _check_numbers(numbers: dict[int, str], first: int, what: str) -> int:
    """The count of files ``first, first + 1, ...``; a gap or a stray number fails the video."""
    expected = range(first, first + len(numbers))
    if set(numbers) != set(expected):
        missing = sorted(set(expected) - set(numbers))[:5]
        raise ImportFailure(f"{what}: {len(numbers)} files numbered {min(numbers)}..{max(numbers)} "
                            f"from {first}, missing number(s) {missing} (gaps are never padded)")
    return len(numbers)


def video_files(folder: Path, rgb: re.Pattern, flow: re.Pattern) -> tuple[list[str], list[str], list[str]]:
    """The folder's RGB, flow x and flow y file names in index order; ImportFailure if the numbering
    or the counts do not add up."""
    try:
        files = os.listdir(folder)
    except OSError as exc:
        raise ImportFailure(f"cannot list {folder}: {exc.strerror or exc}") from None
    frames = _numbered(files, rgb)
    flows = {kind: _numbered(files, flow, c) for kind, c in COMPONENT_NAMES.items()}
    if not frames:
        raise ImportFailure("no RGB frame files")
    if not flows[FLOW_X] and not flows[FLOW_Y]:
        raise ImportFailure("no flow files")
    first = min(frames)
    if first not in (0, 1):
        raise ImportFailure(f"the first RGB frame is number {first}; trees number from 0 or 1")
    _check_numbers(frames, first, "RGB frames")
    counts = {kind: _check_numbers(flows[kind], first, f"flow_{COMPONENT_NAMES[kind]}") if flows[kind] else 0
              for kind in flows}
    if counts[FLOW_X] != counts[FLOW_Y]:
        raise ImportFailure(f"{counts[FLOW_X]} flow x files but {counts[FLOW_Y]} flow y files")
    return ([frames[i] for i in sorted(frames)], [flows[FLOW_X][i] for i in sorted(flows[FLOW_X])],
            [flows[FLOW_Y][i] for i in sorted(flows[FLOW_Y])])


def source_digest(folder: Path, names: list[str]) -> tuple[int, str]:
    """``(source_size, source_sha256)`` of an imported video (docs/FORMAT.md, section 3): the total
    size of its imported files, and the SHA-256 over them in sorted name order, each as its UTF-8
    name, a NUL byte, its size as 8 bytes little-endian, then its bytes."""
    digest, total = hashlib.sha256(), 0
    for name in sorted(names, key=lambda n: n.encode("utf-8")):
        data = (folder / name).read_bytes()
        digest.update(name.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little") + data)
        total += len(data)
    return total, digest.hexdigest()


def _read_image(folder: Path, name: str, codec: str, gray: bool) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes as they are, and ``(H, W)`` after checking that it decodes."""
    try:
        data = (folder / name).read_bytes()
    except OSError as exc:
        raise ImportFailure(f"{name}: cannot read ({exc.strerror or exc})") from None
    if not data.startswith(_MAGIC[codec]):
        raise ImportFailure(f"{name}: not a {codec.upper()} file")
    try:
        image = (decode_gray if gray else decode_rgb)(data, codec, (0, 0))
    except Exception as exc:  # the codec's own error for a damaged file
        raise ImportFailure(f"{name}: unreadable image ({exc})") from None
    return data, image.shape[:2]


def import_video(job: VideoJob, cfg: ImportConfig, flow_tmpl: str, allocator: ShardAllocator,
                 listed_count: int | None = None) -> VideoResult:
    """Check one video folder and write its files as records into the allocator's shard.
    ``listed_count``: the annotation list's total_frames for it, which must be the number of
    frames or of flows."""
    start = time.perf_counter()
    folder = Path(job.path)
    rgb_codec, flow_codec = template_codec(cfg.rgb_tmpl), template_codec(flow_tmpl)
    try:
        frames, xs, ys = video_files(folder, template_regex(cfg.rgb_tmpl, 1), template_regex(flow_tmpl, 2))
        if len(frames) > MAX_RECORDS_PER_VIDEO:
            raise ImportFailure(f"{len(frames)} frames; a video holds at most {MAX_RECORDS_PER_VIDEO}")
        if len(xs) != len(frames) - cfg.stride:
            raise ImportFailure(f"count mismatch: {len(frames)} RGB frames but {len(xs)} flows "
                                f"(a stride-{cfg.stride} tree has frames - {cfg.stride} = {len(frames) - cfg.stride}); "
                                "nothing is padded or trimmed")
        if listed_count is not None and listed_count not in (len(frames), len(xs)):
            raise ImportFailure(f"the annotation list says {listed_count} frames, the folder has "
                                f"{len(frames)} RGB frames and {len(xs)} flows")
        source_size, source_sha = source_digest(folder, frames + xs + ys)
    except ImportFailure as exc:
        return VideoResult(job.id, job.path, reason=str(exc))
    except OSError as exc:
        return VideoResult(job.id, job.path, reason=f"cannot read: {exc.strerror or exc}")
    writer = open_next_shard(allocator)
    size = None
    try:
        writer.begin_video(job.id)
        for kind, names, codec in ((RGB, frames, rgb_codec), (FLOW_X, xs, flow_codec), (FLOW_Y, ys, flow_codec)):
            for index, name in enumerate(names):
                data, shape = _read_image(folder, name, codec, gray=kind != RGB)
                if size is None:
                    size = shape
                elif shape != size:
                    raise ImportFailure(f"{name} is {shape[1]}x{shape[0]}, the video's first frame "
                                        f"{size[1]}x{size[0]}")
                writer.put(kind, index, data)
        writer.end_video()
    except StoreWriteError:
        writer.abort_video()
        raise
    except ImportFailure as exc:
        writer.abort_video()
        return VideoResult(job.id, job.path, reason=str(exc))
    entry = VideoEntry(id=job.id, source=job.path, source_size=source_size, source_sha256=source_sha,
                       num_frames=len(frames), num_flows=len(xs), width=size[1], height=size[0],
                       **writer.entry_fields())
    return VideoResult(job.id, job.path, entry=entry, seconds=time.perf_counter() - start)


# -- the tree -----------------------------------------------------------------------------
def plan_tree(tree: str | os.PathLike, rgb_tmpl: str = RGB_TMPL, labels=None) -> list[VideoJob]:
    """One job per video folder: the folders named by an annotation list (``labels``, an
    :class:`~flowstore.data.labels.Annotations`), else every folder under ``tree`` holding a file
    that matches ``rgb_tmpl``. Ids are folder paths relative to ``tree``."""
    root = Path(tree)
    if not root.is_dir():
        raise InputError(f"{tree} is not a directory")
    if labels is not None:
        ids = [e.video.strip("/") for e in labels]
    else:
        rgb = template_regex(rgb_tmpl, 1)
        ids = sorted(Path(d).relative_to(root).as_posix() for d, _, files in os.walk(root)
                     if any(rgb.fullmatch(f) for f in files))
    jobs = []
    for vid in ids:  # a tree that is itself one video folder: its id is the folder's name
        name = root.resolve().name if vid == "." else vid
        check_video_id(name)
        jobs.append(VideoJob(id=name, path=str(root / vid)))
    if not jobs:
        raise InputError(f"no video folders with files like {rgb_tmpl!r} under {tree}")
    return jobs


def detect_flow_template(jobs: list[VideoJob]) -> str:
    """The first of :data:`FLOW_TMPLS` whose x files exist in one of the first video folders."""
    for job in jobs[:20]:
        try:
            files = os.listdir(job.path)
        except OSError:
            continue
        for tmpl in FLOW_TMPLS:
            if _numbered(files, template_regex(tmpl, 2), "x"):
                return tmpl
    return FLOW_TMPLS[0]


def write_labels(out: Path, jobs: list[VideoJob], labels) -> None:
    """``STORE/labels.txt``: the annotation list with store ids, ``id label`` (0-based labels)."""
    from ..io import atomic_write_text

    label = {e.video.strip("/"): e.label for e in labels}
    atomic_write_text(out / "labels.txt", "".join(f"{j.id} {label[j.id]}\n" for j in jobs if j.id in label))


def run_import(tree: str | os.PathLike, cfg: ImportConfig, *, labels=None, labels_path: str | None = None,
               retry_failed: bool = False) -> ExtractSummary:
    """Import the rawframes tree ``tree`` into the store ``cfg.out`` (created or resumed)."""
    jobs = plan_tree(tree, cfg.rgb_tmpl, labels)
    flow_tmpl = cfg.flow_tmpl or detect_flow_template(jobs)
    out = Path(cfg.out)
    check_writable(out)
    summary = ExtractSummary(planned=len(jobs))
    t0 = time.perf_counter()
    tree_path = os.path.abspath(tree)
    with StoreLock(out):
        try:
            store = StoreWriter(out, cfg.settings(tree_path, flow_tmpl, labels_path and os.path.abspath(labels_path)))
        except OSError as exc:
            raise StoreWriteError(describe_os_error(exc, f"the store {out}")) from exc
        if labels is not None:
            write_labels(out, jobs, labels)
        allocator = ShardAllocator(out, cfg.backend, cfg.shard_size)
        listed = {e.video.strip("/"): e.num_frames for e in labels} if labels is not None else {}
        try:
            for job in choose_todo(jobs, store, retry_failed, summary):
                result = import_video(job, cfg, flow_tmpl, allocator, listed.get(job.id))
                commit_result(store, result, summary)
        finally:
            store.checkpoint()
        wanted = {j.id for j in jobs}
        summary.failures = [f for f in store.failures() if f["id"] in wanted]
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = ["FLOW_TMPLS", "ImportConfig", "RGB_TMPL", "import_video", "plan_tree", "run_import", "source_digest",
           "template_regex", "video_files"]
