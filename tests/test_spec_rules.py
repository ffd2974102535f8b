"""The points where docs/FORMAT.md and the code once parted ways, each settled in the spec and
checked here against real stores: the spec's own rule (or code block) on one side, flowstore on
the other (in the style of tests/test_standalone_reader.py)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import h5py
import lmdb
import pytest

import flowstore
from flowstore.store.format import FormatError
from helpers import small_store
from test_standalone_reader import DOC, SpecFormatError, doc_examples, spec_open, spec_read_video

NESTED = ["a", "a/b", "a/b/c"]
ODD = ["x%y é+~.z", "cls a/clip é", "日本/動画-1_~"]


def spec_block(name: str) -> str:
    return re.search(rf"<!-- spec:{name} -->\n\s*```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)


def spec_group_name():
    code = "\n".join(line[2:] if line.startswith("  ") else line for line in spec_block("group_name").splitlines())
    assert "urllib" not in code and "quote" not in code  # the rule itself, not Python's function
    ns: dict = {}
    exec(code, ns)
    return ns["group_name"]


@pytest.fixture(scope="module")
def hdf5_store(tmp_path_factory, shared_videos) -> Path:
    return small_store(tmp_path_factory.mktemp("spec") / "s", {i: shared_videos / "part_0.mp4" for i in NESTED + ODD},
                       size=(32, 24), backend="hdf5")


@pytest.fixture(scope="module")
def lmdb_store(tmp_path_factory, shared_videos) -> Path:
    return small_store(tmp_path_factory.mktemp("spec") / "s", {"part_0": shared_videos / "part_0.mp4"}, size=(32, 24))


def test_hdf5_video_groups_are_siblings_never_nested(hdf5_store):
    """Section 6: `a/b` beside `a` is the group /videos/a%2Fb next to /videos/a; groups hold datasets only."""
    m, videos = spec_open(hdf5_store)
    (shard,) = {e["shard"] for e in videos.values()}
    with h5py.File(hdf5_store / "shards" / shard, "r") as f:
        assert {"a", "a%2Fb", "a%2Fb%2Fc"} <= set(f["videos"])
        for name, group in f["videos"].items():
            assert isinstance(group, h5py.Group)
            assert all(isinstance(item, h5py.Dataset) for item in group.values()), name
    for vid in NESTED:
        assert spec_read_video(hdf5_store, m, videos[vid])["bytes"] == videos[vid]["bytes"]


def test_hdf5_group_name_rule_without_urllib(hdf5_store):
    """Section 6's byte rule (safe bytes, UTF-8, %XX upper-case) names exactly the groups flowstore
    writes, and equals urllib.parse.quote(id, safe="") on awkward ids."""
    group_name = spec_group_name()
    _, videos = spec_open(hdf5_store)
    (shard,) = {e["shard"] for e in videos.values()}
    with h5py.File(hdf5_store / "shards" / shard, "r") as f:
        assert set(f["videos"]) == {group_name(v) for v in videos}
    assert group_name("cls a/clip é") == "cls%20a%2Fclip%20%C3%A9"
    for vid in ODD + NESTED + ["~._-AZaz09", "100%", "tab\there", "emoji 🎬", "a+b=c&d?"]:
        assert group_name(vid) == quote(vid, safe="")
        assert re.fullmatch(r"([A-Za-z0-9_.~-]|%[0-9A-F]{2})+", group_name(vid))


def test_commit_lines_are_utf8_only(lmdb_store, tmp_path):
    """Section 9: a commit line in UTF-16, or with a BOM, is skipped (json.loads(bytes) would take
    both); a UTF-8 line is read. Spec reader, section 12's snippet and flowstore agree."""
    root = shutil.copytree(lmdb_store, tmp_path / "s")
    entry = spec_open(root)[1]["part_0"]
    line = lambda vid: json.dumps({**entry, "id": vid}, ensure_ascii=False) + "\n"  # noqa: E731
    with open(root / "commits.jsonl", "ab") as f:
        f.write(line("utf16").encode("utf-16"))
        f.write(line("utf32").encode("utf-32"))
        f.write(b"\xef\xbb\xbf" + line("bom").encode("utf-8"))
        f.write(line("ok é").encode("utf-8"))
    assert json.loads(line("utf16").encode("utf-16"))["id"] == "utf16"  # what the old text allowed
    want = ["ok é", "part_0"]
    assert sorted(spec_open(root)[1]) == want
    ns: dict = {}
    exec(doc_examples()["videos"].replace('root = "STORE"', f"root = {str(root)!r}"), ns)
    assert sorted(ns["videos"]) == want
    assert flowstore.open_store(root).videos == want


@pytest.mark.parametrize("version,ok", [
    ("1.0", True), ("1.7", True), ("0.9", True), ("01.2", True),
    ("+1.0", False), (" 1.0", False), ("1.0 ", False), ("1.0.0", False), ("1", False), ("1_0.0", False),
    ("١.٠", False), ("1.٠", False), ("-0.5", False), ("2.0", False), ("", False),
])
def test_version_string_is_two_ascii_integers(lmdb_store, tmp_path, version, ok):
    """Section 11: MAJOR.MINOR is `[0-9]+\\.[0-9]+` and nothing else (Python's int() takes signs,
    spaces, underscores and other digits). Spec reader, section 12's snippet and flowstore agree."""
    root = shutil.copytree(lmdb_store, tmp_path / "s")
    m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    (root / "manifest.json").write_text(json.dumps({**m, "format_version": version}), encoding="utf-8")
    snippet = doc_examples()["videos"].replace('root = "STORE"', f"root = {str(root)!r}")
    if ok:
        spec_open(root)
        exec(snippet, {})
        assert flowstore.open_store(root).videos == ["part_0"]
    else:
        with pytest.raises(SpecFormatError):
            spec_open(root)
        with pytest.raises(AssertionError):
            exec(snippet, {})
        with pytest.raises(FormatError):
            flowstore.open_store(root)


def test_lmdb_index_has_exactly_six_digits(lmdb_store, tmp_path):
    """Section 5 + appendix: keys carry exactly 6 index digits, and an entry claiming more than
    1,000,000 records (which would need a seventh) is refused."""
    m, videos = spec_open(lmdb_store)
    e = videos["part_0"]
    env = lmdb.open(str(lmdb_store / "shards" / e["shard"]), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:  # a test may scan keys to check the layout; readers must not (section 9)
        keys = [k.decode("utf-8") for k, _ in txn.cursor()]
    env.close()
    assert len(keys) == e["num_frames"] + 2 * e["num_flows"]
    assert all(re.fullmatch(r"part_0/(rgb|flow_x|flow_y)/[0-9]{6}", k) for k in keys)
    root = shutil.copytree(lmdb_store, tmp_path / "s")
    for n in (1_000_000, 1_000_001):
        big = {**e, "num_frames": n, "num_flows": n - 1}
        with open(root / "commits.jsonl", "a", encoding="utf-8") as f:  # a later line wins (section 9)
            f.write(json.dumps(big) + "\n")
        if n == 1_000_000:
            assert flowstore.open_store(root).num_frames("part_0") == n
        else:
            with pytest.raises(FormatError, match="num_frames"):
                flowstore.open_store(root)
