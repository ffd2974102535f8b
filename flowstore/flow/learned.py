"""Learned optical flow through ptlflow: the models with a short name and any other ptlflow model.

Methods ``ptlflow:NAME`` (``NAME`` from ``ptlflow.get_model_names()``) and their short names
``neuflow2``, ``neuflow``, ``rapidflow``, ``sea_raft_s``, ``gmflow``, ``raft``, ``raft_small``
(:data:`.catalog.LEARNED_MODELS`, with each model's facts) on the ``ptlflow`` engine::

    est = build_flow("neuflow2", ckpt="neuflow2-things-6ed47437.ckpt", batch_size=8)
    est = build_flow("ptlflow:raft", device="cuda", fp16=True)   # weights from FLOWSTORE_CKPT_DIR

All seven run on the CPU with the installed packages: none needs a compiled extension.
neuflow and fastflownet use ``spatial_correlation_sampler`` when it is installed and ptlflow's
pure-torch ``IterSpatialCorrelationSampler`` otherwise; raft, raft_small and the SEA-RAFTs need
the compiled ``alt_cuda_corr`` only with ``--param alternate_corr=true``.

Requirements
    ptlflow is an optional extra. Install it with ``pip install 'flowstore[ptlflow]'`` and then
    ``pip install --no-deps ptlflow==0.4.2``: ptlflow declares ``opencv-python`` as a
    dependency, which would overwrite the ``cv2`` folder of ``opencv-contrib-python-headless``
    and with it ``cv2.optflow`` (TV-L1). Without ptlflow the builders raise
    :class:`PtlflowNotInstalledError` (an ``ImportError``).

Weights (flowstore never downloads anything)
    ``ckpt`` is a local file (or a directory to search). When it is ``None`` the directory named
    by the environment variable ``FLOWSTORE_CKPT_DIR`` is searched for exactly one file called
    ``<model>.<ext>`` or ``<model>[-_.]*.<ext>`` with ``<ext>`` one of ckpt, pth, pt,
    safetensors, e.g. ``gmflow-things-5a18a9e8.ckpt`` as published by ptlflow at
    ``https://github.com/hmorimitsu/ptlflow/releases/download/weights1/``. A file whose name
    starts with a *longer* model name (``gmflow_refine-...`` when looking for ``gmflow``) is
    not taken. Nothing found: ``FileNotFoundError`` telling where to download from.

    Files are read with ``torch.load(..., weights_only=True)`` (never arbitrary unpickling) or
    with safetensors for ``*.safetensors``. Accepted layouts: a Lightning/ptlflow checkpoint
    ``{"state_dict": ..., "hyper_parameters": ...}``, ``{"model": state_dict}``, or a plain
    state_dict; a ``model.`` / ``module.`` prefix on every key is removed. Loading is strict:
    missing, unexpected or mis-shaped keys raise :class:`CheckpointError` naming the file. A file
    keeping ptlflow's published name (``...-<8 hex>.ckpt``) must match that sha256 prefix.

Inference
    :meth:`PtlflowEstimator.prepare` turns RGB uint8 ``(H, W, 3)`` into a float32 tensor
    ``(3, H, W)``, **BGR** in [0, 1] -- the input convention of every ptlflow model (they were
    written for ``cv2.imread`` frames and subtract their own mean / divide by their own std).
    :meth:`~PtlflowEstimator.compute` runs chunks of ``batch_size`` pairs as
    ``model({"images": B x 2 x 3 x H x W})["flows"][:, 0]``. Padding to the model's required
    multiple (``model.output_stride``, 32 for GMFlow) is done by the model itself in
    ``BaseModel.preprocess_images`` (replicate padding split over both sides, cropped back in
    ``postprocess_predictions``; a few older models resize instead of padding, as their authors
    did; neuflow2 resizes to a multiple of 16); flows come back at the input resolution, which is
    checked. All pairs of one ``compute`` call must have the same size.

    Minimum frame size: raft, raft_small and sea_raft_s need both sides >= 121 px, rapidflow
    >= 33 (``min_side`` in the catalog); smaller frames raise ``InputError`` before the model
    runs. Below that size the coarsest level of the model's correlation pyramid (1/64 of the
    padded frame for RAFT's 4 levels at 1/8) is 1 pixel wide, and ptlflow's ``bilinear_sampler``
    maps pixels to grid coordinates with ``2 * x / (W - 1) - 1``: 0/0 = NaN whatever the
    weights (SEA-RAFT's pooling raises instead). That, not the random initialisation, is why
    raft_small and fastflownet gave NaN with random weights on small test frames. A NaN or inf
    that still comes out (a corrupt checkpoint, an fp16 overflow) fails the video at extraction
    (``extract.stream.check_finite`` names the video's failing flow indices); it is never quantized.

    ``fp16=True`` means ``torch.autocast(float16)`` on CUDA; on the CPU it is ignored with a
    ``UserWarning`` and ``describe()["fp16"]`` is ``False``. On the CPU the same weights and
    the same input give bit-identical flow; on CUDA cuDNN may not.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import MIN_SIDE_REASON, min_frame_side
from .registry import FlowEstimator
from ..errors import EnvironmentProblem, InputError, MissingFileError
from ..io import file_sha256, load_weights_object

PTLFLOW_VERSION = "0.4.2"
#: environment variable naming a directory of downloaded checkpoints
CKPT_DIR_ENV = "FLOWSTORE_CKPT_DIR"
CKPT_SUFFIXES = (".ckpt", ".pth", ".pt", ".safetensors")
PTLFLOW_RELEASES_URL = "https://github.com/hmorimitsu/ptlflow/releases"

MISSING_PTLFLOW_MESSAGE = (
    "learned optical flow (gmflow, ptlflow:NAME) needs ptlflow, which cannot be imported. "
    "Install the extra with `pip install 'flowstore[ptlflow]'` then "
    f"`pip install --no-deps ptlflow=={PTLFLOW_VERSION}`. "
    "The --no-deps is required: ptlflow depends on opencv-python, which would overwrite the cv2 "
    "folder of opencv-contrib-python-headless (and with it cv2.optflow, needed for TV-L1)."
)


class PtlflowNotInstalledError(EnvironmentProblem, ImportError):
    """ptlflow (the ``flowstore[ptlflow]`` extra) is missing or broken."""


class CheckpointError(InputError, RuntimeError):
    """A checkpoint file is unsafe, corrupt or does not match the model."""


# --------------------------------------------------------------------------------------------
# ptlflow access


def import_ptlflow():
    """``import ptlflow`` or raise :class:`PtlflowNotInstalledError` with install instructions."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm/lightning deprecation noise on import
            import ptlflow
    except ImportError as exc:
        raise PtlflowNotInstalledError(f"{MISSING_PTLFLOW_MESSAGE} (import error: {exc})") from exc
    return ptlflow


