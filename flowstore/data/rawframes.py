"""Export a store to mmaction2's *rawframes* layout, and read that layout back (file by file).

Layout written by :func:`export_rawframes` (file numbers are 1-based, store indices 0-based:
store frame ``i`` is ``img_{i+1:05d}.jpg``, store flow ``i`` is ``flow_x/flow_y_{i+1:05d}.jpg``)::

    OUT/<video dir>/img_00001.jpg ...     RGB frames (<video dir>: the video id, see rawframes_dir)
    OUT/<video dir>/flow_x_00001.jpg ...  flow u, 8-bit grayscale JPEG
    OUT/<video dir>/flow_y_00001.jpg ...  flow v
    OUT/<video dir>/flow_range.npy        (minmax stores only) float32 (num_flows, 4)
    OUT/rgb_list.txt, OUT/flow_list.txt   mmaction2 annotation lists: frame_dir total_frames label
    OUT/flowstore_rawframes.json          sizes, codecs and quantization (for RawframesReader)

JPEG records are copied byte for byte; PNG/raw records are re-encoded as JPEG (quality 95),
since the file names say .jpg. In mmaction2 use ``filename_tmpl='img_{:05}.jpg'`` for RGB and
``filename_tmpl='flow_{}_{:05d}.jpg'`` with ``modality='Flow'`` for flow.

:class:`RawframesReader` reads such a tree the way mmaction2's ``RawFrameDecode`` does (one
``open().read()`` per image, then ``cv2.imdecode``) as a
:class:`~flowstore.store.source.RecordSource`, like :class:`~flowstore.store.reader.StoreReader`,
so the datasets can load from it for comparison.
"""
from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path

import numpy as np

from ..codec import decode_gray, decode_rgb, encode_gray, encode_rgb
from ..quantize import QuantSpec
from ..errors import MissingFileError
from .source import open_source
from ..store.source import FORWARD_ONLY, check_forward_only

IMG_TMPL = "img_{:05d}.jpg"
FLOW_TMPL = "flow_{}_{:05d}.jpg"
META = "flowstore_rawframes.json"
META_FORMAT = "flowstore-rawframes/1"


_UNLISTABLE = re.compile(r"[\s%]")


def rawframes_dir(video: str) -> str:
    """The frame directory of ``video`` in an exported tree: the id itself, except that
    whitespace is percent-encoded (mmaction2 splits annotation lines on whitespace, so
    ``frame_dir`` cannot hold any), and ``%`` too so that the name stays reversible
    (:func:`video_of_dir`). ``"cls a/v 1"`` -> ``"cls%20a/v%201"``."""
    return _UNLISTABLE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), video)


def video_of_dir(name: str) -> str:
    """The video id of frame directory ``name`` (the inverse of :func:`rawframes_dir`)."""
    return urllib.parse.unquote(name, errors="strict")


def frame_file(index: int) -> str:
    """File name of 0-based store frame ``index``."""
    return IMG_TMPL.format(index + 1)


def flow_file(component: str, index: int) -> str:
    """File name of component ``x``/``y`` of 0-based store flow ``index``."""
    return FLOW_TMPL.format(component, index + 1)


