"""``flowstore merge``: stores extracted apart (machines with no shared storage) combined into one.

The stores must have identical settings (:data:`~.format.SETTINGS_KEYS`: otherwise the error
names each differing key; the flow ``directions`` are one, so backward records are merged
with the forward ones) and no video id in common (refused before anything is written). Each
shard that a committed entry names is hard-linked (or copied, across file systems or with
``copy=True``) into ``out`` under a new shard number, and the entries are committed there with
their ``shard`` rewritten, through the normal commit protocol and under ``out``'s writer lock.
Failures are united (leaving out videos committed in any store). The result is verified.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import AlreadyExistsError, DamagedStoreError, InputError, StoreWriteError
from ..io import fsync_path
from .format import MANIFEST, SETTINGS_KEYS, SHARD_DIR, VideoEntry, shard_name, shard_path, store_setting
from .manifest import load_failures, load_manifest
from .verify import verify_store
from .writer import SettingsMismatchError, StoreLock, StoreWriter, describe_os_error, settings_diff


class MergeError(InputError):
    """Stores that cannot be merged (an id in two of them, the same store twice)."""


@dataclasses.dataclass
class MergeSummary:
    out: str
    videos: int = 0
    shards: int = 0
    linked: int = 0     # shards hard-linked; the rest were copied
    failures: int = 0

    def lines(self) -> list[str]:
        return [f"merge: {self.videos} video(s) in {self.shards} shard(s) "
                f"({self.linked} hard-linked, {self.shards - self.linked} copied), "
                f"{self.failures} failure(s) -> {self.out}: verified"]


def _check_mergeable(stores: Sequence[Path], manifests: list[dict]) -> None:
    first = manifests[0]
    for store, manifest in zip(stores[1:], manifests[1:]):
        diff = settings_diff(first, manifest, f"{stores[0]} has", f"{store} has")
        if diff:
            raise SettingsMismatchError("stores with different settings cannot be merged:\n  " + "\n  ".join(diff))
    owners = collections.defaultdict(list)
    for store, manifest in zip(stores, manifests):
        for entry in manifest["videos"]:
            owners[entry["id"]].append(str(store))
    clashes = {vid: where for vid, where in owners.items() if len(where) > 1}
    if clashes:
        shown = "; ".join(f"{vid!r} in {' and '.join(where)}" for vid, where in sorted(clashes.items())[:5])
        raise MergeError(f"{len(clashes)} video id(s) are in more than one store ({shown}"
                         f"{' ...' if len(clashes) > 5 else ''}); nothing was written")


def _place(src: Path, dst: Path, copy: bool) -> bool:
    """Hard-link ``src`` at ``dst`` (True), or copy it where linking is not possible (False)."""
    if not copy:
        try:
            os.link(src, dst)
            return True
        except OSError:
            pass
    shutil.copyfile(src, dst)
    fsync_path(dst)
    return False


def merge_stores(stores: Sequence[str | os.PathLike], out: str | os.PathLike, *, copy: bool = False,
                 log: Callable[[str], None] = lambda msg: None) -> MergeSummary:
    """Combine ``stores`` into the new store ``out`` (see the module docstring)."""
    stores = [Path(s) for s in stores]
    out = Path(out)
    if len(stores) < 1:
        raise InputError("give at least one store to merge")
    resolved = [s.resolve() for s in stores]
    if len(set(resolved)) < len(resolved) or out.resolve() in resolved:
        raise MergeError("each store may be named once, and --out must be a new store")
    if (out / MANIFEST).exists():
        raise AlreadyExistsError(f"{out} is a store already; merge into a new --out")
    manifests = [load_manifest(s) for s in stores]
    _check_mergeable(stores, manifests)
    backend = manifests[0]["backend"]
    summary = MergeSummary(out=str(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
        with StoreLock(out):
            writer = StoreWriter(out, {k: store_setting(manifests[0], k) for k in SETTINGS_KEYS})
            number = 0
            committed = set()
            for store, manifest in zip(stores, manifests):
                renamed: dict[str, str] = {}
                for shard in sorted({entry["shard"] for entry in manifest["videos"]}):
                    renamed[shard] = shard_name(backend, number)
                    number += 1
                    summary.linked += _place(shard_path(store, shard), shard_path(out, renamed[shard]), copy)
                    summary.shards += 1
                fsync_path(out / SHARD_DIR)  # the shards are there before any entry names them
                for entry in manifest["videos"]:
                    fields = {k: v for k, v in entry.items() if k != "committed_at"}
                    writer.commit(VideoEntry(**{**fields, "shard": renamed[entry["shard"]]}))
                    committed.add(entry["id"])
                    summary.videos += 1
                log(f"merge: {store}: {len(manifest['videos'])} video(s), {len(renamed)} shard(s)")
            failures = {}
            for store in stores:
                failures.update({f["id"]: f for f in load_failures(store)})
            for vid, f in sorted(failures.items()):
                if vid not in committed:
                    writer.record_failure(vid, f["source"], f["reason"])
                    summary.failures += 1
            writer.checkpoint()
    except OSError as exc:
        raise StoreWriteError(describe_os_error(exc, f"the store {out}")) from exc
    report = verify_store(out)
    if not report.ok:
        raise DamagedStoreError(f"the merged store {out} does not verify: " + "; ".join(report.problems[:5]))
    return summary
