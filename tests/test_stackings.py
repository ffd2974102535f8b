"""Stackings of a flow snippet (flowstore.data.sampling, "Stackings"; Simonyan & Zisserman 2014
sec. 3.1): ``stack``, ``bidirectional`` and ``trajectory``, on synthetic flow fields whose motion
is known, read through the loaders from an in-memory RecordSource (raw codec, bound 20)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowstore.codec import encode_gray
from flowstore.data import StoreClipDataset
from flowstore.data.sampling import STACKINGS, list_stackings
from flowstore.data.transforms import Compose, RandomHorizontalFlip, trajectory_stack
from flowstore.errors import InputError, UnknownNameError
from flowstore.quantize import QuantSpec, dequantize, quantization_step, quantize
from flowstore.store.source import RecordSource

W, H = 64, 56
QUANT = QuantSpec("bound", 20.0)
STEP = quantization_step(QUANT)  # one level, in pixels


class FieldSource:
    """A RecordSource holding given float flow fields (quantized, raw-coded) of one video ``v``."""

    flow_codec = frame_codec = "raw"
    quant = QUANT

    def __init__(self, forward, backward=None, stride: int = 1, root: str = "fields"):
        self.root = Path(root)
        self.videos = ["v"]
        self.stride = stride
        self.q = {"forward": [quantize(f, QUANT)[0] for f in forward]}
        if backward is not None:
            self.q["backward"] = [quantize(f, QUANT)[0] for f in backward]
        self.directions = tuple(d for d in ("forward", "backward") if d in self.q)

    @classmethod
    def of_q(cls, q: dict, **kw):
        src = cls([], **kw)
        src.q = q
        src.directions = tuple(d for d in ("forward", "backward") if d in q)
        return src

    def mirrored(self) -> "FieldSource":
        """The source of the mirrored video: every field mirrored, u negated (q_x -> 255 - q_x)."""
        def mirror(q):
            m = q[:, ::-1].copy()
            m[..., 0] = 255 - m[..., 0]
            return m
        return FieldSource.of_q({d: [mirror(q) for q in qs] for d, qs in self.q.items()}, stride=self.stride)

    def num_flows(self, video):
        return len(self.q["forward"] if "forward" in self.q else self.q["backward"])

    def num_frames(self, video):
        return self.num_flows(video) + self.stride

    def frame_size(self, video):
        return W, H

    def frame_bytes(self, video, index):
        return bytes(W * H * 3)

    def flow_bytes(self, video, indices, direction="forward"):
        if direction not in self.directions:
            raise InputError(f"no {direction} flow here")
        qs = [self.q[direction][int(i)] for i in indices]
        return ([encode_gray(np.ascontiguousarray(q[..., 0]), "raw") for q in qs],
                [encode_gray(np.ascontiguousarray(q[..., 1]), "raw") for q in qs])

    def flow_range(self, video, index, direction="forward"):
        return None

    def shard_of(self, video):
        return None

    def close(self):
        pass


def constant(u, v):
    field = np.empty((H, W, 2), np.float32)
    field[..., 0], field[..., 1] = u, v
    return field


def rotation(theta_deg: float, centre=(31.5, 27.5)) -> np.ndarray:
    """d(p) = R(θ)(p - c) - (p - c): frame t+1 is frame t rotated by θ about c."""
    t = np.deg2rad(theta_deg)
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = x - centre[0], y - centre[1]
    return np.dstack([np.cos(t) * dx - np.sin(t) * dy - dx, np.sin(t) * dx + np.cos(t) * dy - dy]).astype(np.float32)


def sample(src, stacking="stack", *, length=4, values="pixels", transform=None, mean_subtract=None):
    ds = StoreClipDataset(src, None, modality="flow", sampling="stack", stacking=stacking, length=length,
                          train=False, flow_values=values, transform=transform, mean_subtract=mean_subtract,
                          read_ahead=0)
    item = ds[0]
    return item["flow"].numpy()[0], int(item["starts"][0])


def test_one_table_of_stackings():
    assert list_stackings() == ["bidirectional", "stack", "trajectory"] == STACKINGS.names()
    src = FieldSource([constant(1, 0)] * 6)
    with pytest.raises(UnknownNameError, match=r"unknown stacking 'zigzag'; choose from \['bidirectional', 'stack', 'trajectory'\]"):
        sample(src, "zigzag")


def test_a_constant_translation_gives_identical_stack_and_trajectory_stacks():
    src = FieldSource([constant(1.5, -0.75)] * 8)
    for values in ("uint8", "pixels"):
        plain, _ = sample(src, "stack", values=values)
        traj, _ = sample(src, "trajectory", values=values)
        np.testing.assert_array_equal(plain, traj)
    np.testing.assert_allclose(traj[0::2], 1.5, atol=STEP / 2)
    np.testing.assert_allclose(traj[1::2], -0.75, atol=STEP / 2)


def test_a_rotation_gives_a_trajectory_stack_unlike_the_stack_matching_the_hand_derivation():
    theta, c = 8.0, np.array([31.5, 27.5])
    field = rotation(theta, c)
    src = FieldSource([field] * 8)
    plain, start = sample(src, "stack")
    traj, _ = sample(src, "trajectory")
    t = np.deg2rad(theta)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    # hand-derived: every flow is the same rotation, so p_k = c + R^k (p_0 - c), and channel pair k
    # is d(p_k) = (R - I) R^k (p_0 - c); the plain stack is d(p_0) in every pair
    for x0, y0 in [(31, 13), (45, 27), (20, 36), (40, 40)]:
        r0 = np.array([x0, y0], float) - c
        for k in range(4):
            expected = (R - np.eye(2)) @ np.linalg.matrix_power(R, k) @ r0
            np.testing.assert_allclose(traj[2 * k:2 * k + 2, y0, x0], expected, atol=2.5 * STEP)
            np.testing.assert_allclose(plain[2 * k:2 * k + 2, y0, x0], (R - np.eye(2)) @ r0, atol=STEP)
        # the last pair has moved by 3θ along the circle: |(R - I)(R^3 - I) r0| ~ 0.35 |r0| θ from
        # the plain stack's value, many quantization levels
        apart = np.linalg.norm((R - np.eye(2)) @ (np.linalg.matrix_power(R, 3) - np.eye(2)) @ r0)
        assert apart > 4 * STEP
        assert np.linalg.norm(traj[6:8, y0, x0] - plain[6:8, y0, x0]) > apart - 3 * STEP
    assert start == (8 - 4 + 1) // 2


def test_trajectory_stack_follows_the_flow_bilinearly():
    """A field that is linear in x (exact for bilinear sampling): u = a x, v = 0, so x_{k+1} =
    x_k (1 + a) and channel k is a x_0 (1 + a)^k."""
    a = 0.05
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    field = np.dstack([a * x, np.zeros_like(x)])
    out = trajectory_stack(np.stack([field] * 3))
    for x0 in (3, 10, 20):
        for k in range(3):
            assert out[k, 5, x0, 0] == pytest.approx(a * x0 * (1 + a) ** k, rel=1e-5)
    # leaving the image: the border value (clamped), never an index error
    far = trajectory_stack(np.stack([constant(30, 0)] * 3))
    assert np.isfinite(far).all()


def test_bidirectional_channel_order_and_indices():
    """Flow i forward = (i + 1, 1) / 4 px, backward = -(i + 1, 1) / 4 px: each channel names its
    flow. L = 4, 10 flows: the test start is floor(7 / 2) = 3, so tau = 3 + 2 = 5: channels 0-3 are
    backward flows 3, 4 (frames 4 -> 3, 5 -> 4: the frames tau - L/2 .. tau), channels 4-7 forward
    flows 5, 6 (frames 5 -> 6, 6 -> 7: tau .. tau + L/2)."""
    n = 10
    forward = [constant((i + 1) / 4, 0.25) for i in range(n)]
    backward = [constant(-(i + 1) / 4, -0.25) for i in range(n)]
    stack, start = sample(FieldSource(forward, backward), "bidirectional")
    assert start == 3 and stack.shape == (8, H, W)
    expected = [-(3 + 1) / 4, -0.25, -(4 + 1) / 4, -0.25, (5 + 1) / 4, 0.25, (6 + 1) / 4, 0.25]
    np.testing.assert_allclose(stack.mean(axis=(1, 2)), expected, atol=STEP / 2)
    # stack-mean subtraction takes each half's own mean (a pan is +c forward, -c backward)
    pan = FieldSource([constant(2, -1)] * n, [constant(-2, 1)] * n)
    np.testing.assert_allclose(sample(pan, "bidirectional", mean_subtract="stack")[0], 0, atol=1e-5)
    np.testing.assert_allclose(sample(pan, "bidirectional", mean_subtract="field")[0], 0, atol=1e-5)
    np.testing.assert_allclose(sample(pan, "stack", mean_subtract="stack")[0], 0, atol=1e-5)


def test_mean_subtraction_on_a_trajectory_stack():
    src = FieldSource([rotation(8.0)] * 8)
    out, _ = sample(src, "trajectory", mean_subtract="field")
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-4)
    traj, _ = sample(src, "trajectory")
    out, _ = sample(src, "trajectory", mean_subtract="stack")
    np.testing.assert_allclose(out[0::2], traj[0::2] - traj[0::2].mean(), atol=1e-4)


def swirl(i: int) -> np.ndarray:
    """A field that is neither symmetric nor linear: a rotation about an off-centre point plus
    a sinusoid that changes with i."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    field = rotation(6.0 + i, centre=(20.0, 30.0))
    field[..., 0] += 1.5 * np.sin(y / 7 + i)
    field[..., 1] += np.cos(x / 9)
    return field


