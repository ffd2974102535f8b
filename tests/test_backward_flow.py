"""``extract --direction forward|backward|both`` (format 1.2): backward flow i goes from frame
i + stride to frame i and is the engine run on the swapped pair, stored as the kinds
flow_bx / flow_by (/ flow_brng); resume, verify, merge and the reader cover them."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import flowstore
from flowstore.cli.main import cli
from flowstore.cli.recipe import stage_argv
from flowstore.decode import FrameResize, read_frames
from flowstore.errors import InputError
from flowstore.extract import ExtractConfig, VideoJob, run_extract
from flowstore.flow import build_flow
from flowstore.quantize import QuantSpec, quantize
from flowstore.store import format as fmt
from flowstore.store.merge import merge_stores
from flowstore.store.records import record_counts
from flowstore.store.verify import verify_store
from flowstore.store.writer import SettingsMismatchError

W, H, T, SHIFT = 64, 48, 5, 2  # frames shift the texture left by SHIFT px: forward u = -SHIFT


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_shift_video(tmp_path_factory.mktemp("video") / "shift.avi")


def write_shift_video(path: Path) -> Path:
    """A tiny video of a constant translation: frame t shows texture[:, SHIFT*t : SHIFT*t + W]."""
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (H, W + SHIFT * T, 3), dtype=np.uint8), (5, 5), 1.5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for t in range(T):
        writer.write(np.ascontiguousarray(texture[:, SHIFT * t:SHIFT * t + W]))
    writer.release()
    return path


def extract(out, video, **settings):
    settings.setdefault("method", "farneback")
    settings = {"flow_codec": "raw", "frame_codec": "png", **settings}
    cfg = ExtractConfig(out=str(out), workers=1, **settings)
    summary = run_extract([VideoJob("v", str(video))], cfg, show_progress=False)
    assert not summary.failures, summary.failures
    return summary


FAST_TVL1 = {"nscales": 3, "warps": 3, "outerIterations": 4, "innnerIterations": 10}  # a loaded CPU


@pytest.mark.parametrize("method,engine,params,options", [("farneback", "opencv", {}, {}),
                                                          ("tvl1", "torch", FAST_TVL1, {"batch_size": 8})])
def test_backward_records_are_the_engine_on_the_swapped_pair(tmp_path, video, method, engine, params, options):
    device = "cpu" if engine == "torch" else None
    extract(tmp_path / "s", video, method=method, engine=engine, device=device, flow_params=params,
            flow_options=options, directions=fmt.DIRECTIONS)
    frames = read_frames(video)
    estimator = build_flow(method, engine=engine, device=device, params=dict(params), **options)
    prepared = [estimator.prepare(f) for f in frames]
    # the same batch as the extraction (all 4 pairs in one batch), first and second frames exchanged
    forward = estimator.compute(prepared[:-1], prepared[1:])
    backward = estimator.compute(prepared[1:], prepared[:-1])
    quant = QuantSpec()
    with flowstore.open_store(tmp_path / "s", check=True) as store:
        assert store.directions == ("forward", "backward")
        assert store.manifest["directions"] == ["forward", "backward"]
        assert store.manifest["format_version"] == "1.2"
        for i in range(store.num_flows("v")):
            np.testing.assert_array_equal(store.flow_q("v", i), quantize(forward[i], quant)[0])
            np.testing.assert_array_equal(store.flow_q("v", i, "backward"), quantize(backward[i], quant)[0])
            # sanity of the direction (not how it is computed): the texture moves left by SHIFT
            # px, so backward flow, frame i+1 -> frame i, moves it right by SHIFT
            inner = (slice(8, H - 8), slice(8, W - 8))
            fwd = store.flow("v", i)[inner].mean(axis=(0, 1))
            bwd = store.flow("v", i, direction="backward")[inner].mean(axis=(0, 1))
            np.testing.assert_allclose(fwd, [-SHIFT, 0], atol=0.35)
            np.testing.assert_allclose(bwd, [SHIFT, 0], atol=0.35)
            assert not np.array_equal(store.flow_q("v", i, "backward"), 255 - store.flow_q("v", i))  # not -forward


def test_minmax_backward_ranges_and_verify(tmp_path, video):
    extract(tmp_path / "s", video, directions=fmt.DIRECTIONS, quant=QuantSpec("minmax"))
    root = tmp_path / "s"
    with flowstore.open_store(root, check=True) as store:
        entry = store.entry("v")
        lo_x, hi_x = store.flow_range("v", 1, "backward")[:2]
        assert lo_x < SHIFT < hi_x  # the backward range brackets +SHIFT
        assert store.flow_range("v", 1)[0] < -SHIFT < store.flow_range("v", 1)[1]
    counts = record_counts(entry, "minmax", fmt.DIRECTIONS)
    assert [k for k, _ in counts] == ["rgb", "flow_x", "flow_y", "flow_range", "flow_bx", "flow_by", "flow_brng"]
    report = verify_store(root, decode=True)
    assert report.ok and report.records == T + 6 * (T - 1)
    # verify reads the backward kinds: a backward record's bytes changed is caught
    import lmdb  # the store's backend
    env = lmdb.open(str(root / "shards" / entry["shard"]), subdir=False, lock=False)
    key = fmt.record_key("v", fmt.FLOW_BY, 2)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(key))
        value[-1] ^= 0xFF
        txn.put(key, bytes(value))
    env.close()
    problems = verify_store(root).problems
    assert any("v/flow_by/2" in p for p in problems), problems


def test_backward_only_store_and_clear_errors(tmp_path, video):
    extract(tmp_path / "s", video, directions=("backward",))
    with flowstore.open_store(tmp_path / "s") as store:
        assert store.directions == ("backward",)
        shard = store._shard("v")
        with pytest.raises(Exception):
            shard.get("v", fmt.FLOW_X, 0)  # no forward records at all
        with pytest.raises(InputError, match=r"holds no forward flow.*--direction both"):
            store.flow("v", 0)
        assert store.flow("v", 0, "backward").shape == (H, W, 2)
    assert verify_store(tmp_path / "s").ok
    with pytest.raises(InputError, match="directions"):
        ExtractConfig(out=str(tmp_path / "x"), directions=("backward", "forward"))


def test_resume_with_another_direction_is_a_settings_mismatch(tmp_path, video):
    extract(tmp_path / "s", video, directions=fmt.DIRECTIONS)
    assert extract(tmp_path / "s", video, directions=fmt.DIRECTIONS).skipped_committed == 1  # resumed
    with pytest.raises(SettingsMismatchError, match=r'directions: store has \["forward", "backward"\], '
                                                     r'this command asks for \["forward"\]'):
        extract(tmp_path / "s", video)


def test_a_store_without_the_directions_key_holds_forward_flow_and_extends(tmp_path, video):
    """A 1.1 store (no ``directions``): forward only; extending it forward is no mismatch, and
    asking it for backward is."""
    extract(tmp_path / "s", video)
    manifest_path = tmp_path / "s" / "manifest.json"
    m = json.loads(manifest_path.read_text())
    del m["directions"]
    m["format_version"] = "1.1"
    manifest_path.write_text(json.dumps(m))
    with flowstore.open_store(tmp_path / "s") as store:
        assert store.directions == ("forward",)
        with pytest.raises(InputError, match="holds no backward flow"):
            store.flow_bytes("v", [0], "backward")
    assert extract(tmp_path / "s", video).skipped_committed == 1  # resumed, nothing to do
    with pytest.raises(SettingsMismatchError, match="directions"):
        extract(tmp_path / "s", video, directions=fmt.DIRECTIONS)


def test_merge_keeps_backward_records(tmp_path, video):
    from tests.helpers import all_records

    extract(tmp_path / "a", video, directions=fmt.DIRECTIONS)
    other = tmp_path / "b"
    cfg = ExtractConfig(out=str(other), workers=1, method="farneback", flow_codec="raw", frame_codec="png",
                        directions=fmt.DIRECTIONS)
    run_extract([VideoJob("w", str(video))], cfg, show_progress=False)
    merge_stores([tmp_path / "a", other], tmp_path / "m")
    merged = all_records(tmp_path / "m")
    assert {k for _, k, _ in merged} == {"rgb", "flow_x", "flow_y", "flow_bx", "flow_by"}
    assert merged == {**all_records(tmp_path / "a"), **all_records(other)}
    with pytest.raises(SettingsMismatchError, match="directions"):
        extract(tmp_path / "f", video)
        merge_stores([tmp_path / "a", tmp_path / "f"], tmp_path / "m2")


def test_cli_and_recipe_direction(tmp_path, video):
    runner = CliRunner()
    help_text = runner.invoke(cli, ["extract", "--help"]).output
    assert "--direction [forward|backward|both]" in help_text
    result = runner.invoke(cli, ["extract", str(video), "--out", str(tmp_path / "s"), "--method", "farneback",
                                 "--direction", "both", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["directions"] == ["forward", "backward"]
    bad = runner.invoke(cli, ["extract", str(video), "--out", str(tmp_path / "t"), "--direction", "sideways"])
    assert bad.exit_code == 2 and "sideways" in bad.output
    from flowstore.cli.extract import command

    argv = stage_argv(command, {"inputs": [str(video)], "out": "x", "direction": "both"}, "extract")
    assert argv[argv.index("--direction") + 1] == "both"


def test_key_limit_derives_from_the_longest_kind():
    longest = max(fmt.KINDS, key=len)
    assert len(longest) == len(fmt.FLOW_RANGE) == 10  # the backward kinds keep the 1.0/1.1 limit
    assert fmt.MAX_VIDEO_ID_BYTES == 511 - len(f"/{longest}/") - 6 == 493
    vid = "a" * fmt.MAX_VIDEO_ID_BYTES
    for kind in fmt.KINDS:
        assert len(fmt.record_key(vid, kind, 999999)) <= fmt.MAX_LMDB_KEY_BYTES


def test_sources_without_backward_flow_say_so(tmp_path, video):
    from flowstore.bench.loader import InMemorySource
    from flowstore.data import StoreClipDataset
    from flowstore.data.rawframes import RawframesReader, export_rawframes

    extract(tmp_path / "s", video, directions=fmt.DIRECTIONS, frame_codec="jpeg", flow_codec="jpeg")
    tree = export_rawframes(tmp_path / "s", tmp_path / "tree")
    rawframes = RawframesReader(tree)
    assert rawframes.directions == ("forward",)
    with pytest.raises(InputError, match=f"rawframes tree {tree} has no backward flow"):
        rawframes.flow_bytes("v", [0], "backward")
    with pytest.raises(InputError, match="bidirectional stacking needs backward flow.*--direction both"):
        StoreClipDataset(rawframes, None, modality="flow", sampling="stack", stacking="bidirectional", length=4)
    memory = InMemorySource(tmp_path / "s", {"v": (set(), {0, 1})})
    assert memory.directions == ("forward",)
    with pytest.raises(InputError, match="in-memory copy of .* has no backward flow"):
        memory.flow_range("v", 0, "backward")
