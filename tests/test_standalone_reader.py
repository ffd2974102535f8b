"""docs/FORMAT.md is enough to read a store: a reader written from the spec alone, with plain
json / zlib / struct / numpy / cv2 / lmdb / h5py, must see exactly what flowstore sees.

Stores are built with flowstore's Python API (LMDB and HDF5; ``bound`` quantization with JPEG
flow, ``minmax`` with PNG flow; jpeg, png and raw frames; stride 1 and 2). Everything in the
section "standalone reader" below uses no flowstore import; flowstore is used only to build the
stores and as the reference the spec reader is compared with.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib
from urllib.parse import quote
from pathlib import Path

import cv2
import h5py
import lmdb
import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"


# =======================================================================================
# standalone reader: docs/FORMAT.md only -- no flowstore imports in this section
# =======================================================================================
HEADER_KEYS = {  # section 2
    "format": str, "format_version": str, "flowstore_version": str, "created_at": str,
    "updated_at": str, "backend": str, "frames": dict, "resize": dict, "decoder": str,
    "stride": int, "flow": dict, "quantization": dict, "videos": list,
}
ENTRY_KEYS = {  # section 3
    "id": str, "source": str, "source_size": int, "source_sha256": str, "num_frames": int,
    "num_flows": int, "width": int, "height": int, "shard": str, "bytes": int, "committed_at": str,
    "shard_size": int, "records_crc32": int,  # since 1.1 (optional for readers; the writer writes them)
}
KINDS_BOUND = ("rgb", "flow_x", "flow_y")
KINDS_MINMAX = KINDS_BOUND + ("flow_range",)


class SpecFormatError(ValueError):
    pass


def spec_check_version(m: dict, major_supported: int = 1) -> None:
    """Section 11: refuse another format or a newer major; accept any minor."""
    if m.get("format") != "flowstore":
        raise SpecFormatError(f"not a flowstore store: {m.get('format')!r}")
    version = m.get("format_version")
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]+\.[0-9]+", version, re.ASCII):
        raise SpecFormatError(f"unreadable format_version {version!r}")
    major = int(version.split(".")[0])
    if major > major_supported:
        raise SpecFormatError(f"format {m['format_version']} is newer than {major_supported}.x")


def spec_read_lines(path: Path) -> list[dict]:
    """Section 9: split on newlines, drop the piece after the last one, skip unparseable lines."""
    return spec_parse_lines(path.read_bytes()) if path.exists() else []


def spec_parse_lines(raw: bytes) -> list[dict]:
    out = []
    for line in raw.split(b"\n")[:-1]:
        try:
            obj = json.loads(line.decode("utf-8"))  # UTF-8 only: json.loads(bytes) would guess UTF-16/32
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            continue
        if isinstance(obj, dict) and "id" in obj:
            out.append(obj)
    return out


def spec_open(root: Path) -> tuple[dict, dict[str, dict]]:
    """(header, committed entries by id): the union of manifest videos and the commit log."""
    m = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    spec_check_version(m)
    videos = {e["id"]: e for e in m["videos"]}
    for e in spec_read_lines(root / "commits.jsonl"):
        videos[e["id"]] = e  # a later entry with the same id wins
    return m, videos


def spec_open_catalog(root: Path) -> tuple[dict, dict[str, dict]] | None:
    """Section 13, the fast path: (header, committed entries by id) from catalog/catalog.json, its
    segments (oldest -> newest, a newer one wins) and the log lines past ``log.offset``; None
    when there is no catalog or it is stale (then section 9's full read applies)."""
    path = root / "catalog" / "catalog.json"
    if not path.exists():
        return None
    c = json.loads(path.read_text(encoding="utf-8"))
    if c.get("format") != "flowstore-catalog" or c.get("catalog_version") != 1:
        return None
    st = os.stat(root / "manifest.json")
    if (st.st_ino, st.st_size, st.st_mtime_ns) != (c["manifest"]["inode"], c["manifest"]["size"], c["manifest"]["mtime_ns"]):
        return None
    log, off = c["log"], c["log"]["offset"]
    with open(root / "commits.jsonl", "rb") as f:
        if os.fstat(f.fileno()).st_ino != log["inode"]:
            return None
        f.seek(log["last_line_start"])
        covered_last = f.read(off - log["last_line_start"])
        tail = f.read()
    if off and (not covered_last.endswith(b"\n") or zlib.crc32(covered_last) != log["last_line_crc32"]):
        return None
    spec_check_version(c["header"])
    videos: dict[str, dict] = {}
    for seg in c["segments"]:
        env = lmdb.open(str(root / "catalog" / seg["name"]), subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            for key, value in txn.cursor():
                videos[bytes(key).decode("utf-8")] = json.loads(bytes(value).decode("utf-8"))
        env.close()
    for e in spec_parse_lines(tail):  # section 9's rules for the lines past the catalog
        videos[e["id"]] = e
    return c["header"], videos


def spec_kinds(m: dict) -> tuple[str, ...]:
    return KINDS_MINMAX if m["quantization"]["scheme"] == "minmax" else KINDS_BOUND


def spec_count(entry: dict, kind: str) -> int:
    return entry["num_frames"] if kind == "rgb" else entry["num_flows"]


class SpecShard:
    """Records of one shard (sections 5 and 6); every payload's CRC-32 is checked."""

    def __init__(self, backend: str, path: Path):
        self.backend = backend
        if backend == "lmdb":
            self.env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
        elif backend == "hdf5":
            self.h5 = h5py.File(path, "r")
        else:
            raise SpecFormatError(f"unknown backend {backend!r}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        (self.env if self.backend == "lmdb" else self.h5).close()

    def get(self, video_id: str, kind: str, index: int) -> bytes:
        if self.backend == "lmdb":
            with self.env.begin() as txn:
                value = txn.get(f"{video_id}/{kind}/{index:06d}".encode("utf-8"))
            assert value is not None, (video_id, kind, index)
            (crc,) = struct.unpack_from("<I", value)
            payload = bytes(value[4:])
        else:
            group = self.h5[f"videos/{quote(video_id, safe='')}"]
            offsets = group[f"{kind}_offsets"]
            payload = group[f"{kind}_data"][offsets[index]:offsets[index + 1]].tobytes()
            crc = int(group[f"{kind}_crc32"][index])
        assert zlib.crc32(payload) == crc, f"CRC mismatch {video_id}/{kind}/{index}"
        return payload


def spec_decode_rgb(payload: bytes, codec: str, entry: dict) -> np.ndarray:
    """Section 8."""
    if codec == "raw":
        return np.frombuffer(payload, np.uint8).reshape(entry["height"], entry["width"], 3)
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def spec_decode_plane(payload: bytes, codec: str, entry: dict) -> np.ndarray:
    if codec == "raw":
        return np.frombuffer(payload, np.uint8).reshape(entry["height"], entry["width"])
    return cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_GRAYSCALE)


def spec_range(payload: bytes) -> np.ndarray:
    assert len(payload) == 16
    return np.frombuffer(payload, "<f4").astype(np.float32)


def spec_dequantize(q: np.ndarray, quant: dict, value_range: np.ndarray | None) -> np.ndarray:
    """Section 7, in flowstore's exact float32 evaluation order."""
    if quant["scheme"] == "bound":
        bound = quant["bound"]
        return q.astype(np.float32) * np.float32(2 * bound / 255) - np.float32(bound)
    lo_x, hi_x, lo_y, hi_y = value_range
    lo = np.array([lo_x, lo_y], np.float32)
    hi = np.array([hi_x, hi_y], np.float32)
    return lo + q.astype(np.float32) * ((hi - lo) / np.float32(255))


def spec_flip(q: np.ndarray, value_range: np.ndarray | None):
    """Section 7, horizontal flip: mirror columns, q_x -> 255 - q_x, minmax range (-hi_x, -lo_x)."""
    flipped = q[:, ::-1].copy()
    flipped[..., 0] = 255 - flipped[..., 0]
    if value_range is None:
        return flipped, None
    lo_x, hi_x, lo_y, hi_y = value_range
    return flipped, np.array([-hi_x, -lo_x, lo_y, hi_y], np.float32)


def spec_read_video(root: Path, m: dict, entry: dict):
    """Every record of a video, decoded: frames, q (H, W, 2), ranges, flows; and payload bytes."""
    out = {"frames": [], "q": [], "ranges": [], "flows": [], "bytes": 0}
    with SpecShard(m["backend"], root / "shards" / entry["shard"]) as shard:
        vid = entry["id"]
        for i in range(entry["num_frames"]):
            p = shard.get(vid, "rgb", i)
            out["bytes"] += len(p)
            out["frames"].append(spec_decode_rgb(p, m["frames"]["codec"], entry))
        for i in range(entry["num_flows"]):
            px, py = shard.get(vid, "flow_x", i), shard.get(vid, "flow_y", i)
            out["bytes"] += len(px) + len(py)
            q = np.dstack([spec_decode_plane(px, m["flow"]["codec"], entry),
                           spec_decode_plane(py, m["flow"]["codec"], entry)])
            rng = None
            if m["quantization"]["scheme"] == "minmax":
                pr = shard.get(vid, "flow_range", i)
                out["bytes"] += len(pr)
                rng = spec_range(pr)
            out["q"].append(q)
            out["ranges"].append(rng)
            out["flows"].append(spec_dequantize(q, m["quantization"], rng))
    return out


# =======================================================================================
# building stores with flowstore, and flowstore's own view of them (the reference)
# =======================================================================================
CASES = {
    "lmdb-bound-jpeg": dict(backend="lmdb", scheme="bound", bound=20.0, flow_codec="jpeg", frame_codec="jpeg", stride=1),
    "hdf5-bound-jpeg": dict(backend="hdf5", scheme="bound", bound=12.5, flow_codec="jpeg", frame_codec="jpeg", stride=1),
    "lmdb-minmax-png": dict(backend="lmdb", scheme="minmax", bound=20.0, flow_codec="png", frame_codec="raw", stride=2),
    "hdf5-minmax-png": dict(backend="hdf5", scheme="minmax", bound=20.0, flow_codec="png", frame_codec="png", stride=1),
}
SIZE = (96, 72)
IDS = ["cls a/clip é", "part_0"]  # a nested, non-ASCII id (a copy of part_0) and a plain one


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_videos) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "cls a").mkdir()
    shutil.copy(shared_videos / "part_0.mp4", root / "part_0.mp4")
    shutil.copy(shared_videos / "part_0.mp4", root / "cls a" / "clip é.mp4")
    return root


