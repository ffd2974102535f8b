"""mmaction2 transforms that read a flowstore store, in the style of ``DecordInit`` /
``DecordDecode``: an mmaction2 rawframes config swaps ``RawFrameDecode`` for ``FlowstoreDecode``
and changes nothing else::

    custom_imports = dict(imports=["flowstore.integrations.mmaction2"], allow_failed_imports=False)
    dict(type="SampleFrames", clip_len=1, frame_interval=1, num_clips=3),
    dict(type="FlowstoreDecode", store="data/store"),        # was dict(type="RawFrameDecode")

Frame indices follow mmaction2: ``frame_inds`` (from ``SampleFrames``) count from the dataset's
``start_index`` (1 for ``RawframeDataset``) plus ``offset``; store index = ``frame_ind + offset -
start_index``. With ``modality="RGB"`` the indices are frames (``imgs``: RGB uint8 ``(H, W, 3)``),
with ``modality="Flow"`` flows (``imgs``: uint8 ``(H, W, 2)``, x then y, as stored), exactly what
``RawFrameDecode`` gives for the same files of an exported tree.

The video is ``frame_dir`` relative to ``prefix`` when given, else the longest tail of
``frame_dir``'s path that is a video id of the store (``data/rawframes/class/v1`` -> ``class/v1``).
``FlowstoreInit`` (optional, like ``DecordInit``) opens the video before ``SampleFrames`` and sets
``total_frames`` from the store; ``FlowstoreDecode`` alone opens it itself.
"""
from __future__ import annotations

import os
from pathlib import PurePath

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform

from ..data.rawframes import video_of_dir
from ..errors import InputError, UnknownNameError
from ..store.reader import StoreReader

_READERS: dict[tuple[int, str], StoreReader] = {}  # per process and store path (opened lazily)
HANDLE = "flowstore_video"


def _reader(store: str, check: bool) -> StoreReader:
    key = (os.getpid(), os.path.abspath(store))
    if key not in _READERS:
        _READERS[key] = StoreReader(store, check=check)
    return _READERS[key]


def video_of(reader: StoreReader, frame_dir: str, prefix: str | None) -> str:
    """The store id of mmaction2's ``frame_dir`` (see the module docstring); a directory name
    written by ``export_rawframes`` (whitespace percent-encoded) names its video too."""
    if prefix is not None:
        candidates = [PurePath(os.path.relpath(frame_dir, prefix)).as_posix()]
    else:
        parts = PurePath(frame_dir).parts
        candidates = [PurePath(*parts[i:]).as_posix() for i in range(len(parts))]
    for name in candidates:
        for vid in dict.fromkeys((name, video_of_dir(name))):
            if vid in reader:
                return vid
    raise UnknownNameError(f"frame_dir {frame_dir!r} names no video of store {reader.root}"
                           + (f" under prefix {prefix!r}" if prefix else ""))


def _count(reader: StoreReader, video: str, modality: str) -> int:
    if modality == "RGB":
        return reader.num_frames(video)
    if modality == "Flow":
        return reader.num_flows(video)
    raise InputError(f"modality {modality!r}: flowstore serves 'RGB' and 'Flow'")


@TRANSFORMS.register_module()
class FlowstoreInit(BaseTransform):
    """Open ``results['frame_dir']``'s video in ``store``; set ``total_frames`` (frames for RGB,
    flows for Flow) and the handle ``results['flowstore_video']``."""

    def __init__(self, store: str, prefix: str | None = None, check: bool = False) -> None:
        self.store, self.prefix, self.check = str(store), prefix, check

    def transform(self, results: dict) -> dict:
        reader = _reader(self.store, self.check)
        video = video_of(reader, results["frame_dir"], self.prefix)
        results[HANDLE] = (reader, video)
        results["total_frames"] = _count(reader, video, results.get("modality", "RGB"))
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(store={self.store!r}, prefix={self.prefix!r})"


@TRANSFORMS.register_module()
class FlowstoreDecode(BaseTransform):
    """Decode ``results['frame_inds']`` from the store, as ``RawFrameDecode`` does from files:
    sets ``imgs``, ``original_shape`` and ``img_shape``. ``store`` is needed unless
    ``FlowstoreInit`` ran before."""

    def __init__(self, store: str | None = None, prefix: str | None = None, check: bool = False) -> None:
        self.init = FlowstoreInit(store, prefix, check) if store is not None else None

    def transform(self, results: dict) -> dict:
        if HANDLE not in results:
            if self.init is None:
                raise InputError("FlowstoreDecode needs store=... or a FlowstoreInit before it")
            total = results.get("total_frames")
            self.init.transform(results)
            if total is not None:  # the dataset's own count (from its annotation list) stays
                results["total_frames"] = total
        reader, video = results.pop(HANDLE)
        modality = results.get("modality", "RGB")
        count = _count(reader, video, modality)
        inds = np.asarray(results["frame_inds"]).reshape(-1)
        base = int(results.get("offset", 0)) - int(results.get("start_index", 0))
        cache: dict[int, np.ndarray] = {}
        imgs = []
        for ind in inds:
            index = int(ind) + base
            if not 0 <= index < count:
                raise InputError(f"frame index {int(ind)} (store index {index}) out of range for "
                                 f"{video!r}: {count} {'frames' if modality == 'RGB' else 'flows'}")
            if index not in cache:
                cache[index] = reader.frame(video, index) if modality == "RGB" else reader.flow_q(video, index)
            imgs.append(cache[index].copy())
        results["frame_inds"] = inds
        results["imgs"] = imgs
        results["original_shape"] = imgs[0].shape[:2]
        results["img_shape"] = imgs[0].shape[:2]
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(store={self.init.store if self.init else None!r})"


__all__ = ["FlowstoreDecode", "FlowstoreInit", "video_of"]
