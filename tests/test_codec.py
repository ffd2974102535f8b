"""Codecs, and the error quantization + codec add on the shared ground-truth flow."""
import numpy as np
import pytest

from flowstore.codec import decode_gray, decode_rgb, encode_gray, encode_rgb
from flowstore.flo import read_flo, valid_mask
from flowstore.quantize import QuantSpec, dequantize, quantize


def roundtrip(flow, spec, codec, quality=None):
    q, r = quantize(flow, spec)
    h, w = q.shape[:2]
    planes = [decode_gray(encode_gray(np.ascontiguousarray(q[..., c]), codec, quality), codec, (h, w)) for c in (0, 1)]
    return dequantize(np.dstack(planes), spec, r)


def test_lossless_codecs_are_exact():
    plane = np.random.default_rng(2).integers(0, 256, (33, 65), dtype=np.uint8)
    for codec in ("png", "raw"):
        np.testing.assert_array_equal(decode_gray(encode_gray(plane, codec), codec, plane.shape), plane)
    rgb = np.random.default_rng(3).integers(0, 256, (17, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_rgb(encode_rgb(rgb, "png"), "png"), rgb)
    np.testing.assert_array_equal(decode_rgb(encode_rgb(rgb, "raw"), "raw", (17, 9)), rgb)
    # a JPEG keeps colour order: a pure red frame stays red
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    back = decode_rgb(encode_rgb(red, "jpeg", 95))
    assert back[..., 0].mean() > 240 and back[..., 2].mean() < 15


def test_codec_errors():
    with pytest.raises(ValueError, match="unknown codec 'webp'"):
        encode_gray(np.zeros((2, 2), np.uint8), "webp")
    with pytest.raises(ValueError, match="quality"):
        encode_gray(np.zeros((2, 2), np.uint8), "jpeg", 101)
    with pytest.raises(ValueError, match="could not decode"):
        decode_gray(b"garbage", "png")


def test_quantization_with_png_or_raw_adds_at_most_0_1_px(flow_gt_dir):
    spec = QuantSpec("bound", 20.0)
    for pair in sorted(p for p in flow_gt_dir.iterdir() if p.is_dir()):
        gt = read_flo(pair / "flow.flo")
        ok = valid_mask(gt)
        gt = np.where(ok[..., None], gt, 0).astype(np.float32)
        clipped = np.clip(gt, -20, 20)
        epe = {}
        for codec, quality in (("raw", None), ("png", None), ("jpeg", 95)):
            rec = roundtrip(gt, spec, codec, quality)
            epe[codec] = float(np.linalg.norm(rec - clipped, axis=-1)[ok].mean())
        assert epe["raw"] <= 0.1, (pair.name, epe)
        assert epe["png"] == epe["raw"]
        # rounding alone is bounded by half a step per component
        assert epe["raw"] <= np.hypot(20 / 255, 20 / 255)
        assert epe["jpeg"] >= epe["png"]
