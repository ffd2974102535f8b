"""Planning: inputs (files, directories, a ``--list``) -> :class:`VideoJob` s with their video ids,
checked before any work starts."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from ..decode import VIDEO_EXTENSIONS
from ..errors import InputError
from ..store.format import check_video_id


class PlanError(InputError):
    """Bad inputs found before any work starts (missing files, id collisions)."""


@dataclasses.dataclass(frozen=True)
class VideoJob:
    id: str
    path: str


@dataclasses.dataclass
class Skipped:
    """What the search of directory inputs passed over (reported, never silently)."""

    not_video: list = dataclasses.field(default_factory=list)     # files without a video extension
    broken_links: list = dataclasses.field(default_factory=list)  # symlinks to nothing
    loops: list = dataclasses.field(default_factory=list)         # symlinked folders already searched

    def lines(self) -> list[str]:
        out = []
        for what, items in (("non-video file(s)", self.not_video), ("broken symlink(s)", self.broken_links),
                            ("symlinked folder(s) searched already (a loop or a second link)", self.loops)):
            if items:
                shown = ", ".join(str(p) for p in items[:3]) + (" ..." if len(items) > 3 else "")
                out.append(f"skipped {len(items)} {what}: {shown}")
        return out


def _walk(folder: Path, skipped: Skipped) -> list[Path]:
    """Every file under ``folder``, following symlinked folders; a folder reached twice (a
    symlink loop, or two links to one folder) is searched once."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(d: Path) -> None:
        st = d.stat()
        if (st.st_dev, st.st_ino) in seen:
            skipped.loops.append(d)
            return
        seen.add((st.st_dev, st.st_ino))
        for entry in sorted(d.iterdir()):
            if entry.is_dir():
                visit(entry)
            elif entry.is_file():
                if entry.suffix.lower() in VIDEO_EXTENSIONS:
                    found.append(entry)
                else:
                    skipped.not_video.append(entry)
            elif entry.is_symlink():  # a link to nothing
                skipped.broken_links.append(entry)

    visit(folder)
    return found


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def video_id(path: Path, root: Path) -> str:
    """A video's id: its path relative to the input root, without extension, with ``/``."""
    return path.relative_to(root).with_suffix("").as_posix()


def plan_jobs(inputs: Sequence[str | os.PathLike], *, list_file: str | os.PathLike | None = None,
              root: str | os.PathLike | None = None, skipped: Skipped | None = None) -> list[VideoJob]:
    """Resolve inputs to jobs. Ids are paths relative to the input root without extension.

    A directory input is searched recursively and is its own root; a file's root is its
    folder; ``--list`` lines are paths relative to the list file's folder, which is their root
    (a listed path outside it has its own folder as root). ``root`` overrides all of these.
    Symlinked folders are followed (each folder once: loops are guarded); what the search
    passes over is added to ``skipped``. Missing inputs and id collisions raise
    :class:`PlanError` before any work.
    """
    skipped = skipped if skipped is not None else Skipped()
    candidates: list[tuple[Path, Path]] = []
    # absolute, but symlinks are kept: a symlinked dataset folder keeps its own ids
    base = _absolute(root) if root else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            candidates += [(f, base or p) for f in _walk(p, skipped)]
        elif p.exists():
            candidates.append((p, base or p.parent))
        else:
            raise PlanError(f"input not found: {p}")
    if list_file is not None:
        candidates += _listed(Path(list_file), base)
    jobs: dict[str, VideoJob] = {}
    for f, r in candidates:
        try:
            vid = video_id(_absolute(f), _absolute(r))
        except ValueError:
            raise PlanError(f"{f} is not under the root {r}; pass a --root that contains every input") from None
        try:
            check_video_id(vid)
        except InputError as exc:
            raise PlanError(str(exc)) from None
        if vid in jobs:
            if Path(jobs[vid].path).resolve() == f.resolve():
                continue  # the same file named twice
            raise PlanError(
                f"video id collision: {jobs[vid].path} and {f} both map to id {vid!r} "
                "(ids are paths relative to the input root without extension); rename one or extract them separately"
            )
        jobs[vid] = VideoJob(vid, str(f))
    if not jobs:
        raise PlanError("no videos found in the inputs (looked for " + ", ".join(VIDEO_EXTENSIONS) + ")")
    return [jobs[k] for k in sorted(jobs)]


def _listed(list_file: Path, base: Path | None) -> list[tuple[Path, Path]]:
    """``(file, root)`` of each line of a ``--list`` file."""
    if not list_file.exists():
        raise PlanError(f"--list file not found: {list_file}")
    out = []
    for n, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = Path(line) if Path(line).is_absolute() else list_file.parent / line
        if not f.exists():
            raise PlanError(f"{list_file}:{n}: listed video not found: {f}")
        inside = _absolute(f).is_relative_to(_absolute(list_file.parent))
        out.append((f, base or (list_file.parent if inside else f.parent)))
    return out