def reference(root: Path) -> dict:
    """What flowstore's reader returns for every committed video of the store."""
    import flowstore

    ref = {}
    with flowstore.open_store(root, check=True) as store:
        for vid in store.videos:
            ref[vid] = {
                "entry": store.entry(vid),
                "frames": [store.frame(vid, i) for i in range(store.num_frames(vid))],
                "q": [store.flow_q(vid, i) for i in range(store.num_flows(vid))],
                "ranges": [store.flow_range(vid, i) for i in range(store.num_flows(vid))],
                "flows": [store.flow(vid, i) for i in range(store.num_flows(vid))],
            }
    return ref


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request, tmp_path_factory, inputs):
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.quantize import QuantSpec

    case = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param) / "store"
    cfg = ExtractConfig(
        out=str(root), backend=case["backend"], method="farneback",
        quant=QuantSpec(case["scheme"], case["bound"]), flow_codec=case["flow_codec"],
        frame_codec=case["frame_codec"], resize=FrameResize(size=SIZE), stride=case["stride"], workers=1,
    )
    summary = run_extract(plan_jobs([inputs]), cfg, show_progress=False)
    assert summary.ok == 2 and not summary.failures
    return request.param, case, root, reference(root)


# =======================================================================================
# tests
# =======================================================================================
def test_header_and_entries(built):
    name, case, root, ref = built
    assert (root / "manifest.json").is_file() and (root / "shards").is_dir()
    m, videos = spec_open(root)
    for key, typ in HEADER_KEYS.items():
        assert isinstance(m[key], typ), key
    assert m["format"] == "flowstore" and m["format_version"] == "1.2"
    assert m["backend"] == case["backend"] and m["stride"] == case["stride"]
    expected_quality = {"jpeg": 95, "png": 1, "raw": None}[case["frame_codec"]]  # the codec defaults used
    assert m["frames"] == {"codec": case["frame_codec"], "quality": expected_quality, "color": "RGB"}
    assert m["resize"]["size"] == list(SIZE) and m["resize"]["short_side"] is None
    assert m["flow"]["codec"] == case["flow_codec"] and m["flow"]["components"] == ["flow_x", "flow_y"]
    assert m["flow"]["method"] == "farneback" and isinstance(m["flow"]["params"], dict)
    quant = m["quantization"]
    assert (quant["scheme"], quant["levels"], quant["rounding"], quant["dtype"]) == (case["scheme"], 255, "half_to_even", "uint8")
    assert ("bound" in quant) == (case["scheme"] == "bound")
    if case["scheme"] == "bound":
        assert quant["bound"] == case["bound"]

    assert sorted(videos) == IDS == sorted(ref)
    assert m["videos"] == []  # format 1.2: every entry stays in the append-only log
    header, by_catalog = spec_open_catalog(root)  # section 13: the same videos through the catalog
    assert by_catalog == videos and header == {k: v for k, v in m.items() if k != "videos"}
    for vid, e in videos.items():
        assert set(e) == set(ENTRY_KEYS), set(e) ^ set(ENTRY_KEYS)
        for key, typ in ENTRY_KEYS.items():
            assert isinstance(e[key], typ), key
        assert e == ref[vid]["entry"]
        assert e["num_frames"] == 32 and e["num_flows"] == e["num_frames"] - m["stride"]
        assert (e["width"], e["height"]) == SIZE
        assert re.fullmatch(r"shard-\d{5,}" + {"lmdb": r"\.lmdb", "hdf5": r"\.h5"}[m["backend"]], e["shard"])
        assert (root / "shards" / e["shard"]).is_file()
        assert 0 < e["shard_size"] <= (root / "shards" / e["shard"]).stat().st_size
        assert e["source_size"] == 158581 and len(e["source_sha256"]) == 64
    # ids are paths relative to the input root without the extension
    assert videos["cls a/clip é"]["source"].endswith(os.path.join("cls a", "clip é.mp4"))


