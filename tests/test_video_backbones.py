"""Video backbones: each family on a tiny clip on the CPU (shapes, frozen weights unchanged, a
saved random state dict loaded through the real loading path, the 2-channel flow init), and the
FLOP count against a hand count.

Cost: mc3_18 (the torchvision ResNet-3D family: r3d_18, mc3_18, r2plus1d_18 share the code),
s3d, swin3d_t and x3d_xs build and run one 4-frame 32x32 clip; MViT (mvit_v2_s; its input is
fixed at 16x224x224, too slow for a unit test) is built and loaded only. The other members
(r3d_18, r2plus1d_18, mvit_v1_b, swin3d_s/b, x3d_s/m/l) are constructed on the meta device
only (no memory, no time), which checks their first layer, classifier keys and FLOPs.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from flowstore.errors import InputError
from flowstore.features import video_backbones as VB
from flowstore.features.backbones import WeightsError
from flowstore.io import file_sha256


@pytest.fixture(autouse=True, scope="module")
def _two_threads(torch_two_threads):
    yield


def test_flops_of_a_small_3d_conv_by_hand():
    conv = nn.Conv3d(2, 4, kernel_size=3, bias=False)
    # input (1, 2, 5, 6, 6) -> output (1, 4, 3, 4, 4) = 192 values, each 2 * 27 multiply-adds
    assert VB.clip_flops(conv, (1, 2, 5, 6, 6)) == 2 * 192 * 2 * 27 == 20736
    strided = nn.Conv3d(3, 8, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
    # (1, 3, 4, 8, 8) -> (1, 8, 4, 4, 4) = 512 values, each 3 * 9 multiply-adds
    assert VB.clip_flops(strided, (1, 3, 4, 8, 8)) == 2 * 512 * 27


def test_the_table_lists_every_video_backbone():
    assert VB.list_video_backbones() == sorted([
        "mc3_18", "mvit_v1_b", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_b", "swin3d_s", "swin3d_t",
        "x3d_l", "x3d_m", "x3d_s", "x3d_xs"])


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18", "mvit_v1_b", "swin3d_s", "swin3d_b", "x3d_s", "x3d_m",
                                  "x3d_l"])
def test_other_members_construct_on_meta(name):
    spec = VB.VIDEO_BACKBONES[name]
    if spec.family == "pytorchvideo":
        pytest.importorskip("pytorchvideo")
    with torch.device("meta"):
        model = VB._construct(spec, 2)
    state = model.state_dict()
    assert state[f"{spec.first_conv}.weight"].shape[1] == 2
    assert not any(k.startswith(spec.classifier) for k in state)
    assert VB.clip_flops(model, [1, *VB.clip_shape(spec, 2)]) > 0


def _forward(model, shape):
    with torch.no_grad():
        return model(torch.randn(shape))


FAMILIES = [("mc3_18", 4, 32, True), ("s3d", 8, 32, True), ("swin3d_t", 4, 32, True), ("x3d_xs", 4, 32, True),
            ("mvit_v2_s", 16, 224, False)]


@pytest.mark.parametrize("name,t,size,run", FAMILIES)
def test_family_on_a_tiny_clip_and_through_the_loading_path(name, t, size, run, tmp_path):
    spec = VB.VIDEO_BACKBONES[name]
    if spec.family == "pytorchvideo":
        pytest.importorskip("pytorchvideo")
    model, info = VB.build_video_backbone(name, weights="random", seed=1, clip_len=t, crop=size)
    assert info["clip_shape"] == [3, t, size, size] and info["feature_dim"] == spec.feature_dim
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["flops_per_clip"] > 0 and info["frame_interval"] == spec.frame_interval
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if run:
        y = _forward(model, (2, 3, t, size, size))
        assert y.shape == (2, spec.feature_dim) and torch.isfinite(y).all()
        for k, v in model.state_dict().items():  # frozen: BatchNorm statistics did not move
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # a saved random state dict (with a classifier, wrapped as pytorchvideo saves it) loads back
    state = dict(before)
    state.update({f"{spec.classifier[0]}weight": torch.zeros(5, spec.feature_dim),
                  f"{spec.classifier[0]}bias": torch.zeros(5)})
    path = tmp_path / f"{name}.pth"
    torch.save({"model_state": state}, path)
    loaded, linfo = VB.build_video_backbone(name, weights=str(path), clip_len=t, crop=size, count_flops=False)
    assert linfo["weights"] == {"source": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}
    assert linfo["first_layer"] == "loaded"
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    if name in ("swin3d_t", "mvit_v2_s"):
        return  # large: the flow init is the same code, checked on the others
    # flow clips: 2 channels, the first conv the mean of the RGB filters
    flow, finfo = VB.build_video_backbone(name, in_chans=2, weights=str(path), clip_len=t, crop=size,
                                          count_flops=False)
    key = f"{spec.first_conv}.weight"
    w_rgb, w_flow = before[key], flow.state_dict()[key]
    assert finfo["first_layer"] == "cross-modality" and w_flow.shape[1] == 2
    for c in range(2):
        torch.testing.assert_close(w_flow[:, c], (w_rgb[:, 0] + w_rgb[:, 1] + w_rgb[:, 2]) / 3, rtol=0, atol=1e-7)
    if run and name == "x3d_xs":
        assert _forward(flow, (1, 2, t, size, size)).shape == (1, 2048)


def test_loading_errors_name_the_problem(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        VB.build_video_backbone("mc3_18", weights=str(tmp_path / "none.pth"))
    path = tmp_path / "bad.pth"
    torch.save({"stem.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        VB.build_video_backbone("mc3_18", weights=str(path), count_flops=False)
    with pytest.raises(InputError, match="fixed"):
        VB.build_video_backbone("mvit_v1_b", clip_len=8)
    with pytest.raises(InputError, match="in_chans"):
        VB.build_video_backbone("mc3_18", in_chans=10)
