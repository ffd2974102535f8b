"""Property-based tests (hypothesis) of what a store's reader trusts: LMDB record values (CRC-32
header + payload), quantization / dequantization / horizontal flip (docs/FORMAT.md section 7),
and the JSON files (sections 2, 3 and 9). Random corruption always ends in a clear flowstore
error or, where the spec says so, a skipped line; never another exception, never a wrong value."""
import json
import re
import tempfile
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowstore.errors import DamagedStoreError, MissingRecordError
from flowstore.quantize import QuantSpec, dequantize, flip_horizontal, quantize
from flowstore.store.format import COMMIT_LOG, MANIFEST, FormatError, pack_record, record_key, unpack_record
from flowstore.store.lmdb_backend import LMDBShardReader, LMDBShardWriter
from flowstore.store.manifest import load_manifest

FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
f32 = np.float32


# -- (a) LMDB record values ---------------------------------------------------------------
@st.composite
def damaged_values(draw):
    """A record value (CRC-32 header + payload) and a different value made from it: one to four
    bytes changed (a burst CRC-32 always detects) or the value cut short."""
    payload = draw(st.binary(min_size=0, max_size=300))
    value = bytearray(pack_record(payload))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(value) - 1))
        for i in range(start, min(start + draw(st.integers(1, 4)), len(value))):
            value[i] ^= draw(st.integers(1, 255))
    else:
        del value[draw(st.integers(0, len(value) - 1)):]
    return payload, bytes(value)


@FEW
@given(damaged_values())
def test_a_changed_or_cut_record_value_never_passes_its_crc(case):
    payload, value = case
    with pytest.raises(DamagedStoreError):
        unpack_record(value, check=True, what="r")


@FEW
@given(damaged_values(), st.booleans())
def test_a_damaged_record_in_an_lmdb_shard_reads_as_damaged_or_missing(case, drop):
    payload, value = case
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "shard-00000.lmdb")
        writer = LMDBShardWriter(path)
        writer.begin_video("v")
        writer.put("rgb", 0, payload)
        writer.end_video()
        with lmdb.open(path, subdir=False, lock=False) as env, env.begin(write=True) as txn:
            if drop:
                txn.delete(record_key("v", "rgb", 0))
            else:
                txn.put(record_key("v", "rgb", 0), value)
        reader = LMDBShardReader(path)
        expected = MissingRecordError if drop else DamagedStoreError
        try:
            with pytest.raises(expected):
                reader.get("v", "rgb", 0, check=True)
            with pytest.raises(expected):
                reader.get_many("v", "rgb", [0], check=True)
            if drop:
                with pytest.raises(MissingRecordError):
                    list(reader.iter_records("v", "rgb", 1))
            else:  # verify's path: the CRC is reported as bad
                assert [ok for _, _, ok in reader.iter_records("v", "rgb", 1)] == [False]
        finally:
            reader.close()


# -- (b) quantization (docs/FORMAT.md section 7) ------------------------------------------
bounds = st.floats(0.25, 200.0, allow_nan=False, width=32)


def flows(scale):
    scale = float(f32(scale))  # hypothesis wants float32 limits it can represent exactly
    return arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(2)),
                  elements=st.floats(-scale, scale, allow_nan=False, width=32))


def ulp(x) -> np.float32:
    return np.spacing(f32(abs(x)))


@FEW
@given(bounds, st.data())
def test_bound_round_trip_is_within_half_a_level_inside_the_bound(bound, data):
    flow = data.draw(flows(1.5 * bound))
    spec = QuantSpec("bound", float(bound))
    q, rng = quantize(flow, spec)
    assert rng is None and q.dtype == np.uint8
    back = dequantize(q, spec)
    step = 2 * float(bound) / 255
    clipped = np.clip(flow, -f32(bound), f32(bound))
    # half a level, plus float32 rounding: of the scaled value (<= 255, relative 2**-24 per op)
    # and of the dequantized value (a few ulps of the bound)
    tolerance = step / 2 + step * 255 * 2.0 ** -22 + 4 * ulp(bound)
    assert np.all(np.abs(back.astype(np.float64) - clipped) <= tolerance)


@FEW
@given(st.floats(-100, 100, allow_nan=False, width=32), st.floats(2.0 ** -7, 100, allow_nan=False, width=32), st.data())
def test_minmax_round_trip_is_within_half_a_level_of_each_flows_range(lo, span, data):
    flow = data.draw(arrays(np.float32, (3, 4, 2), elements=st.floats(float(lo), float(f32(lo + span)),
                                                                    allow_nan=False, width=32)))
    q, rng = quantize(flow, QuantSpec("minmax"))
    back = dequantize(q, QuantSpec("minmax"), rng)
    lo_xy, hi_xy = flow.reshape(-1, 2).min(0), flow.reshape(-1, 2).max(0)
    assert np.array_equal(rng, np.array([lo_xy[0], hi_xy[0], lo_xy[1], hi_xy[1]], np.float32))
    step = (hi_xy.astype(np.float64) - lo_xy) / 255
    tolerance = step / 2 + step * 255 * 2.0 ** -22 + 4 * ulp(max(abs(lo), abs(lo + span)))
    assert np.all(np.abs(back.astype(np.float64) - flow) <= tolerance)