@pytest.mark.parametrize("stacking", ["stack", "bidirectional", "trajectory"])
def test_flip_equals_the_stack_of_the_mirrored_video(stacking):
    n = 8
    src = FieldSource([swirl(i) for i in range(n)], [-swirl(i) * 0.8 for i in range(n)])
    flipped, _ = sample(src, stacking, values="uint8", transform=Compose([RandomHorizontalFlip(p=1.0)]))
    mirrored, _ = sample(src.mirrored(), stacking, values="uint8")
    if stacking != "trajectory":
        np.testing.assert_array_equal(flipped, mirrored)
    else:  # requantized after sampling: at most a rounding tie apart
        diff = np.abs(flipped.astype(int) - mirrored.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99
        plain, _ = sample(src, "stack", values="uint8", transform=Compose([RandomHorizontalFlip(p=1.0)]))
        assert (plain != flipped).mean() > 0.3  # the trajectory stack is not the plain stack


def test_clear_errors():
    forward_only = FieldSource([constant(1, 0)] * 6, root="/stores/ucf101")
    with pytest.raises(InputError, match=r"bidirectional stacking needs backward flow, but store /stores/ucf101 "
                                         r"holds forward flow only.*--direction both"):
        sample(forward_only, "bidirectional")
    both = FieldSource([constant(1, 0)] * 6, [constant(-1, 0)] * 6)
    with pytest.raises(InputError, match="length must be even"):
        sample(both, "bidirectional", length=3)
    with pytest.raises(InputError, match="stride-1 store"):
        sample(FieldSource([constant(1, 0)] * 6, stride=2), "trajectory")
    with pytest.raises(InputError, match="modality 'rgb'"):
        StoreClipDataset(both, None, modality="rgb", sampling="stack", stacking="trajectory")
    assert isinstance(both, RecordSource)


def test_bidirectional_reads_a_real_store_with_backward_flow(tmp_path):
    """Through StoreReader: the backward half is the stored backward records."""
    import cv2

    from flowstore import open_store
    from flowstore.extract import ExtractConfig, VideoJob, run_extract

    path = tmp_path / "v.avi"
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (48, 90, 3), dtype=np.uint8), (5, 5), 1.5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for t in range(7):
        writer.write(np.ascontiguousarray(texture[:, 2 * t:2 * t + 64]))
    writer.release()
    cfg = ExtractConfig(out=str(tmp_path / "s"), method="farneback", workers=1, flow_codec="raw",
                        directions=("forward", "backward"))
    run_extract([VideoJob("v", str(path))], cfg, show_progress=False)
    ds = StoreClipDataset(tmp_path / "s", None, modality="flow", sampling="stack", stacking="bidirectional",
                          length=4, train=False, flow_values="uint8", read_ahead=0)
    item = ds[0]
    stack, s = item["flow"].numpy()[0], int(item["starts"][0])
    with open_store(tmp_path / "s") as store:
        for l, (direction, i) in enumerate([("backward", s), ("backward", s + 1), ("forward", s + 2), ("forward", s + 3)]):
            np.testing.assert_array_equal(stack[2 * l:2 * l + 2], store.flow_q("v", i, direction).transpose(2, 0, 1))
    forward_store = tmp_path / "f"
    run_extract([VideoJob("v", str(path))], ExtractConfig(out=str(forward_store), method="farneback", workers=1),
                show_progress=False)
    with pytest.raises(InputError, match=f"store {forward_store} holds forward flow only.*--direction both"):
        StoreClipDataset(forward_store, None, modality="flow", sampling="stack", stacking="bidirectional", length=4)