def test_every_record_crc_and_layout(built):
    """Each record exists where section 5/6 says, with a matching CRC-32; nothing else for the id."""
    name, case, root, ref = built
    m, videos = spec_open(root)
    kinds = spec_kinds(m)
    for vid, e in videos.items():
        expected = {(k, i) for k in kinds for i in range(spec_count(e, k))}
        shard_path = root / "shards" / e["shard"]
        if m["backend"] == "lmdb":
            env = lmdb.open(str(shard_path), subdir=False, readonly=True, lock=False)
            try:
                found = set()
                with env.begin() as txn:
                    prefix = f"{vid}/".encode()
                    for key, value in txn.cursor():
                        if not key.startswith(prefix) or key.count(b"/") != vid.count("/") + 2:
                            continue  # another video (or one nested under this id)
                        kind, index = key.decode()[len(vid) + 1:].split("/")
                        assert len(index) == 6, key
                        (crc,) = struct.unpack("<I", value[:4])
                        assert crc == zlib.crc32(value[4:]), key
                        found.add((kind, int(index)))
            finally:
                env.close()
            assert found == expected
        else:
            with h5py.File(shard_path, "r") as f:
                group = f[f"videos/{quote(vid, safe='')}"]
                datasets = {k for k, obj in group.items() if isinstance(obj, h5py.Dataset)}
                assert datasets == {f"{k}_{s}" for k in kinds for s in ("data", "offsets", "crc32")}
                for kind in kinds:
                    n = spec_count(e, kind)
                    data, offsets, crcs = (group[f"{kind}_{s}"] for s in ("data", "offsets", "crc32"))
                    assert (data.dtype, offsets.dtype, crcs.dtype) == (np.uint8, np.int64, np.uint32)
                    assert data.ndim == 1 and offsets.shape == (n + 1,) and crcs.shape == (n,)
                    off, blob = offsets[()], data[()].tobytes()
                    assert off[0] == 0 and off[-1] == len(blob) and np.all(np.diff(off) >= 0)
                    for i in range(n):
                        assert zlib.crc32(blob[off[i]:off[i + 1]]) == int(crcs[i]), (vid, kind, i)
        got = spec_read_video(root, m, e)  # SpecShard.get checks every CRC as well
        assert got["bytes"] == e["bytes"]
        if m["quantization"]["scheme"] == "minmax":
            assert all(r.dtype == np.float32 and r.shape == (4,) for r in got["ranges"])