@FEW
@given(arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 7), st.just(2))), bounds)
def test_flip_twice_is_identity_and_flip_negates_u(q, bound):
    spec = QuantSpec("bound", float(bound))
    flipped, _ = flip_horizontal(q)
    again, _ = flip_horizontal(flipped)
    assert np.array_equal(again, q)
    u, v = dequantize(q, spec)[..., 0], dequantize(q, spec)[..., 1]
    fu, fv = dequantize(flipped, spec)[..., 0], dequantize(flipped, spec)[..., 1]
    assert np.array_equal(fv, v[:, ::-1])
    # exact in real arithmetic; in float32 both sides round once at the scale of 2 * bound
    assert np.all(np.abs(fu + u[:, ::-1]) <= 2 * ulp(2 * bound))


@FEW
@given(arrays(np.uint8, (3, 4, 2)), arrays(np.float32, 4, elements=st.floats(-50, 50, allow_nan=False, width=32)))
def test_minmax_flip_negates_u_with_the_flipped_range(q, value_range):
    lo_x, hi_x = sorted(value_range[:2])
    lo_y, hi_y = sorted(value_range[2:])
    rng = np.array([lo_x, hi_x, lo_y, hi_y], np.float32)
    flipped, frng = flip_horizontal(q, rng)
    assert np.array_equal(frng, np.array([-hi_x, -lo_x, lo_y, hi_y], np.float32))
    u = dequantize(q, QuantSpec("minmax"), rng)[..., 0]
    fu = dequantize(flipped, QuantSpec("minmax"), frng)[..., 0]
    assert np.all(np.abs(fu + u[:, ::-1]) <= 4 * ulp(max(abs(lo_x), abs(hi_x), hi_x - lo_x)))


# -- (c) the JSON files ----------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)
SHARD = re.compile(r"shard-[0-9]{5,}\.lmdb")


def spec_ok(entry: dict, stride: int) -> bool:
    """A video entry as docs/FORMAT.md section 3 defines it (the keys a reader uses)."""
    def count(key, lo):
        return type(entry.get(key)) is int and entry[key] >= lo
    return (isinstance(entry.get("id"), str) and count("num_frames", stride + 1) and count("num_flows", 1)
            and entry["num_flows"] == entry["num_frames"] - stride and count("width", 1) and count("height", 1)
            and isinstance(entry.get("shard"), str) and SHARD.fullmatch(entry["shard"]) is not None)


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory, shared_videos):
    from helpers import run_cli

    out = tmp_path_factory.mktemp("props") / "store"
    done = run_cli("extract", str(shared_videos / "part_0.mp4"), str(shared_videos / "clean_and_jerk.mp4"),
                   "--out", str(out), "--method", "farneback", "--size", "32x24", "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    return load_manifest(out)  # every entry in "videos", as a 1.1 checkpoint leaves a manifest


def load(manifest_bytes: bytes, log_bytes: bytes = b""):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST).write_bytes(manifest_bytes)
        (Path(tmp) / COMMIT_LOG).write_bytes(log_bytes)
        return load_manifest(tmp)


@FEW
@given(st.data())
def test_a_mutated_manifest_is_refused_or_read_as_written(real_manifest, data):
    manifest = json.loads(json.dumps(real_manifest))
    target = data.draw(st.sampled_from(["header", "entry"]))
    obj = manifest if target == "header" else manifest["videos"][data.draw(st.integers(0, 1))]
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = data.draw(json_values)
    raw = json.dumps(manifest).encode()
    how = data.draw(st.sampled_from(["as is", "flip", "cut"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    elif how == "cut":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    try:
        got = load(raw)
    except FormatError:
        return
    written = json.loads(raw.decode("utf-8"))  # accepted: what was read is what is there
    assert got["videos"] == sorted(written["videos"], key=lambda v: v["id"])
    assert all(spec_ok(v, written["stride"]) for v in got["videos"])
    assert {k: v for k, v in got.items() if k != "videos"} == {k: v for k, v in written.items() if k != "videos"}


@FEW
@given(st.data())
def test_a_mutated_commit_line_is_refused_or_skipped_never_misread(real_manifest, data):
    header = {**real_manifest, "videos": []}
    lines = [json.dumps(v, sort_keys=True).encode() for v in real_manifest["videos"]]
    n = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["drop key", "replace value", "flip", "cut line", "cut log"]))
    if how in ("drop key", "replace value"):
        entry = json.loads(lines[n])
        key = data.draw(st.sampled_from(sorted(entry)))
        if how == "drop key":
            del entry[key]
        else:
            entry[key] = data.draw(json_values)
        lines[n] = json.dumps(entry).encode()
    elif how == "flip":
        i = data.draw(st.integers(0, len(lines[n]) - 1))
        lines[n] = lines[n][:i] + bytes([lines[n][i] ^ data.draw(st.integers(1, 255))]) + lines[n][i + 1:]
        lines[n] = lines[n].replace(b"\n", b" ")
    elif how == "cut line":
        lines[n] = lines[n][:data.draw(st.integers(0, len(lines[n]) - 1))]
    log = b"".join(line + b"\n" for line in lines)
    if how == "cut log":
        log = log[:data.draw(st.integers(0, len(log) - 1))]
    # what the spec reads (section 9): complete lines that are UTF-8 JSON objects with an "id"
    kept, bad_id = {}, False
    for line in log.split(b"\n")[:-1]:
        try:
            e = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if isinstance(e, dict) and "id" in e:
            if isinstance(e["id"], str):
                kept[e["id"]] = e
            else:
                bad_id = True  # an entry whose id is no string breaks section 3
    try:
        got = load(json.dumps(header).encode(), log)
    except FormatError:
        return  # a line that parses but breaks the spec: refused, naming the file and line
    assert not bad_id
    assert got["videos"] == [kept[k] for k in sorted(kept)]
    assert all(spec_ok(v, header["stride"]) for v in got["videos"])
