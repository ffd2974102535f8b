"""mmaction2 reads a store through flowstore.integrations.mmaction2 (checked with mmaction2's own
RawframeDataset / SampleFrames / RawFrameDecode against the exported rawframes tree), the README's
config snippet runs, and ``flowstore export --to webdataset`` reads back through webdataset."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import flowstore
from conftest import require_package
from flowstore.data.rawframes import export_rawframes
from helpers import REPO, run_cli, small_store

# "cls b/v 2%": whitespace, which mmaction2's annotation lines cannot hold, and the escape character
IDS = {"part_0": 0, "cls_a/v.1": 1, "cls b/v 2%": 2}


@pytest.fixture(scope="module")
def store_and_tree(tmp_path_factory, shared_videos):
    root = tmp_path_factory.mktemp("interop")
    store = small_store(root / "store", {vid: shared_videos / "part_0.mp4" for vid in IDS})
    tree = export_rawframes(store, root / "rawframes", labels=IDS, sync=False)
    return store, tree


def _dataset(tree: Path, modality: str, decode: dict, clip_len: int = 1, init: dict | None = None):
    require_package("mmaction")
    import flowstore.integrations.mmaction2  # noqa: F401 (registers the transforms)
    from mmaction.datasets import RawframeDataset
    from mmengine.registry import init_default_scope

    init_default_scope("mmaction")  # what a config's default_scope = 'mmaction' does
    pipeline = ([init] if init else []) + [
        dict(type="SampleFrames", clip_len=clip_len, frame_interval=2, num_clips=3, test_mode=True), decode]
    lst, tmpl = ("rgb_list.txt", "img_{:05}.jpg") if modality == "RGB" else ("flow_list.txt", "flow_{}_{:05d}.jpg")
    return RawframeDataset(ann_file=str(tree / lst), pipeline=pipeline, data_prefix=dict(img=str(tree)),
                           filename_tmpl=tmpl, modality=modality, test_mode=True)


@pytest.mark.parametrize("modality,clip_len", [("RGB", 1), ("Flow", 5)])
def test_mmaction2_same_pixels_as_rawframedecode(store_and_tree, modality, clip_len):
    """The same config with RawFrameDecode swapped for FlowstoreDecode gives the same frame
    indices and the same pixels (mmaction2's 1-based rawframe numbering kept)."""
    store, tree = store_and_tree
    files = _dataset(tree, modality, dict(type="RawFrameDecode"), clip_len)
    ours = _dataset(tree, modality, dict(type="FlowstoreDecode", store=str(store)), clip_len)
    with_init = _dataset(tree, modality, dict(type="FlowstoreDecode"), clip_len,
                         init=dict(type="FlowstoreInit", store=str(store), prefix=str(tree)))
    assert len(files) == len(ours) == len(IDS)
    assert sorted(Path(files[i]["frame_dir"]).relative_to(tree).as_posix() for i in range(len(files))) == sorted(
        ["part_0", "cls_a/v.1", "cls%20b/v%202%25"])  # the frame directories, whitespace and % escaped
    for i in range(len(files)):
        a, b, c = files[i], ours[i], with_init[i]
        assert a["frame_inds"].min() >= 1  # 1-based, as the rawframes files
        assert np.array_equal(a["frame_inds"], b["frame_inds"]) and np.array_equal(a["frame_inds"], c["frame_inds"])
        assert a["total_frames"] == b["total_frames"] == c["total_frames"]
        assert len(a["imgs"]) == len(b["imgs"]) == 3 * clip_len
        for x, y, z in zip(a["imgs"], b["imgs"], c["imgs"]):
            assert x.dtype == y.dtype == np.uint8 and x.shape == y.shape == (48, 64, 3 if modality == "RGB" else 2)
            assert np.array_equal(x, y) and np.array_equal(x, z)
        assert a["img_shape"] == b["img_shape"]


def test_readme_mmaction2_snippet_runs(store_and_tree, tmp_path):
    """The config snippet in README.md ("Using flowstore from mmaction2"), with the paths put in,
    builds mmaction2's dataset and yields packed samples."""
    require_package("mmaction")
    from mmengine.config import Config
    from mmaction.registry import DATASETS
    from mmengine.registry import init_default_scope

    store, tree = store_and_tree
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- example:mmaction2 -->\n```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("data/ucf101_store", str(store)).replace("data/ucf101_rawframes", str(tree))
    config = tmp_path / "tsn_flowstore.py"
    config.write_text(snippet, encoding="utf-8")
    init_default_scope(cfg_scope := "mmaction")
    cfg = Config.fromfile(str(config))
    assert cfg.default_scope == cfg_scope
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    sample = dataset[0]
    assert sample["inputs"].shape[0] == 3 and sample["inputs"].shape[-2] == 256  # 3 clips, resized
    assert int(sample["data_samples"].gt_label) in IDS.values()


def test_webdataset_export_reads_back(store_and_tree, tmp_path):
    """Tar shards read through webdataset: every record's bytes and pixels, entry and settings."""
    wds = require_package("webdataset")
    import cv2

    store, _ = store_and_tree
    out = tmp_path / "wds"
    r = run_cli("export", str(store), str(out), "--to", "webdataset", "--shard-size", "100KB")
    assert r.returncode == 0, r.stderr
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert 2 <= len(shards) <= len(IDS)  # whole videos: a new shard once one passes the shard size
    seen = set()
    with flowstore.open_store(store) as s:
        for sample in wds.WebDataset(shards, shardshuffle=False).decode("rgb8"):
            entry, settings = sample["entry.json"], sample["settings.json"]
            vid = entry["id"]
            seen.add(vid)
            assert entry == s.entry(vid)
            assert settings == {k: v for k, v in s.manifest.items() if k != "videos"}
            rgb = sorted(k for k in sample if k.startswith("rgb."))
            assert len(rgb) == s.num_frames(vid)
            for k in rgb:
                i = int(k.split(".")[1])
                # webdataset's own decoder (PIL) vs flowstore's (OpenCV): same JPEG, within a level
                assert sample[k].dtype == np.uint8 and np.abs(sample[k].astype(np.int16) - s.frame(vid, i)).max() <= 2
        raw = list(wds.WebDataset(shards, shardshuffle=False))
        for sample in raw:
            vid = json.loads(sample["entry.json"])["id"]
            for i in range(s.num_flows(vid)):
                xs, ys = s.flow_bytes(vid, [i])
                assert sample[f"flow_x.{i:06d}.jpg"] == xs[0] and sample[f"flow_y.{i:06d}.jpg"] == ys[0]
                q = np.dstack([cv2.imdecode(np.frombuffer(sample[f"flow_{c}.{i:06d}.jpg"], np.uint8),
                                            cv2.IMREAD_GRAYSCALE) for c in "xy"])
                assert np.array_equal(q, s.flow_q(vid, i))
            assert sample[f"rgb.{0:06d}.jpg"] == s.frame_bytes(vid, 0)
    assert seen == set(IDS)
