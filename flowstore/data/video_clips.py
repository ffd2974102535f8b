"""Video clips for 3D backbones straight from a store: :class:`StoreVideoClipDataset`.

::

    from flowstore.data.video_clips import StoreVideoClipDataset
    from flowstore.data.views import SpatialViews

    train = StoreVideoClipDataset("store", labels, modality="rgb", clip_len=16, frame_interval=5,
                                  transform=train_transform(224), train=True)
    test = StoreVideoClipDataset("store", labels, modality="flow", clip_len=16, frame_interval=5,
                                 num_clips=10, transform=SpatialViews(3, 224, resize=256), train=False)

A sample is a dict: ``"rgb"`` ``(N, T, 3, H, W)`` and/or ``"flow"`` ``(N, T, 2, H, W)`` with
``T = clip_len`` and ``N`` clips (``num_clips``, times the views a transform makes, e.g.
:class:`~flowstore.data.views.SpatialViews`: ``N = N_t * N_s``, clip-major); ``"starts"``
(the ``num_clips`` clip offsets) and ``"frame_inds"`` (``(num_clips, T)`` store indices), plus
``"label"``, ``"video"`` and ``"index"`` as :class:`~flowstore.data.dataset.StoreClipDataset`'s.
Flow ``t`` is frame ``t -> t + stride``; with ``modality="both"`` the RGB clip takes the frames
at the flow clip's indices (each flow's first frame). Offsets and indices follow mmaction2's
``SampleFrames`` (:mod:`flowstore.data.clip_sampling`): random in training, evenly spread in
testing, short videos looped (or ``out_of_bound="repeat_last"``).

The transforms of :mod:`flowstore.data.transforms` apply unchanged: inside the dataset a clip
is held as one snippet of ``T`` items (``(N, C*T, H, W)``, channels x0, y0, x1, y1, ... for
flow), so every frame of a clip gets the same crop, resize and flip, and a flip negates u of
every flow. The arrays are reshaped to ``(N, T, C, H, W)`` at the end.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .clip_sampling import OUT_OF_BOUND, clip_indices, clip_offsets
from .clips import SamplePlan
from .dataset import StoreClipDataset
from .source import read_records

CHANNELS = {"rgb": 3, "flow": 2}


class StoreVideoClipDataset(StoreClipDataset):
    """Map-style dataset of video clips (see the module docstring). Arguments as
    :class:`~flowstore.data.dataset.StoreClipDataset`'s, with ``clip_len``, ``frame_interval``,
    ``num_clips`` and ``out_of_bound`` in place of the snippet sampling."""

    def __init__(self, store, labels=None, *, clip_len: int, frame_interval: int = 1, num_clips: int = 1,
                 out_of_bound: str = "loop", modality: str = "rgb", **kwargs):
        for key in ("sampling", "length", "num_segments", "test_views"):
            if key in kwargs:
                raise InputError(f"video clips take clip_len/frame_interval/num_clips, not {key}")
        if int(clip_len) < 1 or int(frame_interval) < 1 or int(num_clips) < 1:
            raise InputError("clip_len, frame_interval and num_clips must be >= 1")
        if out_of_bound not in OUT_OF_BOUND:
            raise InputError(f"unknown out_of_bound {out_of_bound!r}; choose from {list(OUT_OF_BOUND)}")
        super().__init__(store, labels, modality=modality, sampling="stack", length=int(clip_len), **kwargs)
        self.clip_len = int(clip_len)
        self.frame_interval = int(frame_interval)
        self.num_clips = int(num_clips)
        self.out_of_bound = out_of_bound

    def starts(self, index: int, rng: np.random.Generator) -> np.ndarray:
        video = self.videos[index // self.clips_per_video]
        return clip_offsets(self._count(video), self.clip_len, self.frame_interval, self.num_clips,
                            train=self.train, rng=rng)

    def indices(self, video: str, starts) -> np.ndarray:
        """``(num_clips, T)`` store indices of the clips at offsets ``starts``."""
        return clip_indices(starts, self.clip_len, self.frame_interval, self._count(video), self.out_of_bound)

    def fetch(self, video: str, starts: np.ndarray) -> dict:
        self._open_shard(self.store, video)
        idx = self.indices(video, starts)
        flows = idx if self.modality in ("flow", "both") else None
        frames = idx if self.modality in ("rgb", "both") else None
        return read_records(self.store, video, starts, flows, frames)

    def _direct(self, plans) -> bool:
        return False  # clips are reshaped after decoding: never decoded straight into a batch

    def finish(self, plan: SamplePlan, raw: dict) -> dict:
        out = super().finish(plan, raw)
        for key, c in CHANNELS.items():
            if key in out:
                x = out[key]
                out[key] = x.reshape(x.shape[0], self.clip_len, c, *x.shape[2:])
        out["frame_inds"] = torch.from_numpy(self.indices(plan.video, plan.starts))
        return out


__all__ = ["CHANNELS", "StoreVideoClipDataset"]
