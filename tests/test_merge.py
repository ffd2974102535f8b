"""``flowstore merge``: stores extracted apart become one store with the same records."""
from __future__ import annotations

import json

from flowstore.store.format import CATALOG_DIR, CATALOG_FILE, FORMAT_VERSION
from flowstore.store.manifest import load_manifest

import pytest
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, plan_jobs, run_extract
from flowstore.store.merge import MergeError, merge_stores
from flowstore.store.verify import verify_store
from flowstore.store.writer import SettingsMismatchError
from helpers import all_records

CLIPS = ["demo.mp4", "part_0.mp4", "test.mp4"]


def _extract(out, paths, **kw):
    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=(64, 48)), workers=1, **kw)
    return run_extract(plan_jobs([str(p) for p in paths]), cfg, show_progress=False)


@pytest.fixture(scope="module")
def parts(tmp_path_factory, shared_videos):
    root = tmp_path_factory.mktemp("merge")
    bad = root / "in" / "broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"not a video")
    clips = [shared_videos / c for c in CLIPS]
    _extract(root / "a", clips[:1] + [bad])
    _extract(root / "b", clips[1:], shard_size=1)  # one shard per video
    _extract(root / "all", clips)
    return root


def test_merge_gives_the_same_records(parts, tmp_path):
    summary = merge_stores([parts / "a", parts / "b"], tmp_path / "m")
    assert summary.videos == 3 and summary.shards == 3 and summary.failures == 1
    assert verify_store(tmp_path / "m").ok
    assert all_records(tmp_path / "m") == all_records(parts / "all")
    manifest = load_manifest(tmp_path / "m")
    assert manifest["format_version"] == FORMAT_VERSION
    assert (tmp_path / "m" / CATALOG_DIR / CATALOG_FILE).exists()  # a 1.2 store with its catalog
    assert sorted(v["shard"] for v in manifest["videos"]) == ["shard-00000.lmdb", "shard-00001.lmdb", "shard-00002.lmdb"]
    failures = [json.loads(line) for line in (tmp_path / "m" / "failures.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failures] == ["broken"]


def test_merge_cli_copies(parts, tmp_path):
    result = CliRunner().invoke(cli, ["merge", str(parts / "b"), str(parts / "a"), "--out", str(tmp_path / "m"), "--copy"])
    assert result.exit_code == 0, result.output
    assert "0 hard-linked, 3 copied" in result.output
    assert all_records(tmp_path / "m") == all_records(parts / "all")


def test_id_collision_is_refused_before_writing(parts, tmp_path):
    with pytest.raises(MergeError, match=r"1 video id\(s\) are in more than one store \('demo' in "):
        merge_stores([parts / "a", parts / "all"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_different_settings_name_the_key(parts, tmp_path, shared_videos):
    _extract(tmp_path / "c", [shared_videos / "skateboarding.mp4"], stride=2)
    with pytest.raises(SettingsMismatchError, match=r"stride: .* has 1, .* has 2"):
        merge_stores([parts / "a", tmp_path / "c"], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(cli, ["merge", str(parts / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "stride" in result.output


def test_out_must_be_new(parts):
    with pytest.raises(MergeError):
        merge_stores([parts / "a", parts / "b"], parts / "a")
