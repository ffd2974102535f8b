"""The feature store: one HDF5 file of frozen-backbone features with their provenance.

Layout (format ``flowstore-features``, version 1)::

    /                   attrs: format, version, provenance (JSON text), count
    /videos             (N,)   UTF-8 strings      store video ids, in the order written
    /features           (N, V, S, D) float32|float16   per video, test view and segment (a vector store)
                        or (N, V, S, C, h, w) float16  the backbone's last conv map (a map store,
                        ``flowstore features --pool none``); either way one chunk per video
    /starts             (N, T, S) int32           first store index of each snippet (per temporal view)
    /num_items          (N,)   int32              frames (rgb) or flows (flow) of the video in the store
    /entry_sha256       (N,)   ASCII hex          SHA-256 of the video's manifest entry

Only rows ``0 .. count-1`` are valid. A batch of videos is written by growing the datasets,
writing the rows, flushing, and only then raising ``count`` (and flushing again): a run that
is interrupted leaves at most some rows beyond ``count``, which the next run overwrites.
Rerunning with the same settings therefore computes only the videos not yet stored.

``V = T * C`` views: T temporal positions per segment times C spatial crops, view index
``t * C + c`` (see :mod:`flowstore.features.extract`). The ``provenance`` attribute records
everything that determines the numbers (backbone, weights SHA-256, sampling, views, input
preparation, the flow store and its manifest hash); :func:`settings_of` is the part that must
agree for a run to append to an existing file; its ``pool`` (``avg``: pooled vectors, the
default and what a file without the key holds; ``none``: spatial maps) says which kind the
file is. Readers that need one kind refuse the other (:meth:`FeatureStore.require`). A flow
store's ``sampling.stacking`` (``features --stacking``) is part of the settings too; ``stack``,
the default, leaves the digest what it was before the key existed, so older files resume.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ..errors import InputError, MissingFileError, UnknownNameError

__all__ = ["FORMAT", "VERSION", "FeatureStore", "FeatureStoreError", "open_features", "settings_of"]

FORMAT = "flowstore-features"
VERSION = 1

#: provenance keys that must be identical to append to an existing feature store
SETTINGS_KEYS = ("stream", "backbone", "sampling", "views", "input", "dtype", "pool")
#: what each kind of store holds per video, for messages
KINDS = {"vectors": "pooled feature vectors (V, S, D)", "maps": "spatial feature maps (V, S, C, h, w)"}


class FeatureStoreError(InputError):
    """Not a feature store, or one made with different settings."""


def settings_of(provenance: dict) -> dict:
    """The provenance entries that fix the features' meaning, plus the flow store's header hash."""
    out = json.loads(json.dumps({k: provenance.get(k) for k in SETTINGS_KEYS}))  # a deep copy
    weights = (out.get("backbone") or {}).get("weights") or {}
    weights.pop("path", None)  # the same file (same SHA-256) may have moved
    if out.get("pool") in (None, "avg"):  # pooled vectors: the digest stays what it was before --pool
        out.pop("pool")
    if (out.get("sampling") or {}).get("stacking") == "stack":  # likewise before --stacking (old files resume)
        out["sampling"].pop("stacking")
    out["store_header_sha256"] = (provenance.get("store") or {}).get("header_sha256")
    return out


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} (file) vs {vb!r} (now)")
    return out


class FeatureStore:
    """An open feature file; use :func:`open_features` to read, :meth:`create_or_resume` to write."""

    def __init__(self, path, mode: str = "r"):
        import h5py

        self.path = Path(os.fspath(path))
        if mode == "r" and not self.path.is_file():
            raise MissingFileError(f"feature store not found: {self.path}")
        try:
            self._f = h5py.File(self.path, mode)
        except OSError as exc:
            raise FeatureStoreError(f"{self.path}: cannot open as HDF5 ({exc})") from None
        if mode == "r" or "format" in self._f.attrs:
            fmt = self._f.attrs.get("format")
            if fmt != FORMAT:
                self._f.close()
                raise FeatureStoreError(f"{self.path} is not a flowstore feature store (format={fmt!r})")
            if int(self._f.attrs.get("version", 0)) > VERSION:
                self._f.close()
                raise FeatureStoreError(f"{self.path} has feature-store version {self._f.attrs['version']}; "
                                        f"this flowstore reads <= {VERSION}")
            problem = self._layout_problem()
            if problem:
                self._f.close()
                raise FeatureStoreError(f"{self.path}: {problem}; the file is damaged "
                                        "(make it again with `flowstore features`)")

    _DATASETS = ("videos", "features", "starts", "num_items", "entry_sha256")

    def _layout_problem(self) -> str | None:
        """What breaks the layout above (a dataset missing, ``count`` past the rows, provenance
        that is not a JSON object), or None."""
        f = self._f
        try:
            for name in self._DATASETS:
                if name not in f:
                    return f"dataset /{name} is missing"
            if f["features"].ndim not in (4, 6):
                return f"/features must be (N, V, S, D) or (N, V, S, C, h, w), got shape {f['features'].shape}"
            count, rows = f.attrs.get("count", 0), min(len(f[n]) for n in self._DATASETS)
            if not isinstance(count, (int, np.integer)) or not 0 <= int(count) <= rows:
                return f"count {count!r} does not fit its {rows} rows"
            prov = json.loads(f.attrs["provenance"])
            if not isinstance(prov, dict):
                return "provenance is not a JSON object"
        except KeyError as exc:
            return f"attribute {exc} is missing"
        except (OSError, ValueError, TypeError) as exc:  # unreadable metadata, provenance not JSON
            return f"cannot read its metadata ({exc})"
        return None

    # -- reading -------------------------------------------------------------------------
    @property
    def provenance(self) -> dict:
        return json.loads(self._f.attrs["provenance"])

    @property
    def count(self) -> int:
        return int(self._f.attrs.get("count", 0))

    @property
    def videos(self) -> list[str]:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v)
                for v in self._f["videos"][: self.count]]

    @property
    def shape(self) -> tuple:
        """``(N, V, S, D)`` (a vector store) or ``(N, V, S, C, h, w)`` (a map store) of the valid rows."""
        return (self.count, *self._f["features"].shape[1:])

    @property
    def kind(self) -> str:
        """``"vectors"`` (pooled, ``(N, V, S, D)``) or ``"maps"`` (``(N, V, S, C, h, w)``)."""
        return "maps" if self._f["features"].ndim == 6 else "vectors"

    @property
    def bytes_per_video(self) -> int:
        """Bytes of one video's row as stored (uncompressed): ``V * S * D`` or ``V * S * C * h * w``
        values of the stored dtype."""
        ds = self._f["features"]
        return int(np.prod(ds.shape[1:])) * ds.dtype.itemsize

    def require(self, kind: str, needed_by: str) -> None:
        """Refuse a store of the other kind: ``needed_by`` (e.g. ``"train-head --fusion svm"``)
        needs ``kind`` (``"vectors"`` or ``"maps"``)."""
        if self.kind == kind:
            return
        fix = ("make pooled features (`flowstore features` without --pool none), or train on maps with "
               "--fusion mid-conv" if kind == "vectors" else
               "make spatial maps with `flowstore features --pool none`")
        raise FeatureStoreError(f"{self.path} holds {KINDS[self.kind]}, but {needed_by} needs {KINDS[kind]}; {fix}")

    def __len__(self) -> int:
        return self.count

    def index(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.videos)}

    def features(self, videos=None) -> np.ndarray:
        """``(N, V, S, D)`` (or ``(N, V, S, C, h, w)``) features of ``videos`` (default: all, in stored order), as stored dtype."""
        n = self.count
        if videos is None:
            return self._f["features"][:n]
        idx = self.index()
        missing = [v for v in videos if v not in idx]
        if missing:
            raise UnknownNameError(f"{len(missing)} video(s) are not in feature store {self.path}, e.g. "
                           f"{missing[:3]}; run `flowstore features` on the store again to add them")
        rows = np.array([idx[v] for v in videos], dtype=np.int64)
        ds = self._f["features"]
        if len(rows) == 0:
            return np.zeros((0, *ds.shape[1:]), ds.dtype)
        uniq, inverse = np.unique(rows, return_inverse=True)
        # many rows: one contiguous read is faster than h5py's point selection
        try:
            data = ds[:n][uniq] if 2 * len(uniq) > n else ds[uniq]
        except OSError as exc:  # a file cut short or changed after its metadata
            raise FeatureStoreError(f"{self.path}: cannot read the features ({exc}); the file is damaged") from None
        return data[inverse]

    def starts(self) -> np.ndarray:
        return self._f["starts"][: self.count]

    def entry_hashes(self) -> dict[str, str]:
        hashes = self._f["entry_sha256"][: self.count]
        return {v: (h.decode() if isinstance(h, bytes) else str(h)) for v, h in zip(self.videos, hashes)}

    def close(self) -> None:
        if self._f is not None and self._f.id.valid:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- writing -------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path, provenance: dict, *, num_views: int, num_segments: int, feature_dim: int,
                         temporal_views: int, dtype: str = "float32", overwrite: bool = False,
                         map_shape: tuple | None = None) -> "FeatureStore":
        """Open ``path`` for appending: a new file with ``provenance``, or an existing one whose
        :func:`settings_of` match (else :class:`FeatureStoreError` listing the differences).
        ``map_shape = (C, h, w)`` makes a map store (``feature_dim`` is then ``C``)."""
        import h5py

        path = Path(os.fspath(path))
        if overwrite and path.exists():
            path.unlink()
        if path.exists():
            store = cls(path, "r+")
            if "format" not in store._f.attrs:
                store.close()
                raise FeatureStoreError(f"{path} exists and is not a flowstore feature store; "
                                        "pass --overwrite to replace it")
            old = settings_of(store.provenance)
            new = settings_of(provenance)
            if old != new:
                store.close()
                raise FeatureStoreError(
                    f"{path} was made with different settings; use another --out or --overwrite:\n  "
                    + "\n  ".join(_diff(old, new)))
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(path, "w")
        try:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
            f.attrs["count"] = 0
            v, s, d = int(num_views), int(num_segments), int(feature_dim)
            f.create_dataset("videos", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                             chunks=(1024,))
            row = (v, s, d) if map_shape is None else (v, s, *(int(x) for x in map_shape))
            f.create_dataset("features", shape=(0, *row), maxshape=(None, *row), dtype=np.dtype(dtype),
                             chunks=(1, *row))  # one chunk per video: a video is read whole
            f.create_dataset("starts", shape=(0, int(temporal_views), s), maxshape=(None, int(temporal_views), s),
                             dtype=np.int32, chunks=(1024, int(temporal_views), s))
            f.create_dataset("num_items", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
            f.create_dataset("entry_sha256", shape=(0,), maxshape=(None,), dtype="S64", chunks=(1024,))
            f.flush()
        finally:
            f.close()
        return cls(path, "r+")

    def append(self, videos: list[str], feats: np.ndarray, starts: np.ndarray, num_items, entry_hashes) -> None:
        """Write rows for ``videos`` after the valid ones, then commit them (raise ``count``)."""
        n0, k = self.count, len(videos)
        if k == 0:
            return
        f = self._f
        for name in ("videos", "features", "starts", "num_items", "entry_sha256"):
            f[name].resize(n0 + k, axis=0)
        f["videos"][n0:n0 + k] = list(videos)
        f["features"][n0:n0 + k] = feats.astype(f["features"].dtype, copy=False)
        f["starts"][n0:n0 + k] = starts
        f["num_items"][n0:n0 + k] = np.asarray(num_items, np.int32)
        f["entry_sha256"][n0:n0 + k] = np.array([h.encode("ascii") for h in entry_hashes], dtype="S64")
        f.flush()
        f.attrs["count"] = n0 + k
        f.flush()

    def update_provenance(self, provenance: dict) -> None:
        self._f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
        self._f.flush()


def open_features(path) -> FeatureStore:
    """Open a feature store for reading (``with open_features(p) as fs: fs.features()``)."""
    return FeatureStore(path, "r")