def _model_reference(ptlflow, model_name: str):
    names = ptlflow.get_model_names()
    if model_name not in names:
        raise InputError(f"unknown ptlflow model {model_name!r}; choose from {', '.join(sorted(names))}")
    return ptlflow.get_model_reference(model_name)


def _model_args(ptlflow, model_name: str, params: dict | None):
    """ptlflow's constructor arguments for the model (a jsonargparse Namespace) with ``params``
    overriding the defaults; unknown names are rejected with the list of valid ones."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ptlflow.get_model_reference(model_name), "model")
    args = parser.parse_args([])
    valid = sorted(vars(args.model))
    unknown = sorted(set(params or {}) - set(valid))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {unknown} for ptlflow model {model_name!r}; choose from {valid}"
        )
    for key, value in (params or {}).items():
        setattr(args.model, key, value)
    return args


def _build_model(ptlflow, model_name: str, params: dict | None):
    args = _model_args(ptlflow, model_name, params)
    try:
        with warnings.catch_warnings():
            # ptlflow 0.4.2 calls jsonargparse's deprecated instantiate_classes()
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ptlflow.get_model(model_name, args=args)
    except Exception as exc:  # jsonargparse type errors for params
        if params:
            raise InputError(f"invalid params {params!r} for ptlflow model {model_name!r}: {exc}") from exc
        raise
    return model, _jsonable(vars(args.model))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# checkpoints


def _published_checkpoints(model_ref) -> dict[str, str]:
    return dict(getattr(model_ref, "pretrained_checkpoints", None) or {})


def _missing_checkpoint_message(model_name: str, model_ref, reason: str) -> str:
    published = _published_checkpoints(model_ref)
    if published:
        example = published.get("things") or next(iter(published.values()))
        where = (
            f"ptlflow publishes checkpoints for {model_name!r} ({', '.join(published)}) as assets of "
            f"its GitHub releases ({PTLFLOW_RELEASES_URL}, tag weights1), named "
            f"<model>-<dataset>-<sha256 prefix>.ckpt, e.g. {example}"
        )
    else:
        where = (
            f"ptlflow lists no published checkpoint for {model_name!r}; its other models' weights "
            f"are assets of its GitHub releases ({PTLFLOW_RELEASES_URL})"
        )
    return (
        f"no checkpoint for ptlflow model {model_name!r}: {reason}. flowstore never downloads "
        f"weights. {where}. Download one on a machine with network access, then point flowstore at "
        f"it with --ckpt PATH (ckpt=PATH), or put it in a directory named by the {CKPT_DIR_ENV} "
        f"environment variable, where a single file named {model_name}.ckpt or "
        f"{model_name}-*.ckpt (or .pth, .pt, .safetensors) is picked up."
    )


def find_checkpoint(model_name: str, directory: str | os.PathLike, model_names: Sequence[str] = ()) -> Path | None:
    """The one checkpoint for ``model_name`` in ``directory`` (see the module docstring), or
    ``None``; several candidates raise ``ValueError``. ``model_names`` (all ptlflow models) keeps
    ``gmflow_refine-*.ckpt`` from being taken for ``gmflow``."""
    directory = Path(directory)
    longer = [n for n in model_names if n != model_name and n.startswith(model_name)]
    found = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if not (path.is_file() and path.suffix in CKPT_SUFFIXES and name.startswith(model_name)):
            continue
        if name[len(model_name)] not in "-_." or any(name.startswith(n) for n in longer):
            continue
        found.append(path)
    if len(found) > 1:
        raise InputError(
            f"several checkpoints for ptlflow model {model_name!r} in {directory}: "
            f"{[p.name for p in found]}; choose one with --ckpt PATH"
        )
    return found[0] if found else None


def resolve_checkpoint(model_name: str, ckpt: str | os.PathLike | None, model_ref=None,
                       model_names: Sequence[str] = ()) -> Path:
    """Path of the checkpoint to load: ``ckpt`` (a file, or a directory to search), else a
    search of ``$FLOWSTORE_CKPT_DIR``; ``FileNotFoundError`` explaining where to get one."""
    if ckpt is not None:
        path = Path(ckpt).expanduser()
        if path.is_file():
            return path.resolve()
        if path.is_dir():
            found = find_checkpoint(model_name, path, model_names)
            if found is not None:
                return found.resolve()
            reason = f"directory {path} holds no file named {model_name}[-_.]*{{{','.join(CKPT_SUFFIXES)}}}"
        else:
            reason = f"checkpoint file {str(path)!r} does not exist"
    else:
        env = os.environ.get(CKPT_DIR_ENV)
        if not env:
            reason = f"no --ckpt given and {CKPT_DIR_ENV} is not set"
        elif not Path(env).expanduser().is_dir():
            reason = f"no --ckpt given and {CKPT_DIR_ENV}={env} is not a directory"
        else:
            found = find_checkpoint(model_name, Path(env).expanduser(), model_names)
            if found is not None:
                return found.resolve()
            reason = (
                f"no --ckpt given and {CKPT_DIR_ENV}={env} holds no file named "
                f"{model_name}[-_.]*{{{','.join(CKPT_SUFFIXES)}}}"
            )
    raise MissingFileError(_missing_checkpoint_message(model_name, model_ref, reason))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(state_dict, hyper_parameters)`` from a checkpoint file, without unpickling objects."""
    import torch

    obj = load_weights_object(path, CheckpointError)
    hyper: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hyper = obj.get("hyper_parameters") or {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} holds no state_dict: expected a dict of tensors, a dict with a 'state_dict' "
            "entry (Lightning/ptlflow checkpoint) or with a 'model' entry"
        )
    return dict(obj), dict(hyper) if isinstance(hyper, dict) else {}


