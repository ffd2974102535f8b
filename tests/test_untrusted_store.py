"""A store from elsewhere is untrusted input: every name and number its JSON files give is
checked against the spec before use, and a store that breaks it is refused naming the file, the
line (or item) and the key. Stores here are real extractions of a shared clip, then damaged."""
import json
import shutil

import pytest

import flowstore
from flowstore.extract import ExtractConfig, plan_jobs, run_extract
from flowstore.decode import FrameResize
from flowstore.store.format import COMMIT_LOG, FAILURES, MANIFEST, FormatError
from flowstore.store.manifest import load_failures, load_manifest


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, shared_videos):
    out = tmp_path_factory.mktemp("untrusted") / "store"
    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=(64, 48)), workers=1)
    summary = run_extract(plan_jobs([shared_videos / "part_0.mp4"]), cfg, show_progress=False, log=lambda m: None)
    assert summary.ok == 1
    return out


@pytest.fixture
def store(pristine, tmp_path):
    """A copy in the layout a 1.1 writer leaves (every entry in manifest.json, the log empty):
    its manifest entries are what these tests damage; the 1.2 catalog is then stale and unused."""
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    (copy / MANIFEST).write_text(json.dumps(load_manifest(copy)))
    (copy / COMMIT_LOG).write_text("")
    return copy


def edit_manifest(store, change):
    manifest = json.loads((store / MANIFEST).read_text())
    change(manifest)
    (store / MANIFEST).write_text(json.dumps(manifest))


def set_entry(key, value):
    def change(manifest):
        manifest["videos"][0][key] = value
    return change


@pytest.mark.parametrize("key, value, message", [
    ("shard", "../../../etc/passwd", r"key 'shard' is '\.\./\.\./\.\./etc/passwd', not a lmdb shard name"),
    ("shard", "shard-00000.h5", r"not a lmdb shard name"),
    ("shard", "/tmp/shard-00000.lmdb", r"key 'shard'"),
    ("id", "../outside", r"key 'id': bad video id"),
    ("id", 7, r"key 'id' must be a string"),
    ("num_frames", -3, r"key 'num_frames' is -3, outside 2\.\."),
    ("num_frames", "32", r"key 'num_frames' must be an integer"),
    ("num_frames", True, r"key 'num_frames' must be an integer"),
    ("num_flows", 5, r"num_flows 5 must be num_frames - stride"),
    ("width", 0, r"key 'width' is 0"),
    ("source_sha256", "abc", r"key 'source_sha256' is not 64"),
])
def test_a_bad_manifest_entry_is_refused_naming_file_item_and_key(store, key, value, message):
    edit_manifest(store, set_entry(key, value))
    with pytest.raises(FormatError, match=message) as refused:
        flowstore.open_store(store)
    assert f"{store / MANIFEST}: videos[0]" in str(refused.value)


def test_a_missing_entry_key_is_named(store):
    edit_manifest(store, lambda m: m["videos"][0].pop("height"))
    with pytest.raises(FormatError, match=r"videos\[0\].*key 'height' is missing"):
        flowstore.open_store(store)


@pytest.mark.parametrize("key, value, message", [
    ("backend", "zip", r"key 'backend' is 'zip'"),
    ("stride", 0, r"key 'stride' is 0"),
    ("format_version", "+1.0", r"unreadable format_version"),
    ("format_version", " 1.0", r"unreadable format_version"),
    ("format_version", "\u0661.0", r"unreadable format_version"),  # an Arabic-Indic digit
    ("format_version", "2.0", r"newer than this flowstore"),
    ("quantization", {"scheme": "bound", "bound": -1}, r"key 'quantization' is not a valid quantization"),
    ("videos", {}, r"key 'videos' must be an array"),
])
def test_a_bad_header_is_refused_naming_the_key(store, key, value, message):
    edit_manifest(store, lambda m: m.__setitem__(key, value))
    with pytest.raises(FormatError, match=message):
        flowstore.open_store(store)


def test_a_bad_commit_line_is_refused_naming_its_line(store):
    entry = json.loads((store / MANIFEST).read_text())["videos"][0]
    lines = [json.dumps({**entry, "id": "good"}), json.dumps({**entry, "id": "bad", "shard": "../x.lmdb"})]
    (store / COMMIT_LOG).write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=rf"{COMMIT_LOG}:2 \(video 'bad'\): key 'shard'"):
        flowstore.open_store(store)


def test_commit_lines_that_are_not_utf8_json_objects_are_skipped_as_the_spec_says(store):
    entry = json.loads((store / MANIFEST).read_text())["videos"][0]
    utf16 = json.dumps({**entry, "id": "utf16"}).encode("utf-16")  # json.loads(bytes) would take it
    torn = json.dumps({**entry, "id": "torn"})[:40].encode()
    (store / COMMIT_LOG).write_bytes(utf16 + b"\n" + torn + b"\n" + b"[1, 2]\n")
    assert flowstore.open_store(store).videos == [entry["id"]]


def test_a_bad_failure_line_is_refused_naming_its_line(store):
    (store / FAILURES).write_text(json.dumps({"id": "x", "source": "x.mp4", "reason": 3}) + "\n")
    with pytest.raises(FormatError, match=rf"{FAILURES}:1: key 'reason' must be a string"):
        load_failures(store)


def test_manifest_that_is_not_utf8_json_is_refused(store):
    (store / MANIFEST).write_bytes(json.dumps({"format": "flowstore"}).encode("utf-16"))
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        flowstore.open_store(store)
