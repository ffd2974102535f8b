"""JPEG records decoded on a device (nvJPEG) instead of by ``cv2.imdecode`` in the workers.

With ``decode_device="cuda"`` (a :class:`~flowstore.data.dataset.StoreClipDataset` and
:func:`~flowstore.data.loader.make_loader` option) a worker does no decoding for the JPEG kinds
of a sample: it packs their encoded records into one ``bytes`` object (``records``, sizes in
``record_sizes``), and :class:`DeviceDecoder` (called by
:class:`~flowstore.data.device_clips.DeviceStep`) decodes a whole batch with one
``torchvision.io.decode_jpeg(list_of_uint8_tensors, device=...)`` call per kind. Crops, flips
and values follow on the device, as the worker would have applied them.

Falls back to the CPU with the same results, saying so once (a ``UserWarning``):

* CUDA is not usable, or no kind of the store is JPEG (png, raw): the workers decode as usual;
* a kind that is not JPEG (e.g. PNG flow beside JPEG frames) is decoded in the workers;
* ``decode_jpeg`` fails on the device for a batch: that batch is decoded with cv2 on the host.

``decode_device="cpu"`` runs ``decode_jpeg`` on the host (libjpeg-turbo in torchvision):
``tests/test_device_decode.py`` measures it against cv2's decoding of the same records.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import InputError
from .device_flow import FRAMES_KEY

RECORDS_KEY = "records"
SIZES_KEY = "record_sizes"
#: the kinds a sample may carry encoded, in packing order
PACKED_KINDS = ("rgb", "flow", FRAMES_KEY)

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A UserWarning the first time ``message`` comes up in this process."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def kind_codec(store, kind: str) -> str:
    return store.flow_codec if kind == "flow" else store.frame_codec


def check_decode_device(device: str, store) -> str | None:
    """The device that decodes JPEG records, or None (warned once) where the workers decode
    instead: CUDA not usable, or no JPEG in the store."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"decode_device {device!r} is not a torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        warn_once(f"decode_device={device!r}: CUDA is not available here; JPEG records are decoded on the CPU "
                  "(cv2 in the loader workers) instead")
        return None
    if "jpeg" not in (store.flow_codec, store.frame_codec):
        warn_once(f"decode_device={device!r}: the store's codecs are {store.frame_codec} (frames) and "
                  f"{store.flow_codec} (flow), not JPEG; records are decoded on the CPU (in the workers)")
        return None
    for kind, codec in (("frames", store.frame_codec), ("flow", store.flow_codec)):
        if codec != "jpeg":
            warn_once(f"decode_device={device!r}: {kind} records are {codec}, not JPEG; those are decoded on the "
                      "CPU (in the workers)")
    return str(dev)


def _records_of(raw: dict, kind: str) -> list[bytes]:
    """A kind's records in their decoded order: rows of frames; flows x0, y0, x1, y1, ..."""
    if kind == "flow":
        xs, ys = raw["flow"]
        return [b for pair in zip(xs, ys) for b in pair]
    return [b for row in raw[kind] for b in row]


def pack_sample(ds, video: str, raw: dict) -> dict:
    """A worker's sample for device decoding: the JPEG kinds' records packed, the other kinds
    decoded as usual (uint8 tensors)."""
    packed, sizes, out = [], [], {}
    rest = {"starts": raw["starts"], "stacking": raw.get("stacking", ds.stacking)}
    for kind in PACKED_KINDS:
        if kind not in raw:
            continue
        if packs(ds, kind):
            records = _records_of(raw, kind)
            packed += records
            sizes += [len(r) for r in records]
        else:
            rest[kind] = raw[kind]
    if any(kind in rest for kind in PACKED_KINDS):
        clip = ds.decode(video, rest)
        if clip.rgb is not None:
            out["rgb"] = torch.from_numpy(clip.rgb)
        if clip.flow is not None:
            out[FRAMES_KEY if FRAMES_KEY in rest else "flow"] = torch.from_numpy(clip.flow)
    if "flow_range" in raw:
        out["flow_range"] = torch.from_numpy(np.ascontiguousarray(raw["flow_range"]).reshape(len(raw["starts"]), -1, 4))
    out[RECORDS_KEY] = b"".join(packed)
    out[SIZES_KEY] = torch.tensor(sizes, dtype=torch.int64)
    return out