def _strip_prefix(state: dict, expected: set[str]) -> dict:
    for prefix in ("model.", "module."):
        if state and not (set(state) & expected) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_published_hash(path: Path, digest: str, model_ref) -> None:
    """A file still named as ptlflow published it must carry that sha256 prefix (torch.hub's
    ``check_hash`` convention), catching truncated or corrupted downloads."""
    names = {url.rsplit("/", 1)[-1] for url in _published_checkpoints(model_ref).values()}
    match = re.search(r"-([0-9a-f]{8,})\.[a-z]+$", path.name)
    if path.name in names and match and not digest.startswith(match.group(1)):
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:16]}..., not the {match.group(1)}... its "
            "published name promises: the download is truncated or corrupt; download it again"
        )


def load_weights(model, path: Path, model_name: str) -> None:
    """Strictly load ``path`` into ``model`` (see :func:`read_checkpoint`)."""
    state, hyper = read_checkpoint(path)
    own = model.state_dict()
    state = _strip_prefix(state, set(own))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{k}: {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
            if keys:
                parts.append(f"{len(keys)} {label} key(s) (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(
            f"checkpoint {path} does not match ptlflow model {model_name!r}: {'; '.join(parts)}. "
            "Is it a checkpoint of another model, or was the model built with other params?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not load into ptlflow model {model_name!r}: {exc}") from exc
    # Same as ptlflow.restore_model: some models (e.g. FlowFormer) use these at inference time.
    if "train_size" in hyper:
        model.train_size = hyper["train_size"]
    if "train_avg_length" in hyper:
        model.train_avg_length = hyper["train_avg_length"]
    for name, value in (hyper.get("extra_params") or {}).items():
        model.add_extra_param(name, value)


def save_random_checkpoint(model_name: str, path: str | os.PathLike, *, seed: int,
                           params: dict | None = None) -> Path:
    """Build ``model_name`` with random weights (``torch.manual_seed(seed)``, global RNG state
    restored afterwards) and save them where :func:`load_weights` accepts them: a Lightning-style
    ``{"state_dict": ...}`` file, or safetensors if ``path`` ends with ``.safetensors``.
    For tests and demos only: the flow of random weights is meaningless."""
    import torch

    ptlflow = import_ptlflow()
    _model_reference(ptlflow, model_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _ = _build_model(ptlflow, model_name, params)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"model": model_name, "seed": str(seed)})
    else:
        torch.save({"state_dict": state, "flowstore": {"model": model_name, "random_init_seed": int(seed)}}, path)
    return path


