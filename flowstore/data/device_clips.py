"""Finishing a batch on the device: the one step a training loop calls on a batch whose work
the dataset deferred to the device (``flow="online"``, ``decode_device=...``).

::

    ds = StoreClipDataset("demo/store", labels, modality="flow", sampling="stack",
                          transform=train_transform(112), flow="online", method="tvl1", engine="torch")
    loader = make_loader(ds, batch_size=16, num_workers=4)   # workers read and decode RGB frames
    for batch in loader:            # make_loader applies the step: batch["flow"] is on the device
        ...
    # with a DataLoader of your own: step = DeviceStep(ds); batch = step(batch)

:class:`DeviceStep` moves the batch to the device, decodes JPEG records there
(:mod:`flowstore.data.device_decode`), computes online flow
(:class:`~flowstore.data.device_flow.FlowOnDevice`), then applies the dataset's transform and
values exactly as a worker does for stored flow: the transform of sample ``i`` in epoch ``e``
draws from the same generator (:func:`~flowstore.data.clips.sample_rng`, rebuilt from the
sample's plan), so its crops and flips are the ones the worker would have drawn. Crops and
flips run on the device; a resize goes through cv2 on the host (bit-exact with the worker's).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..quantize import LEVELS, QuantSpec, mirror_level
from .clips import EPOCH_KEY, _tile
from .device_flow import FRAMES_KEY
from .transforms import MEAN_SUBTRACT, Clip, minmax_channels, trajectory_snippets


def _f32(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, np.float32), device=like.device)


def flow_values_on_device(flow: torch.Tensor, quant: QuantSpec, mode: str = "pixels",
                          flow_range: np.ndarray | None = None) -> torch.Tensor:
    """:func:`~flowstore.data.transforms.flow_values` for a tensor, the same float32 operations."""
    if mode == "uint8":
        return flow
    if mode == "q128":
        return (flow.to(torch.float32) - _f32(128.0, flow)) * _f32(1 / 128, flow)
    if mode != "pixels":
        from .transforms import FLOW_VALUES

        raise InputError(f"unknown flow values {mode!r}; choose from {list(FLOW_VALUES)}")
    if quant.scheme == "bound":
        return flow.to(torch.float32) * _f32(2 * quant.bound / LEVELS, flow) - _f32(quant.bound, flow)
    lo, scale = minmax_channels(flow_range, tuple(flow.shape[:2]))
    return _f32(lo, flow)[..., None, None] + flow.to(torch.float32) * _f32(scale, flow)[..., None, None]


def subtract_mean_on_device(flow: torch.Tensor, mode: str | None, groups: int = 1) -> torch.Tensor:
    """:func:`~flowstore.data.transforms.subtract_mean_flow` for a tensor (the means are summed
    in another order than numpy's: equal within float32 rounding); ``groups`` runs of channels
    have their own stack mean."""
    if mode is None:
        return flow
    if mode not in MEAN_SUBTRACT:
        raise InputError(f"unknown mean subtraction {mode!r}; choose from {list(MEAN_SUBTRACT)}")
    if flow.dtype == torch.uint8:
        raise InputError("mean-flow subtraction needs float flow values (pixels or q128), not uint8")
    mu = flow.mean(dim=(2, 3), keepdim=True)
    if mode == "field":
        return flow - mu
    out = flow.clone()
    step = flow.shape[1] // groups
    for g in range(groups):
        part, m = out[:, g * step:(g + 1) * step], mu[:, g * step:(g + 1) * step]
        part[:, 0::2] -= m[:, 0::2].mean(dim=1, keepdim=True)
        part[:, 1::2] -= m[:, 1::2].mean(dim=1, keepdim=True)
    return out


def normalize_rgb_on_device(rgb: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None):
    """:func:`~flowstore.data.transforms.normalize_rgb` for a tensor."""
    out = rgb.to(torch.float32) * _f32(1 / 255, rgb)
    if mean is not None:
        out = out - _f32(mean, rgb)[None, :, None, None]
    if std is not None:
        out = out / _f32(std, rgb)[None, :, None, None]
    return out


def finalize_on_device(clip: Clip, ds) -> dict:
    """:func:`~flowstore.data.transforms.finalize` with the dataset ``ds``'s value settings."""
    out = {}
    if clip.rgb is not None:
        if ds.rgb_values == "uint8":
            out["rgb"] = clip.rgb.contiguous()
        elif ds.rgb_values == "float":
            out["rgb"] = normalize_rgb_on_device(clip.rgb, _tile(ds.rgb_mean, clip.rgb), _tile(ds.rgb_std, clip.rgb))
        else:
            raise InputError(f"unknown rgb values {ds.rgb_values!r}; choose 'float' or 'uint8'")
    if clip.flow is not None:
        values = flow_values_on_device(clip.flow, ds.store.quant, ds.flow_values, clip.flow_range)
        out["flow"] = subtract_mean_on_device(values, ds.mean_subtract, ds._stacking.mean_groups).contiguous()
    return out


class DeviceStep:
    """The device half of a dataset's samples (see the module docstring); ``device`` defaults
    to the dataset's ``flow_device`` / ``decode_device``. ``flow_on_device`` is the
    :class:`~flowstore.data.device_flow.FlowOnDevice` of an online-flow dataset."""

    def __init__(self, dataset, device: str | None = None):
        self.dataset = dataset
        self.device = torch.device(device or dataset.device_for_step())
        self.flow_on_device = dataset.flow_on_device(str(self.device)) if dataset.flow == "online" else None
        self.decoder = None
        if dataset.decode_device is not None:
            from .device_decode import DeviceDecoder

            self.decoder = DeviceDecoder(dataset, str(self.device))

    def __call__(self, batch: dict) -> dict:
        if EPOCH_KEY not in batch:  # not deferred (e.g. a stored-flow batch): just move it
            return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.decoder is not None:
            batch.update(self.decoder(batch))
        ranges = batch.pop("flow_range", None)
        ranges = None if ranges is None else ranges.cpu().numpy()
        if FRAMES_KEY in batch:
            frames = batch.pop(FRAMES_KEY)  # (B, S, 3F, H, W)
            B, S = frames.shape[:2]
            pairs = self.dataset.flow_pairs(batch["video"], batch["starts"].cpu().numpy())
            stacking = self.dataset._stacking
            backward = [d == "backward" for d in stacking.directions_of(self.dataset.length)]
            q, r = self.flow_on_device(frames.flatten(0, 1), pairs.reshape(B * S, -1), backward)
            ranges = None if r is None else r.cpu().numpy()
            if stacking.trajectory:  # resampled along the flow on the host, as the workers do for stored flow
                q, ranges = trajectory_snippets(q.cpu().numpy(), self.dataset.store.quant, ranges)
                q = torch.from_numpy(q).to(self.device)
            batch["flow"] = q.unflatten(0, (B, S))
            ranges = None if ranges is None else ranges.reshape(B, S, *ranges.shape[1:])
        return self.finish(batch, ranges)

    def finish(self, batch: dict, ranges: np.ndarray | None) -> dict:
        """Transform and values, sample by sample, with each sample's own generator."""
        ds = self.dataset
        epochs = batch.pop(EPOCH_KEY).tolist()
        indices = batch["index"].tolist()
        mirror = mirror_level(ds.store.quant)  # what a flip maps q_x to: mirror - q_x
        outs = []
        for j, (index, epoch) in enumerate(zip(indices, epochs)):
            clip = Clip(rgb=batch["rgb"][j] if "rgb" in batch else None,
                        flow=batch["flow"][j] if "flow" in batch else None,
                        flow_range=None if ranges is None else ranges[j], flow_mirror=mirror)
            if ds.transform is not None:
                clip = ds.transform(clip, ds.plan(index, epoch).rng)
            outs.append(finalize_on_device(clip, ds))
        for key in outs[0]:
            batch[key] = torch.stack([o[key] for o in outs])
        return batch


__all__ = ["DeviceStep", "finalize_on_device", "flow_values_on_device",
           "normalize_rgb_on_device", "subtract_mean_on_device"]