def packs(ds, kind: str) -> bool:
    """Whether a kind's records travel encoded: JPEG, and not flow that the workers resample
    along trajectories after decoding (trajectory stacking)."""
    return kind_codec(ds.store, kind) == "jpeg" and not (kind == "flow" and ds._stacking.trajectory)


def _channels(ds, kind: str) -> tuple[int, int]:
    """``(records per snippet, channels per record)`` of a kind."""
    L = ds.length
    if kind == "flow":
        return 2 * L, 1
    if kind == FRAMES_KEY:
        return L + ds.stride, 3
    return (L if ds.modality == "rgb" else 1), 3


def decode_jpeg_batch(tensors: list[torch.Tensor], channels: int, device: str) -> list[torch.Tensor]:
    """``torchvision.io.decode_jpeg`` of uint8 tensors -> ``(C, H, W)`` uint8 on ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    with warnings.catch_warnings():  # torchvision >= 0.29 deprecates its image codecs for torchcodec's
        warnings.simplefilter("ignore", DeprecationWarning)
        if torch.device(device).type == "cpu":
            return decode_jpeg(tensors, mode=mode)
        return decode_jpeg(tensors, mode=mode, device=device)


def decode_cv2(tensors: list[torch.Tensor], channels: int, shape: tuple[int, int], device) -> list[torch.Tensor]:
    """The fallback: cv2 on the host, as the workers decode (:mod:`flowstore.store.records`)."""
    from ..store.records import decode_flow_component, decode_frame

    out = []
    for t in tensors:
        data = t.numpy().tobytes()
        image = (decode_flow_component(data, "jpeg", shape)[None] if channels == 1
                 else decode_frame(data, "jpeg", shape).transpose(2, 0, 1))
        out.append(torch.from_numpy(np.ascontiguousarray(image)).to(device))
    return out


class DeviceDecoder:
    """Decodes a batch's packed records on ``device``: ``decoder(batch)`` -> ``{kind: uint8
    (B, S, C, H, W)}`` for the kinds packed (see :func:`pack_sample`)."""

    def __init__(self, ds, device: str):
        self.ds, self.device = ds, str(device)
        self.kinds = [k for k in PACKED_KINDS if self._has(k) and packs(ds, k)]

    def _has(self, kind: str) -> bool:
        if kind == "rgb":
            return self.ds.modality in ("rgb", "both")
        online = self.ds.flow == "online"
        return self.ds.modality in ("flow", "both") and (online if kind == FRAMES_KEY else not online)

    def __call__(self, batch: dict) -> dict:
        records, sizes = batch.pop(RECORDS_KEY), batch.pop(SIZES_KEY).cpu()
        B, S = batch["starts"].shape
        w, h = self.ds.store.frame_size(batch["video"][0])
        per_sample = [torch.frombuffer(bytearray(r), dtype=torch.uint8).split(s.tolist()) if len(r) else ()
                      for r, s in zip(records, sizes)]
        out, offset = {}, 0
        for kind in self.kinds:
            count, channels = _channels(self.ds, kind)
            n = S * count
            tensors = [t for parts in per_sample for t in parts[offset:offset + n]]
            offset += n
            images = self._decode(tensors, channels, (h, w))
            out[kind] = torch.stack(images).reshape(B, S, count * channels, h, w)
        return out

    def _decode(self, tensors, channels, shape):
        try:
            images = decode_jpeg_batch(tensors, channels, self.device)
        except RuntimeError as exc:
            warn_once(f"decode_jpeg on {self.device} failed ({exc}); decoding this batch (and any other that fails) "
                      "with cv2 on the CPU")
            return decode_cv2(tensors, channels, shape, self.device)
        if any(tuple(im.shape[-2:]) != tuple(shape) for im in images):
            return decode_cv2(tensors, channels, shape, self.device)  # raises DamagedStoreError naming the size
        return images


__all__ = ["DeviceDecoder", "PACKED_KINDS", "check_decode_device", "decode_cv2", "decode_jpeg_batch",
           "pack_sample", "warn_once"]
