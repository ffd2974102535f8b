"""ptlflow engine (flowstore.flow.learned) with randomly initialised GMFlow weights.

No pretrained weights exist on the test machines, so the flow values are meaningless; what is
tested is the plumbing: checkpoint resolution and safe strict loading, batching, padding,
determinism and the documented errors. Frames are small crops of ../shared/data (conftest's
``shared_videos`` fixture: skip on a developer machine without it, fail under CI).
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow import learned  # noqa: E402
from flowstore.flow.learned import (  # noqa: E402
    CKPT_DIR_ENV,
    CheckpointError,
    PtlflowNotInstalledError,
    save_random_checkpoint,
)

GMFLOW_THINGS_URL = "https://github.com/hmorimitsu/ptlflow/releases/download/weights1/gmflow-things-5a18a9e8.ckpt"


def _have_ptlflow() -> bool:
    try:
        learned.import_ptlflow()
    except ImportError:
        return False
    return True


needs_ptlflow = pytest.mark.skipif(not _have_ptlflow(), reason="ptlflow extra not installed")


@pytest.fixture(scope="module")
def clip(shared_videos):
    """5 RGB frames of test.mp4 (340x256), every 3rd frame so that there is some motion."""
    import cv2

    cap = cv2.VideoCapture(str(shared_videos / "test.mp4"))
    frames = []
    index = 0
    while len(frames) < 5:
        ok, bgr = cap.read()
        assert ok, "test.mp4 ended early"
        if index % 3 == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1
    cap.release()
    return frames


def _resize(frames, width, height):
    import cv2

    return [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]


@pytest.fixture(scope="module")
def small(clip):
    return _resize(clip, 96, 64)  # 64x96: a multiple of GMFlow's stride 32


@pytest.fixture(scope="module")
def ckpt0(tmp_path_factory):
    return save_random_checkpoint("gmflow", tmp_path_factory.mktemp("ckpt") / "gmflow-random-seed0.ckpt", seed=0)


@pytest.fixture(scope="module")
def est(ckpt0):
    return build_flow("gmflow", ckpt=str(ckpt0), batch_size=3)


def _flows(estimator, frames):
    prepared = [estimator.prepare(f) for f in frames]
    return estimator.compute(prepared[:-1], prepared[1:])


@needs_ptlflow
def test_shapes_dtype_and_describe(est, ckpt0, small):
    flows = _flows(est, small[:4])
    assert flows.shape == (3, 64, 96, 2)
    assert flows.dtype == np.float32
    assert np.isfinite(flows).all() and np.abs(flows).max() > 0
    assert est(small[0], small[1]).shape == (64, 96, 2)

    prepared = est.prepare(small[0])
    assert tuple(prepared.shape) == (3, 64, 96) and prepared.dtype == torch.float32
    assert 0.0 <= float(prepared.min()) and float(prepared.max()) <= 1.0
    # BGR channel order, as ptlflow models expect
    assert torch.equal(prepared[0], torch.from_numpy(small[0][:, :, 2]).float() / 255)

    d = est.describe()
    assert d["method"] == "gmflow" and d["model"] == "gmflow"
    assert (d["engine"], d["library"], d["device"]) == ("ptlflow", "ptlflow", "cpu")
    assert d["library_version"] == "0.4.2"
    assert d["ckpt"] == str(ckpt0.resolve())
    assert d["ckpt_sha256"] == hashlib.sha256(ckpt0.read_bytes()).hexdigest()
    assert d["batch_size"] == 3 and d["fp16"] is False
    assert d["params"]["attn_splits_list"] == [2] and d["params"]["num_transformer_layers"] == 6


@needs_ptlflow
def test_deterministic_on_cpu(est, ckpt0, small):
    first = _flows(est, small[:3])
    assert np.array_equal(first, _flows(est, small[:3]))
    # a second estimator from the same file gives bit-identical flow too
    again = build_flow("ptlflow:gmflow", ckpt=str(ckpt0), batch_size=3)
    assert again.describe()["method"] == "ptlflow:gmflow"
    assert np.array_equal(first, _flows(again, small[:3]))


@needs_ptlflow
def test_batch_equals_one_at_a_time(est, small):
    batched = _flows(est, small[:4])  # one chunk of 3 pairs
    single = np.stack([est(a, b) for a, b in zip(small[:3], small[1:4])])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=5e-4)
    # 4 pairs with batch_size 3: a full chunk and a chunk of 1
    four = _flows(est, small)
    np.testing.assert_allclose(four[:3], batched, rtol=1e-5, atol=5e-4)
    np.testing.assert_allclose(four[3], est(small[3], small[4]), rtol=1e-5, atol=5e-4)


@needs_ptlflow
def test_padding_for_sizes_not_divisible_by_stride(est, clip):
    from ptlflow.utils.utils import InputPadder

    frames = _resize(clip[:3], 83, 61)
    flows = _flows(est, frames)
    assert flows.shape == (2, 61, 83, 2) and flows.dtype == np.float32
    assert np.isfinite(flows).all()
    # same as replicate-padding both sides to 64x96 ourselves and cropping back
    prepared = [est.prepare(f) for f in frames]
    padder = InputPadder((1, 3, 61, 83), stride=32, two_side_pad=True, pad_mode="replicate")
    padded = [padder.pad(p[None])[0] for p in prepared]
    assert tuple(padded[0].shape) == (3, 64, 96)
    manual = est.compute(padded[:-1], padded[1:])
    cropped = padder.unpad(torch.from_numpy(manual).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(flows, cropped, rtol=1e-5, atol=5e-4)
    with pytest.raises(ValueError, match="one size"):
        est.compute([prepared[0], padded[1]], [prepared[1], padded[2]])


@needs_ptlflow
def test_other_seed_gives_other_flow(est, ckpt0, small, tmp_path):
    ckpt1 = save_random_checkpoint("gmflow", tmp_path / "gmflow-random-seed1.ckpt", seed=1)
    other = build_flow("gmflow", ckpt=ckpt1, batch_size=3)
    assert other.describe()["ckpt_sha256"] != est.describe()["ckpt_sha256"]
    a, b = _flows(est, small[:3]), _flows(other, small[:3])
    assert np.abs(a - b).mean() > 1e-2


@needs_ptlflow
def test_checkpoint_layouts(est, ckpt0, small, tmp_path):
    """plain state_dict with a 'model.' prefix, and safetensors, load to the same weights."""
    state = torch.load(ckpt0, map_location="cpu", weights_only=True)["state_dict"]
    prefixed = tmp_path / "prefixed.pth"
    torch.save({f"model.{k}": v for k, v in state.items()}, prefixed)
    loaded, hyper = learned.read_checkpoint(prefixed)
    stripped = learned._strip_prefix(loaded, set(state))
    assert hyper == {} and stripped.keys() == state.keys()
    assert all(torch.equal(stripped[k], state[k]) for k in state)

    safe = save_random_checkpoint("gmflow", tmp_path / "gmflow.safetensors", seed=0)
    via_safetensors = build_flow("gmflow", ckpt=safe)
    assert np.array_equal(_flows(via_safetensors, small[:2]), _flows(est, small[:2]))


@needs_ptlflow
def test_mismatched_checkpoint_is_a_clear_error(ckpt0, tmp_path):
    state = torch.load(ckpt0, map_location="cpu", weights_only=True)["state_dict"]
    state.pop("upsampler.0.weight")
    state["bogus.weight"] = torch.zeros(1)
    bad = tmp_path / "gmflow-bad.ckpt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(CheckpointError, match=r"gmflow-bad\.ckpt does not match ptlflow model 'gmflow'") as err:
        build_flow("gmflow", ckpt=bad)
    assert "upsampler.0.weight" in str(err.value) and "bogus.weight" in str(err.value)


class _NotATensor:
    pass


@needs_ptlflow
def test_refuses_to_unpickle_objects(tmp_path):
    evil = tmp_path / "gmflow-evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_flow("gmflow", ckpt=evil)


@needs_ptlflow
def test_checkpoint_found_in_ckpt_dir(ckpt0, small, est, tmp_path, monkeypatch):
    (tmp_path / "gmflow-random-seed0.ckpt").write_bytes(ckpt0.read_bytes())
    (tmp_path / "gmflow_refine-things-e40899f5.ckpt").write_bytes(b"not gmflow")  # a longer model name
    (tmp_path / "gmflownet-things.ckpt").write_bytes(b"not gmflow")
    (tmp_path / "notes.txt").write_text("ignored")
    monkeypatch.setenv(CKPT_DIR_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match="fp16"):
        found = build_flow("gmflow", fp16=True)  # fp16 on the CPU: ignored with a warning
    d = found.describe()
    assert d["ckpt"] == str((tmp_path / "gmflow-random-seed0.ckpt").resolve()) and d["fp16"] is False
    assert np.array_equal(_flows(found, small[:2]), _flows(est, small[:2]))

    (tmp_path / "gmflow-things.pth").write_bytes(b"second candidate")
    with pytest.raises(ValueError, match="several checkpoints"):
        build_flow("gmflow")


@needs_ptlflow
def test_missing_checkpoint_error(tmp_path, monkeypatch):
    monkeypatch.delenv(CKPT_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        build_flow("gmflow")
    message = str(err.value)
    for needle in (f"{CKPT_DIR_ENV} is not set", GMFLOW_THINGS_URL, "--ckpt PATH", CKPT_DIR_ENV,
                   "https://github.com/hmorimitsu/ptlflow/releases", "never downloads"):
        assert needle in message

    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_flow("gmflow", ckpt=tmp_path / "nope.ckpt")
    monkeypatch.setenv(CKPT_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no file named gmflow"):
        build_flow("gmflow")


@needs_ptlflow
def test_corrupt_download_with_published_name(ckpt0, tmp_path):
    fake = tmp_path / "gmflow-things-5a18a9e8.ckpt"  # published name, but random weights
    fake.write_bytes(ckpt0.read_bytes())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_flow("gmflow", ckpt=fake)


def test_missing_extra_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ptlflow", None)  # `import ptlflow` now raises ImportError
    for call in (lambda: build_flow("gmflow", ckpt=tmp_path / "x.ckpt"),
                 lambda: build_flow("ptlflow:raft"),
                 lambda: save_random_checkpoint("gmflow", tmp_path / "x.ckpt", seed=0)):
        with pytest.raises(PtlflowNotInstalledError) as err:
            call()
        assert isinstance(err.value, ImportError)
        message = str(err.value)
        assert "pip install 'flowstore[ptlflow]'" in message
        assert "pip install --no-deps ptlflow==0.4.2" in message
        assert "opencv-python" in message and "cv2" in message


@needs_ptlflow
def test_unknown_model_and_bad_options(ckpt0):
    with pytest.raises(ValueError, match=r"unknown ptlflow model 'not_a_model'; choose from .*gmflow"):
        build_flow("ptlflow:not_a_model", ckpt=ckpt0)
    with pytest.raises(ValueError, match="unknown parameter"):
        build_flow("gmflow", ckpt=ckpt0, params={"not_a_param": 1})
    with pytest.raises(ValueError, match="unsupported device"):
        build_flow("gmflow", ckpt=ckpt0, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            build_flow("gmflow", ckpt=ckpt0, device="cuda:0")
    with pytest.raises(ValueError, match="batch_size"):
        build_flow("gmflow", ckpt=ckpt0, batch_size=0)