# --------------------------------------------------------------------------------------------
# estimator


def _check_device(device: str | None) -> str:
    device = "cpu" if device is None else str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise InputError(f"unsupported device {device!r} for the ptlflow engine; use 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but torch.cuda.is_available() is False")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


class PtlflowEstimator(FlowEstimator):
    engine = "ptlflow"

    def __init__(self, *, method: str, model_name: str, model, params: dict, device: str,
                 ckpt: Path, ckpt_sha256: str, batch_size: int, fp16: bool, library_version: str):
        self.method = method
        self.model_name = model_name
        self.model = model
        self.params = params
        self.device = device
        self.ckpt = ckpt
        self.ckpt_sha256 = ckpt_sha256
        self.batch_size = batch_size
        self.fp16 = fp16
        self.library_version = library_version

    def prepare(self, rgb: np.ndarray):
        """RGB uint8 ``(H, W, 3)`` (or grayscale ``(H, W)``) -> float32 tensor ``(3, H, W)``, BGR, [0, 1]."""
        import torch

        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8:
            raise InputError(f"expected uint8 frames, got {rgb.dtype}")
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"expected an RGB frame (H, W, 3), got shape {rgb.shape}")
        bgr = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
        return torch.from_numpy(bgr).float().div_(255.0)

    def compute(self, prev: Sequence[Any], nxt: Sequence[Any]) -> np.ndarray:
        import torch

        if len(prev) != len(nxt):
            raise InputError(f"got {len(prev)} first frames but {len(nxt)} second frames")
        if not prev:
            return np.zeros((0, 0, 0, 2), np.float32)
        shape = tuple(prev[0].shape)
        for frame in (*prev, *nxt):
            if tuple(frame.shape) != shape:
                raise InputError(f"all frames of one compute() call must have one size; got {tuple(frame.shape)} and {shape}")
        height, width = shape[-2:]
        min_side = min_frame_side(self.model_name)
        if min_side is not None and min(height, width) < min_side:
            raise InputError(
                f"frames of {width}x{height} are too small for ptlflow model {self.model_name!r}: it needs "
                f"both sides >= {min_side} px ({MIN_SIDE_REASON}); extract at a larger --size"
            )
        out = np.empty((len(prev), height, width, 2), np.float32)
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            for start in range(0, len(prev), self.batch_size):
                stop = min(start + self.batch_size, len(prev))
                images = torch.stack(
                    [torch.stack((prev[k], nxt[k])) for k in range(start, stop)]
                ).to(self.device, torch.float32)
                flows = self.model({"images": images})["flows"][:, 0]  # (b, 2, H', W')
                if tuple(flows.shape[-2:]) != (height, width):
                    raise RuntimeError(
                        f"ptlflow model {self.model_name!r} returned flow of size {tuple(flows.shape[-2:])} "
                        f"for input {(height, width)}"
                    )
                out[start:stop] = flows.float().permute(0, 2, 3, 1).cpu().numpy()
        return out

    def describe(self) -> dict:
        import torch

        return {
            "method": self.method,
            "engine": self.engine,
            "library": "ptlflow",
            "library_version": self.library_version,
            "torch_version": torch.__version__,
            "device": self.device,
            "params": dict(self.params),
            "model": self.model_name,
            "ckpt": str(self.ckpt),
            "ckpt_sha256": self.ckpt_sha256,
            "batch_size": self.batch_size,
            "fp16": self.fp16,
        }


