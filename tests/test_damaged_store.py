"""No damage to any file of a store crashes flowstore (issue 11, item 1): ``info``, ``verify``,
``open_store`` + reading every record, the loader with worker processes and ``extract`` resuming
the store each end in a clean exit code and one message naming what is damaged (the shard and
the video, or the JSON file), never a segfault, a bus error or a traceback. Stores are real
extractions of shared clips, damaged here; every entry point runs in a subprocess
(tests/damage_probe.py), so a crash shows as a negative return code."""
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import flowstore
from flowstore.errors import EXIT_DAMAGED, EXIT_OK, EXIT_STORE, EXIT_USAGE
from flowstore.store.format import CATALOG_DIR, COMMIT_LOG, FAILURES, MANIFEST, SHARD_DIR
from flowstore.store.manifest import load_manifest
from helpers import REPO, run_cli

CLIPS = ("part_0.mp4", "clean_and_jerk.mp4")
VIDEOS = ("clean_and_jerk", "part_0")
ENTRIES = ("info", "verify", "read", "loader", "extract")
BACKENDS = ("lmdb", "hdf5")


def extract(out, videos_dir, backend, size="64x48"):
    done = run_cli("extract", *[str(videos_dir / c) for c in CLIPS], "--out", str(out), "--format", backend,
                   "--method", "farneback", "--size", size, "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, shared_videos):
    base = tmp_path_factory.mktemp("damaged")
    return {b: {"store": extract(base / f"store-{b}", shared_videos, b),
                # same clips and shard name, other content: another store's shard
                "other": extract(base / f"other-{b}", shared_videos, b, size="80x60")} for b in BACKENDS}


def the_shard(store) -> Path:
    (shard,) = (store / SHARD_DIR).iterdir()
    return shard


def cut(at):
    def damage(store, ctx):
        shard = the_shard(store)
        size = shard.stat().st_size
        os.truncate(shard, at(size, ctx))
    return damage


def flip(at, n=16):
    def damage(store, ctx):
        shard = the_shard(store)
        data = bytearray(shard.read_bytes())
        start = at(len(data), data)
        data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
        shard.write_bytes(bytes(data))
    return damage


def replace_shard(make):
    def damage(store, ctx):
        shard = the_shard(store)
        shard.unlink()
        make(shard, ctx)
    return damage


def lmdb_page_size(data) -> int:
    return struct.unpack_from("<I", data, 40)[0]  # meta page 0: the free DB's first field (docs/FORMAT.md sec. 5)


def hdf5_root_header(data) -> int:
    return int.from_bytes(data[64:72], "little")  # superblock v0: root group's object header address


# kind of damage -> (family, which backends, the damage)
SHARD_DAMAGE = {
    "cut to 0 bytes": (cut(lambda size, ctx: 0), BACKENDS),
    "cut to 100 bytes": (cut(lambda size, ctx: 100), BACKENDS),
    "cut after the first page": (cut(lambda size, ctx: 4096), BACKENDS),
    "cut after two pages": (cut(lambda size, ctx: 8192), BACKENDS),
    "cut in half": (cut(lambda size, ctx: size // 2), BACKENDS),
    "cut by one byte": (cut(lambda size, ctx: size - 1), BACKENDS),
    "LMDB meta page 0 changed": (flip(lambda size, data: 16), ("lmdb",)),
    "LMDB meta page 1 changed": (flip(lambda size, data: lmdb_page_size(data) + 16), ("lmdb",)),
    "LMDB last-page field made larger": (flip(lambda size, data: lmdb_page_size(data) + 136 + 3, n=1), ("lmdb",)),
    "HDF5 signature changed": (flip(lambda size, data: 0, n=4), ("hdf5",)),
    "HDF5 superblock changed": (flip(lambda size, data: 16), ("hdf5",)),
    "HDF5 root group header changed": (flip(lambda size, data: hdf5_root_header(data)), ("hdf5",)),
    "shard missing": (lambda store, ctx: the_shard(store).unlink(), BACKENDS),
    "shard replaced by a JPEG": (replace_shard(lambda p, ctx: shutil.copy(ctx["jpeg"], p)), BACKENDS),
    "shard replaced by an empty file": (replace_shard(lambda p, ctx: p.touch()), BACKENDS),
    "shard replaced by a directory": (replace_shard(lambda p, ctx: p.mkdir()), BACKENDS),
    "shard from another store": (replace_shard(lambda p, ctx: shutil.copy(the_shard(ctx["other"]), p)), BACKENDS),
    "shards/ replaced by a file": (lambda store, ctx: (shutil.rmtree(store / SHARD_DIR), (store / SHARD_DIR).write_text("x")),
                                   BACKENDS),
}
# byte changes inside record data: the CRC tells (check=True readers, verify); the loader reads
# with check=False (docs/FORMAT.md section 10) and may decode such a record
def in_record(kind, index):
    """Bytes changed inside the payload of ``part_0``'s record ``kind`` ``index``, found in the
    shard file by its bytes (read from the pristine store)."""
    def damage(store, ctx):
        with flowstore.open_store(ctx["pristine"]) as reader:
            payload = reader._shard("part_0").get("part_0", kind, index)
        shard = the_shard(store)
        data = bytearray(shard.read_bytes())
        start = data.find(payload) + len(payload) // 2
        assert start > len(payload) // 2
        data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])
        shard.write_bytes(bytes(data))
    return damage


DATA_DAMAGE = {
    "bytes changed inside a frame record": (in_record("rgb", 5), BACKENDS),
    "bytes changed inside a flow record": (in_record("flow_x", 20), BACKENDS),
}


def probe(stores, backend, ctx, entries=ENTRIES):
    """Run every entry point on every store in one subprocess; the results by (store, entry)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "damage_probe.py"), str(ctx["clip"]), backend,
                           ",".join(entries), *map(str, stores)], capture_output=True, text=True, env=env, timeout=600)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, (f"crashed (return code {done.returncode}) after {results[-1:]}:\n"
                                  f"{done.stderr[-3000:]}")
    return {(Path(r["store"]).name, r["entry"]): (r["code"], r["out"]) for r in results}


def damaged_copies(tmp_path, pristine, backend, cases, shared_videos):
    ctx = {"other": pristine[backend]["other"], "pristine": pristine[backend]["store"], "clip": shared_videos / CLIPS[0],
           "jpeg": shared_videos / "rawframes_mmaction2_imgs" / "img_00001.jpg"}
    stores = []
    for n, (name, (damage, backends)) in enumerate(cases.items()):
        if backend in backends:
            copy = tmp_path / f"case{n}"
            shutil.copytree(pristine[backend]["store"], copy)
            damage(copy, ctx)
            stores.append((name, copy))
    return stores, ctx


def names_shard_and_video(text: str, backend: str) -> bool:
    shard = f"shard-00000.{'lmdb' if backend == 'lmdb' else 'h5'}"
    return shard in text and any(f"'{v}'" in text or f"{v}/" in text for v in VIDEOS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_shard_is_reported_by_verify_and_refused_by_readers_never_a_crash(tmp_path, pristine, shared_videos, backend):
    stores, ctx = damaged_copies(tmp_path, pristine, backend, {**SHARD_DAMAGE, **DATA_DAMAGE}, shared_videos)
    results = probe([s for _, s in stores], backend, ctx)
    for name, store in stores:
        got = {entry: results[(store.name, entry)] for entry in ENTRIES}
        where = f"{backend}, {name}: {got}"
        assert got["info"][0] == EXIT_OK, where  # info reads the JSON files only
        # resuming never reopens a committed shard; it needs shards/ to write new ones
        code, out = got["extract"]
        assert (code, SHARD_DIR in out) == ((EXIT_STORE, True) if name == "shards/ replaced by a file" else (EXIT_OK, False)), where
        code, out = got["verify"]
        assert code == EXIT_DAMAGED and out.startswith("BAD ") and names_shard_and_video(out, backend), where
        code, out = got["read"]
        assert code == EXIT_DAMAGED and names_shard_and_video(out, backend), where
        code, out = got["loader"]
        if name in DATA_DAMAGE and code == EXIT_OK:
            continue
        assert code == EXIT_DAMAGED and names_shard_and_video(out, backend), where


def logged(store):
    """Move the committed entries from manifest.json into commits.jsonl (as a run that has not
    checkpointed yet leaves them)."""
    manifest = json.loads((store / MANIFEST).read_text())
    entries, manifest["videos"] = load_manifest(store)["videos"], []
    (store / MANIFEST).write_text(json.dumps(manifest))
    (store / COMMIT_LOG).write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    return entries


def edit_log(change):
    def damage(store, ctx):
        logged(store)
        data = (store / COMMIT_LOG).read_bytes()
        (store / COMMIT_LOG).write_bytes(change(data))
    return damage


def as_directory(name):
    def damage(store, ctx):
        (store / name).unlink(missing_ok=True)
        (store / name).mkdir()
    return damage


def garble(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:]


FIRST_LINE_TORN = lambda data: data[: data.index(b"\n") // 2] + b"\n" + data[data.index(b"\n") + 1:]
JSON_REFUSED = {  # every entry point: exit 2 naming the file
    "manifest.json cut short": (lambda s, c: (s / MANIFEST).write_bytes((s / MANIFEST).read_bytes()[:300]), MANIFEST),
    "manifest.json garbled": (lambda s, c: (s / MANIFEST).write_bytes(garble((s / MANIFEST).read_bytes())), MANIFEST),
    "manifest.json a directory": (as_directory(MANIFEST), MANIFEST),
    "commits.jsonl a directory": (as_directory(COMMIT_LOG), COMMIT_LOG),
    "commits.jsonl line with a key dropped": (
        edit_log(lambda d: d.replace(b'"num_frames": ', b'"num_framez": ', 1)), COMMIT_LOG),
}
JSON_SKIPPED = {  # lines the spec says to skip (section 9): the store reads without those videos
    "commits.jsonl cut mid-line": (edit_log(lambda d: d[: len(d) - 40]), 1),
    "commits.jsonl first line garbled": (edit_log(lambda d: garble(d[: d.index(b"\n")]) + d[d.index(b"\n"):]), 1),
    "commits.jsonl first line torn": (edit_log(FIRST_LINE_TORN), 1),
    "failures.jsonl garbled": (lambda s, c: (s / FAILURES).write_bytes(b'{"id": "x", "sour\n\xff\xfe\n'), 2),
}


def test_damaged_json_files_are_refused_naming_the_file_or_their_lines_skipped(tmp_path, pristine, shared_videos):
    backend = "lmdb"
    cases = {name: (damage, (backend,)) for name, (damage, _) in {**JSON_REFUSED, **JSON_SKIPPED}.items()}
    stores, ctx = damaged_copies(tmp_path, pristine, backend, cases, shared_videos)
    results = probe([s for _, s in stores], backend, ctx)
    for name, store in stores:
        got = {entry: results[(store.name, entry)] for entry in ENTRIES}
        where = f"{name}: {got}"
        if name in JSON_REFUSED:
            file = JSON_REFUSED[name][1]
            for entry in ENTRIES:
                code, out = got[entry]
                assert code == EXIT_USAGE and file in out, (entry, where)
        else:
            for entry in ENTRIES:
                assert got[entry][0] == EXIT_OK, (entry, where)
            assert f": {JSON_SKIPPED[name][1]} videos, " in got["verify"][1], where  # before extract resumed


def test_a_1_0_store_without_shard_sizes_still_reads_and_verifies(tmp_path, pristine):
    store = tmp_path / "old"
    shutil.copytree(pristine["lmdb"]["store"], store)
    manifest = load_manifest(store)  # as a 1.0 writer leaves it: every entry in the manifest
    manifest["format_version"] = "1.0"
    for entry in manifest["videos"]:
        del entry["shard_size"], entry["records_crc32"]
    (store / MANIFEST).write_text(json.dumps(manifest))
    (store / COMMIT_LOG).write_text("")
    shutil.rmtree(store / CATALOG_DIR)
    assert run_cli("verify", "--no-progress", str(store)).returncode == EXIT_OK
    with flowstore.open_store(store, check=True) as reader:
        assert reader.videos == sorted(VIDEOS)
        assert reader.frame("part_0", 0).shape == (48, 64, 3)
