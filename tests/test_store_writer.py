"""StoreWriter: the commit protocol (commit log, checkpoint into the catalog), reopening,
settings checks and failures, read back through the store's own loader."""
import json

import pytest

from flowstore.store.format import CATALOG_DIR, CATALOG_FILE, COMMIT_LOG, FAILURES, MANIFEST, VIDEO_ENTRY_KEYS, VideoEntry
from flowstore.store.manifest import load_manifest
from flowstore.store.writer import SettingsMismatchError, StoreWriter

SETTINGS = {"backend": "lmdb", "frames": {"codec": "jpeg"}, "resize": None, "decoder": "opencv", "stride": 1,
            "flow": {"method": "tvl1", "codec": "jpeg"}, "quantization": {"scheme": "bound", "bound": 20.0}}


def entry(vid: str, frames: int = 5) -> VideoEntry:
    return VideoEntry(id=vid, source=f"/videos/{vid}.mp4", source_size=10, source_sha256="0" * 64,
                      num_frames=frames, num_flows=frames - 1, width=8, height=6, shard="shard-00000.lmdb",
                      bytes=100)


def log_lines(root):
    return [json.loads(line) for line in (root / COMMIT_LOG).read_text().splitlines()]


def test_a_commit_is_one_log_line_and_visible_at_once(tmp_path):
    store = StoreWriter(tmp_path, SETTINGS)
    store.commit(entry("a"))
    (line,) = log_lines(tmp_path)
    assert set(line) == set(VIDEO_ENTRY_KEYS) and line["id"] == "a"
    assert json.loads((tmp_path / MANIFEST).read_text())["videos"] == []  # not folded in yet
    assert [v["id"] for v in load_manifest(tmp_path)["videos"]] == ["a"]


def test_checkpoint_indexes_the_log_into_the_catalog_and_leaves_log_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(StoreWriter, "CHECKPOINT_EVERY", 3)
    store = StoreWriter(tmp_path, SETTINGS)
    for vid in "abcd":
        store.commit(entry(vid))
    # format 1.2: the log is append-only and the manifest keeps no videos; the third commit
    # checkpointed a, b, c into the catalog, d is past what catalog.json covers
    assert json.loads((tmp_path / MANIFEST).read_text())["videos"] == []
    assert [line["id"] for line in log_lines(tmp_path)] == ["a", "b", "c", "d"]
    doc = json.loads((tmp_path / CATALOG_DIR / CATALOG_FILE).read_text())
    assert doc["videos"] == 3 and doc["log"]["lines"] == 3
    store.checkpoint()
    doc = json.loads((tmp_path / CATALOG_DIR / CATALOG_FILE).read_text())
    assert doc["videos"] == 4 and doc["log"]["offset"] == (tmp_path / COMMIT_LOG).stat().st_size
    assert [v["id"] for v in load_manifest(tmp_path)["videos"]] == ["a", "b", "c", "d"]


def test_a_crash_between_log_and_manifest_counts_each_video_once(tmp_path):
    store = StoreWriter(tmp_path, SETTINGS)
    store.commit(entry("a", frames=5))
    store.checkpoint()
    # as if the writer died after rewriting the manifest but before emptying the log, and a
    # later commit of "a" (a rerun) went to the log: the log's entry wins
    store.commit(entry("a", frames=9))
    videos = load_manifest(tmp_path)["videos"]
    assert [(v["id"], v["num_frames"]) for v in videos] == [("a", 9)]
    reopened = StoreWriter(tmp_path, SETTINGS)
    assert "a" in reopened and len(reopened) == 1 and reopened.entry("a")["num_frames"] == 9


def test_reopening_with_other_settings_names_the_key(tmp_path):
    StoreWriter(tmp_path, SETTINGS)
    other = {**SETTINGS, "stride": 2}
    with pytest.raises(SettingsMismatchError, match=r"stride: store has 1, this command asks for 2"):
        StoreWriter(tmp_path, other)


def test_failures_keep_the_latest_reason_and_drop_videos_committed_since(tmp_path):
    store = StoreWriter(tmp_path, SETTINGS)
    store.record_failure("a", "/a.mp4", "first")
    store.record_failure("a", "/a.mp4", "second")
    store.record_failure("b", "/b.mp4", "broken")
    assert [(f["id"], f["reason"]) for f in store.failures()] == [("a", "second"), ("b", "broken")]
    store.commit(entry("b"))
    store.checkpoint()
    assert [f["id"] for f in store.failures()] == ["a"]
    assert [json.loads(line)["reason"] for line in (tmp_path / FAILURES).read_text().splitlines()] == ["second"]


def test_temporary_files_of_an_interrupted_run_are_swept(tmp_path):
    StoreWriter(tmp_path, SETTINGS)
    stale = tmp_path / ".manifest.json.tmp-12345"
    stale.write_text("{half")
    StoreWriter(tmp_path, SETTINGS)
    assert not stale.exists()
