"""What one extraction run is asked to do: :class:`ExtractConfig`, checked before any work, and
the manifest settings it implies."""
from __future__ import annotations

import dataclasses
import os

from ..codec import check_codec, check_quality, effective_quality
from ..decode import FrameResize, check_decoder, check_fps
from ..errors import InputError
from ..quantize import QuantSpec
from ..store.backend import BACKENDS
from ..store.format import DIRECTION_OPTIONS, FORWARD
from ..store.records import FLOW_COMPONENTS

DEFAULT_SHARD_SIZE = 1 << 30


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    out: str
    backend: str = "lmdb"
    method: str = "tvl1"
    engine: str | None = None
    device: str | None = None
    devices: tuple = ()  # several GPUs: one worker per device, videos split between them
    flow_params: dict = dataclasses.field(default_factory=dict)
    flow_options: dict = dataclasses.field(default_factory=dict)  # batch_size, ckpt, fp16 ...
    quant: QuantSpec = QuantSpec()
    flow_codec: str = "jpeg"
    flow_quality: int | None = None  # codec default: JPEG 95, PNG level 1
    frame_codec: str = "jpeg"
    frame_quality: int | None = None  # codec default: JPEG 95
    resize: FrameResize = FrameResize()
    stride: int = 1
    directions: tuple = (FORWARD,)  # a value of format.DIRECTION_OPTIONS; backward: the engine on swapped pairs
    decoder: str = "opencv"
    fps: float | None = None  # keep the decoded frames nearest to an N fps grid (decode.select_fps)
    shard_size: int = DEFAULT_SHARD_SIZE
    workers: int = 0  # 0: all cores

    def __post_init__(self):
        BACKENDS.check(self.backend)
        check_codec(self.flow_codec)
        check_codec(self.frame_codec)
        check_quality(self.flow_codec, self.flow_quality)  # fail now, not once per video
        check_quality(self.frame_codec, self.frame_quality)
        check_decoder(self.decoder)  # also: is PyAV installed for --decoder pyav
        check_fps(self.fps)
        if tuple(self.directions) not in DIRECTION_OPTIONS.values():
            raise InputError(f"flow directions {self.directions!r}: choose from {list(DIRECTION_OPTIONS)} "
                             f"({', '.join(f'{k} = {list(v)}' for k, v in DIRECTION_OPTIONS.items())})")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        if self.shard_size < 1:
            raise InputError(f"shard size must be positive, got {self.shard_size}")

    @property
    def n_workers(self) -> int:
        if len(self.devices) > 1:
            return len(self.devices)
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def settings(self, flow_description: dict) -> dict:
        """The manifest header fields that every run extending this store must repeat."""
        return {
            "backend": self.backend,
            "frames": {"codec": self.frame_codec, "quality": effective_quality(self.frame_codec, self.frame_quality), "color": "RGB"},
            "resize": self.resize.to_manifest(),
            "decoder": self.decoder,
            "stride": self.stride,
            "flow": {**flow_description, "codec": self.flow_codec,
                     "quality": effective_quality(self.flow_codec, self.flow_quality),
                     "components": list(FLOW_COMPONENTS),
                     "input": ("grayscale of" if flow_description.get("engine") in ("opencv", "torch") else "")
                     + " the decoded, resized RGB frames, before they are encoded"},
            "quantization": self.quant.to_manifest(),
            "directions": list(self.directions),
            "fps": self.fps,
        }
