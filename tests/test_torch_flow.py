"""Torch TV-L1 and Farneback engines against OpenCV, on the CPU.

Real-data tests take ``flow_gt_dir`` from tests/conftest.py: without ../shared/data they skip on a
developer machine and FAIL when ``CI`` is set. The synthetic tests (known translation, device
argument, registry) need no data and always run.

Pairs (chosen to keep this module well under a minute on 2 shared cores):

* ``chairs_00001`` at full size (50x50);
* ``middlebury_rubberwhale`` downscaled 2x (292x194);
* ``sintel_clean_alley_1_0002``, ``sintel_final_cave_2_0002`` and ``sintel_final_bandage_1_0035``
  downscaled 4x (256x109).

Downscaling: frames with cv2.INTER_AREA (exact f x f block means); the ground truth flow is
block-averaged the same way and divided by f (pixels shrink by f), and a block is "unknown" if
any of its pixels is (Middlebury's unknown flow; see :func:`flowstore.flo.valid_mask`).

Criteria: mean EPE of torch TV-L1 <= 1.05 x OpenCV DualTVL1's; torch Farneback <= 1.10 x
OpenCV Farneback's.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flowstore.flo import UNKNOWN_FLOW_THRESHOLD, mean_epe, read_flo, valid_mask
from flowstore.flow.registry import build_flow, resolve_engine

EPE_PAIRS = [
    ("chairs_00001", 1),
    ("middlebury_rubberwhale", 2),
    ("sintel_clean_alley_1_0002", 4),
    ("sintel_final_cave_2_0002", 4),
    ("sintel_final_bandage_1_0035", 4),
]
#: allowed ratio epe_torch / epe_opencv per method
TOLERANCE = {"tvl1": 1.05, "farneback": 1.10}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def downscale_pair(rgb1, rgb2, flow_gt, f: int):
    """Frames by INTER_AREA and GT flow by f x f block means / f; unknown if any pixel is unknown."""
    if f == 1:
        return rgb1, rgb2, flow_gt
    h, w = flow_gt.shape[0] // f, flow_gt.shape[1] // f
    frames = [cv2.resize(x[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA) for x in (rgb1, rgb2)]
    blocks = flow_gt[: h * f, : w * f].reshape(h, f, w, f, 2)
    known = valid_mask(blocks).all(axis=(1, 3))
    flow = blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32) / f
    flow[~known] = 2 * UNKNOWN_FLOW_THRESHOLD
    return frames[0], frames[1], flow


@functools.lru_cache(maxsize=None)
def load_pair(root: str, name: str, f: int):
    d = Path(root) / name
    rgb1, rgb2 = (cv2.cvtColor(cv2.imread(str(d / f"frame{i}.png")), cv2.COLOR_BGR2RGB) for i in (1, 2))
    return downscale_pair(rgb1, rgb2, read_flo(d / "flow.flo"), f)


@functools.lru_cache(maxsize=None)
def flow_of(method: str, engine: str, root: str, name: str, f: int) -> np.ndarray:
    rgb1, rgb2, _ = load_pair(root, name, f)
    return build_flow(method, engine=engine)(rgb1, rgb2)


def test_downscaled_gt_is_consistent(flow_gt_dir):
    """The block-averaged GT still explains the downscaled frames: warping frame 2 back with it
    matches frame 1 much better than zero flow does."""
    rgb1, rgb2, gt = load_pair(str(flow_gt_dir), "sintel_clean_alley_1_0002", 4)
    g1, g2 = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (rgb1, rgb2))
    h, w = g1.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    back = cv2.remap(g2, xs + gt[..., 0], ys + gt[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(back - g1).mean() < 0.5 * np.abs(g2 - g1).mean()


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
@pytest.mark.parametrize("name,factor", EPE_PAIRS)
def test_epe_matches_opencv(flow_gt_dir, method, name, factor):
    root = str(flow_gt_dir)
    gt = load_pair(root, name, factor)[2]
    epe_cv = mean_epe(flow_of(method, "opencv", root, name, factor), gt)
    flow_torch = flow_of(method, "torch", root, name, factor)
    assert flow_torch.dtype == np.float32 and flow_torch.shape == gt.shape
    epe_torch = mean_epe(flow_torch, gt)
    print(f"{method} {name} /{factor}: opencv {epe_cv:.4f}  torch {epe_torch:.4f}")
    assert epe_torch <= TOLERANCE[method] * epe_cv, (epe_torch, epe_cv)


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_batch_equals_one_at_a_time(flow_gt_dir, method):
    root = str(flow_gt_dir)
    names = ["sintel_clean_alley_1_0002", "sintel_final_cave_2_0002"]
    est = build_flow(method, engine="torch", batch_size=8)
    pairs = [load_pair(root, n, 4) for n in names]
    batched = est.compute([est.prepare(p[0]) for p in pairs], [est.prepare(p[1]) for p in pairs])
    assert batched.shape == (2, *pairs[0][2].shape) and batched.dtype == np.float32
    for k, n in enumerate(names):
        single = flow_of(method, "torch", root, n, 4)  # computed alone (batch of one)
        np.testing.assert_allclose(batched[k], single, atol=1e-4, rtol=0)


def _texture(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth random texture defined everywhere: a sum of 24 plane waves (periods 5 to 40 px),
    so that a shifted copy is exact at any subpixel shift. uint8 0..255."""
    rng = np.random.default_rng(seed)
    n = 24
    period = rng.uniform(5.0, 40.0, n)
    angle = rng.uniform(0.0, np.pi, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    kx, ky = (2 * np.pi / period) * np.cos(angle), (2 * np.pi / period) * np.sin(angle)
    waves = np.sin(x[..., None] * kx + y[..., None] * ky + phase).sum(-1)
    return np.clip(np.round(127.5 + waves * (127.5 / np.sqrt(2 * n) / 2.5)), 0, 255).astype(np.uint8)


def _translated_pair(shift: tuple[float, float], h: int = 96, w: int = 128):
    """RGB frames where frame1's pixel (x, y) is at (x + dx, y + dy) in frame2: frame2(x, y) =
    frame1(x - dx, y - dy), evaluated exactly from the texture's formula."""
    dx, dy = shift
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = (_texture(xs, ys), _texture(xs - dx, ys - dy))
    return [np.repeat(f[..., None], 3, axis=2) for f in frames]


@pytest.mark.parametrize("method,max_epe", [("tvl1", 0.08), ("farneback", 0.05)])
def test_known_translation_is_recovered(method, max_epe):
    shifts = [(3.0, -2.0), (-1.5, 2.25)]
    pairs = [_translated_pair(s) for s in shifts]
    est = build_flow(method, engine="torch", device="cpu", batch_size=2)
    flows = est.compute([est.prepare(p[0]) for p in pairs], [est.prepare(p[1]) for p in pairs])
    assert flows.shape == (2, 96, 128, 2)
    for flow, (dx, dy) in zip(flows, shifts):
        inner = flow[8:-8, 8:-8].reshape(-1, 2)  # away from the borders, where content leaves
        np.testing.assert_allclose(np.median(inner, axis=0), [dx, dy], atol=0.05)
        epe = np.sqrt(((inner - [dx, dy]) ** 2).sum(-1)).mean()
        assert epe < max_epe, (method, (dx, dy), epe)


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_device_argument(method):
    assert resolve_engine(method) == "opencv"  # OpenCV stays the default engine
    est = build_flow(method, device="cpu")  # a device selects the torch engine
    d = est.describe()
    assert d["engine"] == "torch" and d["library"] == "torch" and d["device"] == "cpu"
    assert d["library_version"] == torch.__version__ and d["batch_size"] == 8
    assert d["method"] == method and set(d["params"]) == set(build_flow(method).describe()["params"])
    rgb1, rgb2 = _translated_pair((1.0, 0.0), h=48, w=64)
    flow = est(rgb1, rgb2)
    assert flow.shape == (48, 64, 2) and flow.dtype == np.float32
    # torch.device-style strings and tensors of prepared frames work too
    est2 = build_flow(method, engine="torch", device="cpu:0", batch_size=1)
    g1, g2 = (torch.from_numpy(est2.prepare(x)) for x in (rgb1, rgb2))
    np.testing.assert_allclose(est2.compute([g1], [g2])[0], flow, atol=1e-5)
    with pytest.raises(ValueError, match="not usable"):
        build_flow(method, engine="torch", device="no-such-device")
    with pytest.raises(ValueError, match="unknown parameter"):
        build_flow(method, engine="torch", params={"no_such_param": 1})


@pytest.mark.skipif(not os.environ.get("FLOWSTORE_TEST_COMPILE"), reason="torch.compile takes ~30 s; set FLOWSTORE_TEST_COMPILE=1")
def test_tvl1_compiled_matches_eager():
    rgb1, rgb2 = _translated_pair((2.0, 1.0), h=48, w=64)
    eager = build_flow("tvl1", engine="torch")(rgb1, rgb2)
    compiled = build_flow("tvl1", engine="torch", compile=True)(rgb1, rgb2)
    assert np.abs(compiled - eager).mean() < 1e-2
