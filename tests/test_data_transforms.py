"""Transforms: flip negates u, 10-crop shapes and order, multi-scale crop, flow values."""
import numpy as np
import pytest

from flowstore.data.transforms import (
    TEN_CROP_ORDER, CenterCrop, Clip, MultiScaleCrop, RandomHorizontalFlip, ResizeClip, TenCrop, finalize,
    eval_transform, fixed_offsets, flow_values, hflip, subtract_mean_flow, train_transform,
)
from flowstore.quantize import QuantSpec, dequantize, quantize


def coordinate_clip(S=2, W=40, H=30, L=2):
    """rgb channel 0 = x, channel 1 = y, channel 2 = snippet; flow x = 100 + x, flow y = y."""
    ys, xs = np.mgrid[0:H, 0:W]
    rgb = np.zeros((S, 3, H, W), np.uint8)
    rgb[:, 0], rgb[:, 1] = xs, ys
    rgb[:, 2] = np.arange(S)[:, None, None]
    flow = np.zeros((S, 2 * L, H, W), np.uint8)
    flow[:, 0::2] = (100 + xs)[None, None]
    flow[:, 1::2] = ys[None, None]
    return Clip(rgb=rgb, flow=flow)


def test_flip_mirrors_and_maps_qx_to_255_minus_qx():
    clip = coordinate_clip()
    f = hflip(clip)
    W = 40
    np.testing.assert_array_equal(f.rgb[:, 0, :, 0], np.full((2, 30), W - 1))  # mirrored
    np.testing.assert_array_equal(f.flow[:, 0::2], 255 - clip.flow[..., ::-1][:, 0::2])
    np.testing.assert_array_equal(f.flow[:, 1::2], clip.flow[..., ::-1][:, 1::2])  # v unchanged
    np.testing.assert_array_equal(hflip(f).flow, clip.flow)


