"""Format 1.2 (issue 16, "the store at Kinetics scale"): the catalog indexes the append-only
commit log so that a reader opens a store without parsing every entry; it always agrees with the
1.1 rule (manifest videos + log, later wins), survives a crash at every step, is rebuilt when
stale, and 1.0/1.1 stores are migrated by the next writer. Readers keep a bounded LRU of shard
handles, so a loader trains under a low file-descriptor limit. Synthetic stores of tiny raw
videos written through the real shard writer and StoreWriter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest

from flowstore.quantize import QuantSpec
from flowstore.store import catalog as catalog_mod
from flowstore.store.format import (
    CATALOG_DIR, CATALOG_FILE, COMMIT_LOG, FORMAT_VERSION, MANIFEST, FormatError, shard_name, shard_path,
)
from flowstore.store.lmdb_backend import LMDBShardWriter
from flowstore.store.manifest import load_manifest
from flowstore.store.reader import StoreReader, VideoIds
from flowstore.store.records import records_crc32
from flowstore.store.verify import catalog_problems, verify_store
from flowstore.store.writer import StoreWriter
from helpers import REPO
from test_standalone_reader import spec_open, spec_open_catalog

W, H, FRAMES = 8, 6, 3
SETTINGS = {"backend": "lmdb", "frames": {"codec": "raw", "quality": None, "color": "RGB"}, "resize": None,
            "decoder": "opencv", "stride": 1,
            "flow": {"method": "synthetic", "codec": "raw", "quality": None, "components": ["flow_x", "flow_y"]},
            "quantization": QuantSpec("bound", 20.0).to_manifest()}


def write_video(root, vid: str, shard: str, value: int) -> dict:
    """A tiny video (raw frames and flows filled with ``value``) in ``shard``; its entry."""
    writer = LMDBShardWriter(str(shard_path(root, shard)))
    writer.begin_video(vid)
    crcs = {"rgb": [], "flow_x": [], "flow_y": []}
    for i in range(FRAMES):
        payload = np.full((H, W, 3), (value + i) % 256, np.uint8).tobytes()
        writer.put("rgb", i, payload)
        crcs["rgb"].append(zlib.crc32(payload))
    for i in range(FRAMES - 1):
        for kind in ("flow_x", "flow_y"):
            payload = np.full((H, W), (value + i) % 256, np.uint8).tobytes()
            writer.put(kind, i, payload)
            crcs[kind].append(zlib.crc32(payload))
    writer.end_video()
    return {"id": vid, "source": f"/videos/{vid}.mp4", "source_size": 1, "source_sha256": "0" * 64,
            "num_frames": FRAMES, "num_flows": FRAMES - 1, "width": W, "height": H, "shard": shard,
            "bytes": 1, "shard_size": os.path.getsize(shard_path(root, shard)), "records_crc32": records_crc32(crcs)}


def spec_union(root) -> dict[str, dict]:
    """The 1.1 rule, as a reader of the 1.1 spec applies it: manifest videos, then every complete
    log line (tests/test_standalone_reader.py's spec-only reader)."""
    return spec_open(root)[1]


def reader_view(root) -> dict[str, dict]:
    with StoreReader(root) as r:
        assert len(r) == len(r.videos)
        return {v: r.entry(v) for v in r.videos}


def catalog_doc(root) -> dict:
    return json.loads((root / CATALOG_DIR / CATALOG_FILE).read_text())


@pytest.fixture
def base(tmp_path):
    """A store with 12 videos in 3 shards, 4 per shard."""
    root = tmp_path / "store"
    writer = StoreWriter(root, SETTINGS)
    for i in range(12):
        writer.commit(write_video(root, f"v{i:03d}", shard_name("lmdb", i // 4), i))
    writer.checkpoint()
    writer.close()
    return root


def test_the_catalog_is_the_log_union_after_many_checkpoints_compactions_and_recommits(tmp_path, monkeypatch):
    monkeypatch.setattr(StoreWriter, "CHECKPOINT_EVERY", 3)
    root = tmp_path / "store"
    writer = StoreWriter(root, SETTINGS)
    entry = write_video(root, "x", shard_name("lmdb", 0), 1)
    rng = np.random.default_rng(0)
    for n in range(130):  # ~43 checkpoints: segments of three levels merged several times
        vid = f"v{int(rng.integers(0, 60)):03d}"  # many ids committed again: the newest must win
        writer.commit({**entry, "id": vid, "bytes": n})
    levels = {s["level"] for s in catalog_doc(root)["segments"]}
    assert max(levels) >= 2 and len(catalog_doc(root)["segments"]) <= 3 * (max(levels) + 1)
    want = spec_union(root)
    assert reader_view(root) == want and len(writer) == len(want)
    assert all(writer.entry(v) == e for v, e in want.items())
    assert json.loads((root / MANIFEST).read_text())["videos"] == []  # 1.2: never rewritten with videos
    with StoreReader(root) as r:
        assert isinstance(r.videos, VideoIds) and r.videos == sorted(want) and list(r.videos) == sorted(want)
        assert "v999" not in r.videos and sorted(want)[5] in r and r.videos[3] == sorted(want)[3]
    writer.checkpoint()
    assert reader_view(root) == want
    assert catalog_doc(root)["videos"] == len(want)
    listed = {s["name"] for s in catalog_doc(root)["segments"]}
    assert {p.name for p in (root / CATALOG_DIR).iterdir()} == listed | {CATALOG_FILE}  # merged ones deleted
    assert catalog_problems(root, load_manifest(root)) == []  # (the ids share one video's records)
    writer.close()  # (LMDB refuses a second open of a segment in one process)
    assert len(catalog_doc(root)["segments"]) > 1
    assert spec_open_catalog(root)[1] == want  # section 13 read without flowstore: several segments


def test_open_reads_only_the_log_tail_past_the_catalog(base, monkeypatch):
    """The covered part of the log is never parsed at open: garbling it (same size) goes unseen,
    while the full (1.1) read would drop the line."""
    calls = []
    real = catalog_mod.parse_json_lines
    monkeypatch.setattr(catalog_mod, "parse_json_lines", lambda raw, first=1: calls.append(len(raw)) or real(raw, first))
    with StoreReader(base) as r:
        assert len(r.videos) == 12 and calls == [0]


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["segment", "compaction", "publish", "delete"])
def test_a_crash_at_each_checkpoint_step_loses_nothing_and_the_next_writer_repairs(tmp_path, monkeypatch, step):
    monkeypatch.setattr(StoreWriter, "CHECKPOINT_EVERY", 2)
    root = tmp_path / "store"
    writer = StoreWriter(root, SETTINGS)
    entry = write_video(root, "x", shard_name("lmdb", 0), 1)
    for n in range(7):  # three checkpoints: three level-0 segments, the fourth will be merged
        writer.commit({**entry, "id": f"v{n}"})
    target = {"segment": "write_segment", "compaction": "_compact", "publish": "_publish",
              "delete": "_delete_unlisted_segments"}[step]
    if target == "write_segment":
        real = catalog_mod.write_segment

        def crash(path, items):  # the temporary file written, never renamed
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            real(tmp.with_name(path.name + ".x"), items)
            os.replace(tmp.with_name(path.name + ".x"), tmp)
            raise Crash
        monkeypatch.setattr("flowstore.store.writer.write_segment", crash)
    else:
        monkeypatch.setattr(StoreWriter, target, lambda self: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        writer.commit({**entry, "id": "v7"})
    monkeypatch.undo()
    want = spec_union(root)
    assert sorted(want) == [f"v{n}" for n in range(8)]
    assert reader_view(root) == want  # the old catalog.json + a longer log tail
    again = StoreWriter(root, SETTINGS)  # repairs: temporary files and unlisted segments removed
    again.checkpoint()
    assert reader_view(root) == want and len(again) == 8
    names = {p.name for p in (root / CATALOG_DIR).iterdir()}
    assert names == {s["name"] for s in catalog_doc(root)["segments"]} | {CATALOG_FILE}
    assert catalog_problems(root, load_manifest(root)) == []


def as_1_1_store(root, version="1.1") -> dict:
    """Rewrite ``root`` as a 1.1 writer leaves it: every entry in manifest.json, the log empty,
    no catalog."""
    manifest = load_manifest(root)
    manifest["format_version"] = version
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    (root / COMMIT_LOG).write_text("")
    shutil.rmtree(root / CATALOG_DIR)
    return {e["id"]: e for e in manifest["videos"]}


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_an_older_store_reads_and_is_migrated_by_the_next_writer(base, version):
    old = as_1_1_store(base, version)
    assert reader_view(base) == old  # no catalog: the full read
    writer = StoreWriter(base, SETTINGS)  # migration: marks 1.2, builds the catalog
    assert json.loads((base / MANIFEST).read_text())["format_version"] == FORMAT_VERSION
    assert len(json.loads((base / MANIFEST).read_text())["videos"]) == 12  # frozen, for 1.1 readers
    assert catalog_doc(base)["videos"] == 12
    writer.commit(write_video(base, "new", shard_name("lmdb", 9), 5))
    writer.commit({**{k: v for k, v in old["v001"].items() if k != "committed_at"}, "bytes": 77})  # re-extracted under the same id
    writer.checkpoint()
    writer.close()
    want = spec_union(base)  # what a reader of the 1.1 spec sees
    assert len(want) == 13 and want["v001"]["bytes"] == 77
    assert reader_view(base) == want == spec_open_catalog(base)[1]
    assert verify_store(base).ok


def test_a_crash_during_migration_leaves_a_readable_store(base, monkeypatch):
    old = as_1_1_store(base)
    monkeypatch.setattr(StoreWriter, "_publish", lambda self: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        StoreWriter(base, SETTINGS)  # manifest marked 1.2, a segment written, no catalog.json
    monkeypatch.undo()
    assert reader_view(base) == old and spec_union(base) == old
    StoreWriter(base, SETTINGS).checkpoint()
    assert reader_view(base) == old and catalog_doc(base)["videos"] == 12


@pytest.mark.parametrize("how", ["log replaced (a 1.1 writer's checkpoint)", "log cut", "manifest rewritten"])
def test_a_stale_catalog_is_detected_and_the_full_read_is_correct(base, how):
    entries = load_manifest(base)["videos"]
    if how.startswith("log replaced"):  # what a 1.1 flowstore does at a checkpoint of a 1.2 store
        manifest = json.loads((base / MANIFEST).read_text())
        manifest["videos"] = entries[:5]
        (base / MANIFEST).write_text(json.dumps(manifest))
        tmp = base / "log.new"
        tmp.write_text("")
        os.replace(tmp, base / COMMIT_LOG)
        want = {e["id"]: e for e in entries[:5]}
    elif how == "log cut":
        lines = (base / COMMIT_LOG).read_bytes().split(b"\n")
        (base / COMMIT_LOG).write_bytes(b"\n".join(lines[:4]) + b"\n")
        want = {e["id"]: e for e in entries[:4]}
    else:
        manifest = json.loads((base / MANIFEST).read_text())
        (base / MANIFEST).write_text(json.dumps({**manifest, "videos": [{**entries[0], "bytes": 5}]}))
        (base / COMMIT_LOG).write_text("")
        want = {entries[0]["id"]: {**entries[0], "bytes": 5}}
    assert catalog_mod.open_catalog(base) is None
    assert reader_view(base) == want == spec_union(base)
    StoreWriter(base, SETTINGS).close()  # the next writer rebuilds the catalog
    assert catalog_mod.open_catalog(base) is not None and reader_view(base) == want


def test_a_catalog_deleted_or_damaged_falls_back(base):
    want = spec_union(base)
    (base / CATALOG_DIR / CATALOG_FILE).write_text("{not json")
    assert reader_view(base) == want
    shutil.rmtree(base / CATALOG_DIR)
    assert reader_view(base) == want


def test_a_hostile_catalog_entry_is_refused_naming_the_segment(base):
    doc = catalog_doc(base)
    (seg,) = doc["segments"]
    import lmdb
    env = lmdb.open(str(base / CATALOG_DIR / seg["name"]), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        bad = json.loads(txn.get(b"v003"))
        txn.put(b"v003", json.dumps({**bad, "shard": "../../etc/passwd"}).encode())
    env.close()
    with StoreReader(base) as r:
        with pytest.raises(FormatError, match=rf"{seg['name']}: 'v003'.*key 'shard'"):
            r.entry("v003")
    report = verify_store(base)
    assert not report.ok and any("catalog" in p for p in report.problems)


def test_segments_vanishing_under_a_reader_make_it_read_catalog_json_again(base, monkeypatch):
    real_open = catalog_mod.Catalog.open
    raced = []

    def racing_open(self):
        if not raced:  # a writer replaces every segment between the reader's catalog.json and its open
            raced.append(True)
            shutil.rmtree(base / CATALOG_DIR)
            StoreWriter(base, SETTINGS).close()  # a new segment under another name, a new catalog.json
        return real_open(self)

    monkeypatch.setattr(catalog_mod.Catalog, "open", racing_open)
    want = spec_union(base)
    with StoreReader(base) as r:
        assert raced and r._catalog is not None and {v: r.entry(v) for v in r.videos} == want


def test_the_lru_keeps_at_most_max_open_shards_and_never_closes_one_in_use(tmp_path):
    root = tmp_path / "store"
    writer = StoreWriter(root, SETTINGS)
    for i in range(10):
        writer.commit(write_video(root, f"v{i}", shard_name("lmdb", i), i))
    writer.checkpoint()
    reader = StoreReader(root, max_open_shards=3)
    for i in range(10):
        assert reader.frame(f"v{i}", 1)[0, 0, 0] == (i + 1) % 256
        assert len(reader._handles) <= 3
    errors = []

    def hammer(k):
        try:
            for n in range(300):
                v = f"v{(n * 7 + k) % 10}"
                assert reader.flow_q(v, 1)[0, 0, 0] == (int(v[1:]) + 1) % 256
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    with reader._using("v0") as held:  # in use: evictions by the threads must not close it
        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert held.get("v0", "rgb", 0)  # still open
    assert not errors, errors[:1]
    assert len(reader._handles) <= 3
    reader.close()


LOW_FD_LOADER = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
import torch
from torch.utils.data import DataLoader
from flowstore.data import StoreClipDataset
ds = StoreClipDataset(sys.argv[1], modality="flow", sampling="frame", flow_values="uint8", train=False)
seen = set()
for batch in DataLoader(ds, batch_size=25, num_workers=1):
    seen.update(batch["video"])
print(len(seen), len(ds.store.videos))
"""


def test_a_loader_reads_a_store_of_300_shards_under_ulimit_256(tmp_path):
    root = tmp_path / "store"
    writer = StoreWriter(root, SETTINGS)
    for i in range(300):  # one video per shard: more shards than file descriptors
        writer.commit(write_video(root, f"v{i:03d}", shard_name("lmdb", i), i))
    writer.checkpoint()
    writer.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", LOW_FD_LOADER, str(root)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["300", "300"]


def test_a_pickled_reader_reopens_the_current_catalog_when_its_segments_were_compacted_away(base):
    import pickle

    with StoreReader(base) as r:
        want = {v: r.entry(v) for v in r.videos}
        sent = pickle.dumps(r)  # as to a spawned loader worker
    shutil.rmtree(base / CATALOG_DIR)
    StoreWriter(base, SETTINGS).close()  # every segment replaced under new names
    worker = pickle.loads(sent)
    assert {v: worker.entry(v) for v in worker.videos} == want
    assert worker.frame("v005", 0)[0, 0, 0] == 5
    worker.close()


def test_a_reader_dropped_without_close_releases_its_maps_at_once(base):
    """No reference cycle (reader <-> videos / manifest): refcounting frees it, not the cyclic GC,
    so its shard and segment maps (and their page-cache pages) go with the last reference."""
    import gc

    from flowstore.store.lmdb_backend import _SHARED_ENVS

    gc.disable()
    try:
        r = StoreReader(base)
        assert r.frame("v001", 0)[0, 0, 0] == 1 and r.manifest["videos"] and len(r.videos) == 12
        del r
        assert not [k for k in _SHARED_ENVS if k.startswith(str(base.resolve()))]
    finally:
        gc.enable()


def test_without_lmdb_a_writer_writes_no_catalog_and_every_reader_still_sees_every_video(base, monkeypatch):
    """Where the lmdb package is missing (flowstore run from a source tree, e.g. the GPU check on a
    bare machine) the catalog is skipped, never needed: the writer keeps its entries in memory and
    appends to the log past what an existing catalog covers (that catalog stays right: the lines
    are its tail); a store begun there has no catalog and reads the 1.1 way; a later writer with
    lmdb indexes it."""
    monkeypatch.setattr(StoreWriter, "CHECKPOINT_EVERY", 2)
    covered = catalog_doc(base)["log"]["offset"]
    fresh = base.parent / "fresh"
    with monkeypatch.context() as m:
        m.setattr(catalog_mod, "AVAILABLE", False)
        m.setattr("flowstore.store.writer.CATALOG_AVAILABLE", False)
        for root, first in ((base, 12), (fresh, 0)):
            writer = StoreWriter(root, SETTINGS)
            assert len(writer) == first and ("v000" in writer) == (first > 0)
            for i in range(first, first + 5):  # past CHECKPOINT_EVERY: nothing indexed
                writer.commit(write_video(root, f"v{i:03d}", shard_name("lmdb", 10 + i), i))
            assert len(writer) == first + 5 and writer.entry(f"v{first + 4:03d}")["id"] == f"v{first + 4:03d}"
            writer.checkpoint()
            writer.close()
            with StoreReader(root) as r:  # no catalog is read here
                assert r._catalog is None and len(r) == first + 5
    assert catalog_doc(base)["log"]["offset"] == covered  # untouched: the new lines are its tail
    assert not (fresh / CATALOG_DIR / CATALOG_FILE).exists()
    for root in (base, fresh):
        want = spec_union(root)
        assert reader_view(root) == want and len(want) in (17, 5)
    with StoreReader(base) as r:
        assert r._catalog is not None  # the old catalog, plus the tail
    StoreWriter(fresh, SETTINGS).close()  # with lmdb: the store gets its catalog
    assert catalog_doc(fresh)["videos"] == 5 and reader_view(fresh) == spec_union(fresh)