def test_decoded_frames_and_flows_equal_flowstore(built):
    name, case, root, ref = built
    m, videos = spec_open(root)
    for vid, e in videos.items():
        got = spec_read_video(root, m, e)
        r = ref[vid]
        assert len(got["frames"]) == len(r["frames"]) == e["num_frames"]
        for a, b in zip(got["frames"], r["frames"]):
            assert a.shape == (e["height"], e["width"], 3) and a.dtype == np.uint8
            np.testing.assert_array_equal(a, b)
        assert len(got["flows"]) == len(r["flows"]) == e["num_flows"]
        for i in range(e["num_flows"]):
            np.testing.assert_array_equal(got["q"][i], r["q"][i])
            assert got["flows"][i].dtype == np.float32 and got["flows"][i].shape == (e["height"], e["width"], 2)
            np.testing.assert_array_equal(got["flows"][i], r["flows"][i])  # exactly, not approximately
            if r["ranges"][i] is None:
                assert got["ranges"][i] is None
            else:
                np.testing.assert_array_equal(got["ranges"][i], r["ranges"][i])
        # the two copies of part_0 were extracted identically
    a, b = (spec_read_video(root, m, videos[v]) for v in IDS)
    if m["frames"]["codec"] != "jpeg" and m["flow"]["codec"] != "jpeg":
        np.testing.assert_array_equal(a["q"][5], b["q"][5])