def export_rawframes(store, out_dir, *, videos=None, labels: dict | None = None, frames: bool = True,
                     flows: bool = True, sync: bool = True) -> Path:
    """Write the store's frames and flows as an mmaction2 rawframes tree under ``out_dir``."""
    src = open_source(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = list(src.videos if videos is None else videos)
    labels = labels or {}
    meta = {"format": META_FORMAT, "source": str(src.root),
            "quantization": src.quant.to_manifest(), "frame_codec": "jpeg", "flow_codec": "jpeg",
            "frames": frames, "flows": flows, "videos": {}}
    rgb_lines, flow_lines = [], []
    for vid in videos:
        d = out / rawframes_dir(vid)
        d.mkdir(parents=True, exist_ok=True)
        w, h = src.frame_size(vid)
        nf, nl = src.num_frames(vid), src.num_flows(vid)
        if frames:
            for i in range(nf):
                data = src.frame_bytes(vid, i)
                if src.frame_codec != "jpeg":
                    data = encode_rgb(decode_rgb(data, src.frame_codec, (h, w)), "jpeg")
                (d / frame_file(i)).write_bytes(data)
        if flows:
            for i0 in range(0, nl, 256):
                idx = list(range(i0, min(nl, i0 + 256)))
                xs, ys = src.flow_bytes(vid, idx)
                for i, bx, by in zip(idx, xs, ys):
                    for comp, data in (("x", bx), ("y", by)):
                        if src.flow_codec != "jpeg":
                            data = encode_gray(decode_gray(data, src.flow_codec, (h, w)), "jpeg")
                        (d / flow_file(comp, i)).write_bytes(data)
            if src.quant.scheme == "minmax":
                np.save(d / "flow_range.npy", np.stack([src.flow_range(vid, i) for i in range(nl)]))
        label = int(labels.get(vid, -1))
        listed = rawframes_dir(vid)
        rgb_lines.append(f"{listed} {nf} {label}\n")
        flow_lines.append(f"{listed} {nl} {label}\n")
        meta["videos"][vid] = {"num_frames": nf, "num_flows": nl, "width": w, "height": h, "dir": listed}
    (out / "rgb_list.txt").write_text("".join(rgb_lines))
    (out / "flow_list.txt").write_text("".join(flow_lines))
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    if sync:
        os.sync()  # written pages must be clean before they can be evicted from the page cache
    return out


class RawframesReader:
    """An exported rawframes tree as a :class:`~flowstore.store.source.RecordSource`. It has
    forward flow only (mmaction2's trees have no backward flow): asking for backward flow is an
    InputError."""

    frame_codec = "jpeg"
    flow_codec = "jpeg"
    directions = FORWARD_ONLY

    def __init__(self, root):
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.exists():
            raise MissingFileError(f"{meta_path} not found: not a tree written by export_rawframes")
        self.meta = json.loads(meta_path.read_text())
        self._videos = self.meta["videos"]
        self.videos = sorted(self._videos)
        self.quant = QuantSpec.from_manifest(self.meta["quantization"])
        self._ranges: dict[str, np.ndarray] = {}

    def __len__(self):
        return len(self.videos)

    def num_frames(self, video: str) -> int:
        return int(self._videos[video]["num_frames"])

    def num_flows(self, video: str) -> int:
        return int(self._videos[video]["num_flows"])

    def frame_size(self, video: str) -> tuple[int, int]:
        v = self._videos[video]
        return int(v["width"]), int(v["height"])

    @staticmethod
    def _read(path: Path) -> bytes:
        with open(path, "rb") as fh:  # what mmengine's disk backend does for every image
            return fh.read()

    def _dir(self, video: str) -> Path:
        return self.root / self._videos[video].get("dir", video)  # trees before "dir": the id

    def frame_bytes(self, video: str, index: int) -> bytes:
        return self._read(self._dir(video) / frame_file(index))

    def flow_bytes(self, video: str, indices, direction: str = "forward") -> tuple[list[bytes], list[bytes]]:
        check_forward_only(direction, f"rawframes tree {self.root}")
        d = self._dir(video)
        indices = list(indices)
        return ([self._read(d / flow_file("x", i)) for i in indices],
                [self._read(d / flow_file("y", i)) for i in indices])

    def flow_range(self, video: str, index: int, direction: str = "forward"):
        check_forward_only(direction, f"rawframes tree {self.root}")
        if self.quant.scheme != "minmax":
            return None
        if video not in self._ranges:
            self._ranges[video] = np.load(self._dir(video) / "flow_range.npy")
        return self._ranges[video][index]

    def shard_of(self, video: str) -> None:
        return None  # one file per image, no shards

    def files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()]

    def close(self) -> None:
        pass


__all__ = ["FLOW_TMPL", "IMG_TMPL", "RawframesReader", "export_rawframes", "flow_file", "frame_file",
           "rawframes_dir", "video_of_dir"]