def build_ptlflow(*, method: str, model_name: str, params: dict | None = None, device: str | None = None,
                  ckpt: str | os.PathLike | None = None, batch_size: int = 4, fp16: bool = False) -> PtlflowEstimator:
    """Shared body of the short-name and ``ptlflow:*`` builders."""
    device = _check_device(device)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    fp16 = bool(fp16)
    if fp16 and not device.startswith("cuda"):
        warnings.warn("fp16 (autocast) is only used on CUDA; running in float32 on the CPU", UserWarning, stacklevel=3)
        fp16 = False
    ptlflow = import_ptlflow()
    model_ref = _model_reference(ptlflow, model_name)
    path = resolve_checkpoint(model_name, ckpt, model_ref, ptlflow.get_model_names())
    digest = file_sha256(path)
    _check_published_hash(path, digest, model_ref)
    model, effective = _build_model(ptlflow, model_name, params)
    load_weights(model, path, model_name)
    model = model.to(device).eval()
    model.requires_grad_(False)
    return PtlflowEstimator(
        method=method, model_name=model_name, model=model, params=effective, device=device,
        ckpt=path, ckpt_sha256=digest, batch_size=batch_size, fp16=fp16,
        library_version=getattr(ptlflow, "__version__", "unknown"),
    )


def build_short_name(*, model_name: str, params: dict | None = None, device: str | None = None,
                     ckpt: str | os.PathLike | None = None, batch_size: int = 4, fp16: bool = False) -> PtlflowEstimator:
    """A model with a short name (``gmflow``, ``neuflow2``, ... :data:`.catalog.LEARNED_MODELS`):
    ``ptlflow:NAME`` recorded under the short name."""
    return build_ptlflow(method=model_name, model_name=model_name, params=params, device=device,
                         ckpt=ckpt, batch_size=batch_size, fp16=fp16)


def build_ptlflow_model(*, model_name: str = "gmflow", params: dict | None = None, device: str | None = None,
                        ckpt: str | os.PathLike | None = None, batch_size: int = 4, fp16: bool = False) -> PtlflowEstimator:
    """Any ptlflow model by name (``ptlflow:raft``, ``ptlflow:sea_raft_s``, ...)."""
    return build_ptlflow(method=f"ptlflow:{model_name}", model_name=model_name, params=params, device=device,
                         ckpt=ckpt, batch_size=batch_size, fp16=fp16)