def test_flow_is_forward_from_frame_i_to_i_plus_stride(built):
    """Section 4: flow i is frame i -> frame i + stride, u to the right, v down (checked by warping)."""
    name, case, root, ref = built
    m, videos = spec_open(root)
    got = spec_read_video(root, m, videos["part_0"])
    s = m["stride"]
    errs = {}
    for label, (src, dst, c) in {"forward": (0, s, (0, 1)), "reversed": (s, 0, (0, 1)),
                                  "x/y swapped": (0, s, (1, 0))}.items():
        e = []
        for i in range(8, 14):
            a = cv2.cvtColor(got["frames"][i + src], cv2.COLOR_RGB2GRAY).astype(np.float32)
            b = cv2.cvtColor(got["frames"][i + dst], cv2.COLOR_RGB2GRAY).astype(np.float32)
            flow = got["flows"][i]
            h, w = a.shape
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            warped = cv2.remap(b, gx + flow[..., c[0]], gy + flow[..., c[1]], cv2.INTER_LINEAR)  # b(x + u) ~ a(x)
            e.append(np.abs(warped - a)[8:-8, 8:-8].mean())
        errs[label] = float(np.mean(e))
    assert errs["forward"] < 0.7 * min(errs["reversed"], errs["x/y swapped"]), errs


def test_flip_rule(built):
    """Section 7: mirror + q_x -> 255 - q_x (+ range flip for minmax) negates u, keeps v."""
    from flowstore.quantize import flip_horizontal  # the reference, for comparison only

    name, case, root, ref = built
    m, videos = spec_open(root)
    quant = m["quantization"]
    scale = quant.get("bound", 1.0)
    got = spec_read_video(root, m, videos["part_0"])
    for i in (0, 7, len(got["q"]) - 1):
        q, rng = got["q"][i], got["ranges"][i]
        qf, rf = spec_flip(q, rng)
        np.testing.assert_array_equal(qf[..., 0], 255 - q[:, ::-1, 0])
        np.testing.assert_array_equal(qf[..., 1], q[:, ::-1, 1])
        flow, flipped = spec_dequantize(q, quant, rng), spec_dequantize(qf, quant, rf)
        tol = 4 * np.finfo(np.float32).eps * max(scale, float(np.abs(flow).max()) if flow.size else 1.0)
        np.testing.assert_allclose(flipped[..., 0], -flow[:, ::-1, 0], rtol=0, atol=tol)
        np.testing.assert_allclose(flipped[..., 1], flow[:, ::-1, 1], rtol=0, atol=tol)
        ref_q, ref_r = flip_horizontal(q, rng)
        np.testing.assert_array_equal(qf, ref_q)
        if rng is None:
            assert ref_r is None and rf is None
        else:
            np.testing.assert_array_equal(rf, ref_r)
            assert rf[0] == -rng[1] and rf[1] == -rng[0] and rf[2] == rng[2] and rf[3] == rng[3]


def doc_examples() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- example:(\w+) -->\n```python\n(.*?)```", text, re.S))