def test_flip_of_a_constant_translation_negates_u_exactly():
    spec = QuantSpec("bound", 20.0)
    flow = np.zeros((16, 24, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -1.5  # known translation: 3 px right, 1.5 px up
    q, _ = quantize(flow, spec)
    clip = Clip(flow=np.moveaxis(q, -1, 0)[None].copy())  # (1, 2, H, W)
    plain = flow_values(clip.flow, spec, "pixels")
    flipped = flow_values(RandomHorizontalFlip(p=1.0)(clip, np.random.default_rng(0)).flow, spec, "pixels")
    u = dequantize(q, spec)[..., 0]
    assert abs(u.mean() - 3.0) <= 20 / 255
    np.testing.assert_allclose(flipped[0, 0], -plain[0, 0], atol=1e-5)
    np.testing.assert_allclose(flipped[0, 1], plain[0, 1], atol=1e-6)
    assert flipped[0, 0].mean() < -2.9 and plain[0, 0].mean() > 2.9


def test_flip_with_minmax_ranges():
    spec = QuantSpec("minmax")
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(8, 10, 2)).astype(np.float32) + np.float32([2.0, 0.5])
    q, r = quantize(flow, spec)
    clip = Clip(flow=np.moveaxis(q, -1, 0)[None].copy(), flow_range=r[None, None])
    plain = flow_values(clip.flow, spec, "pixels", clip.flow_range)
    f = hflip(clip)
    flipped = flow_values(f.flow, spec, "pixels", f.flow_range)
    np.testing.assert_allclose(flipped[0, 0], -plain[0, 0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(flipped[0, 1], plain[0, 1][:, ::-1], atol=1e-5)


def test_random_flip_probability_and_determinism():
    clip = coordinate_clip()
    t = RandomHorizontalFlip(0.5)
    flips = [t(clip, np.random.default_rng(s)).rgb[0, 0, 0, 0] == 39 for s in range(200)]
    assert 60 < sum(flips) < 140
    assert RandomHorizontalFlip(0.0)(clip, np.random.default_rng(0)) is clip
    a = t(clip, np.random.default_rng(5)).rgb
    b = t(clip, np.random.default_rng(5)).rgb
    np.testing.assert_array_equal(a, b)


def test_ten_crop_shapes_and_order():
    clip = coordinate_clip(S=2, W=40, H=30, L=2)
    out = TenCrop((16, 12))(clip)
    assert out.rgb.shape == (20, 3, 12, 16) and out.flow.shape == (20, 4, 12, 16)
    assert TEN_CROP_ORDER[:5] == ("top_left", "top_right", "bottom_left", "bottom_right", "center")
    corners = [(0, 0), (24, 0), (0, 18), (24, 18), (12, 9)]  # (x, y) of each region's top-left
    for s in range(2):
        for c in range(10):
            view = out.rgb[s * 10 + c]  # snippet-major
            x0, y0 = corners[c % 5]
            assert (view[2] == s).all()
            xs = np.arange(x0, x0 + 16)
            if c >= 5:  # the same region, mirrored, with u negated
                xs = xs[::-1]
                np.testing.assert_array_equal(out.flow[s * 10 + c, 0::2], np.broadcast_to(255 - (100 + xs), (2, 12, 16)))
            else:
                np.testing.assert_array_equal(out.flow[s * 10 + c, 0::2], np.broadcast_to(100 + xs, (2, 12, 16)))
            np.testing.assert_array_equal(view[0, 0], xs)
            np.testing.assert_array_equal(view[1, :, 0], np.arange(y0, y0 + 12))


def test_ten_crop_then_finalize_gives_view_tensors():
    spec = QuantSpec()
    out = finalize(eval_transform(16, ten_crop=True)(coordinate_clip(S=3), np.random.default_rng(0)), spec)
    assert tuple(out["rgb"].shape) == (30, 3, 16, 16) and tuple(out["flow"].shape) == (30, 4, 16, 16)
    with pytest.raises(ValueError, match="larger than"):
        TenCrop(64)(coordinate_clip())


def test_multiscale_crop_sizes_and_positions():
    t = MultiScaleCrop(size=(112, 112))
    W, H = 340, 256
    allowed = {int(256 * s) for s in (1, 0.875, 0.75, 0.66)}
    seen = set()
    for seed in range(300):
        x, y, w, h = t.sample(W, H, np.random.default_rng(seed))
        assert w in allowed and h in allowed
        order = sorted(allowed, reverse=True)
        assert abs(order.index(w) - order.index(h)) <= 1  # max_distort = 1
        assert (x, y) in fixed_offsets(W, H, w, h, more=True)
        seen.add((w, h))
    assert len(seen) == 10  # 4 squares + 2 x 3 neighbours
    out = t(coordinate_clip(S=2, W=W, H=H), np.random.default_rng(0))
    assert out.rgb.shape == (2, 3, 112, 112) and out.flow.shape == (2, 4, 112, 112)


def test_train_transform_same_crop_for_both_modalities_and_snippets():
    clip = coordinate_clip(S=3, W=64, H=48)
    out = train_transform(32)(clip, np.random.default_rng(3))
    assert out.rgb.shape == (3, 3, 32, 32) and out.flow.shape == (3, 4, 32, 32)
    np.testing.assert_array_equal(out.rgb[0, :2], out.rgb[2, :2])
    # flow x channel = 100 + image x (or its flip): the same geometry as the RGB crop
    rx = out.rgb[0, 0].astype(int)
    fx = out.flow[0, 0].astype(int)
    assert np.all((np.abs(fx - (100 + rx)) <= 1) | (np.abs(fx - (255 - 100 - rx)) <= 1))


def test_resize_and_center_crop():
    clip = coordinate_clip(S=1, W=40, H=30)
    assert ResizeClip(15)(clip).rgb.shape == (1, 3, 15, 20)  # shorter side
    assert ResizeClip((10, 12))(clip).flow.shape == (1, 4, 12, 10)
    c = CenterCrop(10)(clip)
    assert c.rgb[0, 0, 0, 0] == 15 and c.rgb[0, 1, 0, 0] == 10


def test_flow_values_and_mean_subtraction():
    spec = QuantSpec("bound", 20.0)
    q = np.full((1, 4, 4, 4), 128, np.uint8)
    q[0, 0] = 200
    np.testing.assert_allclose(flow_values(q, spec, "q128")[0, 0], (200 - 128) / 128)
    np.testing.assert_allclose(flow_values(q, spec, "pixels")[0, 0], 200 * 40 / 255 - 20, rtol=1e-6)
    assert flow_values(q, spec, "uint8") is q
    f = np.random.default_rng(0).normal(size=(2, 6, 5, 5)).astype(np.float32) + 3
    field = subtract_mean_flow(f, "field")
    np.testing.assert_allclose(field.mean(axis=(2, 3)), 0, atol=1e-5)
    stack = subtract_mean_flow(f, "stack")
    np.testing.assert_allclose(stack[:, 0::2].mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(stack[:, 1::2].mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(stack[:, 0] - stack[:, 2], f[:, 0] - f[:, 2], atol=1e-5)  # one shift per stack
    with pytest.raises(ValueError, match="float flow"):
        subtract_mean_flow(q, "field")