def test_doc_examples_run(built):
    """The snippets of FORMAT.md section 12 read the default-settings stores correctly."""
    name, case, root, ref = built
    if case["scheme"] != "bound" or case["frame_codec"] != "jpeg" or case["flow_codec"] != "jpeg":
        pytest.skip("the doc examples are for the default settings (jpeg, bound)")
    blocks = doc_examples()
    assert set(blocks) == {"videos", "lmdb", "hdf5"}
    assert 'root = "STORE"' in blocks["videos"]
    ns: dict = {}
    exec(blocks["videos"].replace('root = "STORE"', f"root = {str(root)!r}"), ns)
    exec(blocks[case["backend"]], ns)
    first = sorted(ref)[0]
    assert sorted(ns["videos"]) == sorted(ref) and ns["v"]["id"] == first
    np.testing.assert_array_equal(ns["rgb"], ref[first]["frames"][0])
    np.testing.assert_array_equal(ns["q"], ref[first]["q"][0])
    np.testing.assert_array_equal(ns["flow"], ref[first]["flows"][0])
    if "env" in ns:
        ns["env"].close()
    if "g" in ns:
        ns["g"].file.close()


def _copy_store(root: Path, dst: Path) -> Path:
    shutil.copytree(root, dst)
    return dst


def test_commit_log_union_later_wins_torn_tail(built, tmp_path):
    """Section 9: manifest videos + complete log lines; later entry wins; torn tail and garbage ignored."""
    import flowstore

    name, case, root, ref = built
    store = _copy_store(root, tmp_path / "store")
    manifest, entries = spec_open(store)
    moved = entries["part_0"]
    # a store checkpointed the 1.1 way, then part_0 committed again (only in the log)
    manifest["videos"] = [e for vid, e in sorted(entries.items()) if vid != "part_0"]
    (store / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    newer = {**moved, "committed_at": "2099-01-01T00:00:00+00:00"}
    other = next(e for e in manifest["videos"] if e["id"] == "cls a/clip é")
    ghost = {**moved, "id": "ghost", "shard": "shard-99999.nope"}
    torn_override = {**other, "num_frames": 10**6}
    log = b"".join([
        (json.dumps(moved, sort_keys=True) + "\n").encode(),
        b'{"id": "half written, then closed by the next writer\n',  # a torn line, closed with \n
        b"\xff\xfe not utf-8\n",
        b'["a list, not an object"]\n',
        b'{"no_id": 1}\n',
        (json.dumps(newer, sort_keys=True, ensure_ascii=False) + "\n").encode(),  # later entry wins
        (json.dumps(ghost, sort_keys=True) + "\n").encode()[:-1],  # complete JSON but no newline yet
    ])
    (store / "commits.jsonl").write_bytes(log)
    m, videos = spec_open(store)
    assert sorted(videos) == IDS  # ghost (torn tail) ignored
    assert videos["part_0"] == newer and videos["cls a/clip é"] == other
    # ... and a second torn tail that would override an entry is ignored too
    (store / "commits.jsonl").write_bytes(log[: log.rindex(b"\n") + 1] + json.dumps(torn_override).encode()[:40])
    m, videos2 = spec_open(store)
    assert videos2 == videos
    with flowstore.open_store(store) as fs:
        assert fs.videos == sorted(videos)
        assert all(fs.entry(v) == videos[v] for v in videos)
    # the video committed only in the log reads exactly as before
    got = spec_read_video(store, m, videos["part_0"])
    for i in (0, len(got["q"]) - 1):
        np.testing.assert_array_equal(got["flows"][i], ref["part_0"]["flows"][i])
    np.testing.assert_array_equal(got["frames"][-1], ref["part_0"]["frames"][-1])


def test_version_rule(built, tmp_path):
    """Section 11: newer minor accepted, newer major and other formats refused (as flowstore does)."""
    import flowstore
    from flowstore.store.format import FormatError

    name, case, root, ref = built
    if name != "lmdb-bound-jpeg":
        pytest.skip("format-level rule: one store is enough")
    store = _copy_store(root, tmp_path / "store")
    text = (store / "manifest.json").read_text(encoding="utf-8")

    def with_header(**changes) -> None:
        m = json.loads(text)
        m.update(changes)
        (store / "manifest.json").write_text(json.dumps(m), encoding="utf-8")

    for version, ok in (("1.0", True), ("1.7", True), ("0.9", True), ("2.0", False), ("10.0", False), ("x", False)):
        with_header(format_version=version, some_future_key={"ignored": True})
        if ok:
            m, videos = spec_open(store)
            assert sorted(videos) == IDS
            with flowstore.open_store(store) as fs:
                assert fs.videos == IDS
        else:
            with pytest.raises(SpecFormatError):
                spec_open(store)
            with pytest.raises(FormatError):
                flowstore.open_store(store)
    with_header(format="something-else")
    with pytest.raises(SpecFormatError):
        spec_open(store)
    with pytest.raises(FormatError):
        flowstore.open_store(store)


def test_hdf5_nested_ids_in_any_order(tmp_path, inputs):
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, VideoJob, run_extract

    jobs = [VideoJob("part_0/inner", str(inputs / "part_0.mp4")), VideoJob("part_0", str(inputs / "part_0.mp4"))]
    cfg = ExtractConfig(out=str(tmp_path / "s"), backend="hdf5", method="farneback", resize=FrameResize(size=(32, 24)), workers=1)
    assert run_extract(jobs, cfg, show_progress=False).ok == 2
    m, videos = spec_open(tmp_path / "s")
    for e in videos.values():
        spec_read_video(tmp_path / "s", m, e)


# =======================================================================================
# format 1.2: a store holding backward flow, read by the 1.0/1.1 reader above
# =======================================================================================
BACKWARD_KINDS = {"flow_x": "flow_bx", "flow_y": "flow_by", "flow_range": "flow_brng"}  # section 4, since 1.2


def spec_read_backward(root: Path, m: dict, entry: dict) -> list[np.ndarray]:
    """Section 4 (1.2): the dequantized backward flows, stored like the forward ones under the
    kinds flow_bx / flow_by (/ flow_brng), present when ``directions`` lists "backward"."""
    assert "backward" in m.get("directions", ["forward"])
    flows = []
    with SpecShard(m["backend"], root / "shards" / entry["shard"]) as shard:
        for i in range(entry["num_flows"]):
            q = np.dstack([spec_decode_plane(shard.get(entry["id"], BACKWARD_KINDS[k], i), m["flow"]["codec"], entry)
                           for k in ("flow_x", "flow_y")])
            rng = (spec_range(shard.get(entry["id"], BACKWARD_KINDS["flow_range"], i))
                   if m["quantization"]["scheme"] == "minmax" else None)
            flows.append(spec_dequantize(q, m["quantization"], rng))
    return flows


@pytest.mark.parametrize("case_name", ["lmdb-bound-jpeg", "hdf5-minmax-png"])
def test_a_1_1_reader_reads_the_forward_records_of_a_store_with_backward_flow(tmp_path, inputs, case_name):
    """Minor versions only add: the 1.1 reader (which knows nothing of ``directions`` or the
    backward kinds) reads exactly the forward flow flowstore reads; the doc examples too."""
    import flowstore
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, VideoJob, run_extract
    from flowstore.quantize import QuantSpec

    case = CASES[case_name]
    root = tmp_path / "store"
    cfg = ExtractConfig(out=str(root), backend=case["backend"], method="farneback",
                        quant=QuantSpec(case["scheme"], case["bound"]), flow_codec=case["flow_codec"],
                        frame_codec=case["frame_codec"], resize=FrameResize(size=(48, 36)), stride=case["stride"],
                        directions=("forward", "backward"), workers=1)
    assert run_extract([VideoJob("part_0", str(inputs / "part_0.mp4"))], cfg, show_progress=False).ok == 1
    m, videos = spec_open(root)  # the 1.1 reader's version rule accepts 1.2
    assert m["format_version"] == "1.2" and m["directions"] == ["forward", "backward"]
    got = spec_read_video(root, m, videos["part_0"])  # forward kinds only, as a 1.1 reader knows them
    backward = spec_read_backward(root, m, videos["part_0"])
    with flowstore.open_store(root, check=True) as store:
        for i in range(store.num_flows("part_0")):
            np.testing.assert_array_equal(got["q"][i], store.flow_q("part_0", i))
            np.testing.assert_array_equal(got["flows"][i], store.flow("part_0", i))
        for i, flow in enumerate(backward):
            np.testing.assert_array_equal(flow, store.flow("part_0", i, direction="backward"))
        for i in range(store.num_frames("part_0")):
            np.testing.assert_array_equal(got["frames"][i], store.frame("part_0", i))
    # its bytes: the forward records are a part of the entry's bytes, the backward ones the rest
    assert got["bytes"] < videos["part_0"]["bytes"]
    if case_name == "lmdb-bound-jpeg":
        ns: dict = {}
        blocks = doc_examples()
        exec(blocks["videos"].replace('root = "STORE"', f"root = {str(root)!r}"), ns)
        exec(blocks["lmdb"], ns)
        ns["env"].close()
        np.testing.assert_array_equal(ns["flow"], got["flows"][0])
