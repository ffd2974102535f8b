"""Small file helpers every layer uses: durable writes (temporary name, fsync, rename, fsync of
the directory), fsync, and a file's SHA-256. One copy each."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file another library wrote and closed, or a directory (which makes a rename or a
    new file in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """The name a file is written under before it is renamed into place; the pattern
    ``.NAME.tmp-PID`` is what a store writer sweeps up after a crash."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Have ``write(tmp)`` write a file, then move it to ``path`` so that readers see the old
    or the new file, never a mix; a failed write leaves ``path`` as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (videos and checkpoints can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_weights_object(path: str | os.PathLike, error: type[Exception]) -> object:
    """What a weights file holds, read without running any pickled code: safetensors for
    ``*.safetensors``, else ``torch.load(weights_only=True)`` (tensors and plain containers only).
    Any failure raises ``error`` naming the file and the way out."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise error(f"{path} is a safetensors file but safetensors is not installed "
                        "(pip install safetensors)") from exc
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # any reader error becomes one clear message
            raise error(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for foreign objects, RuntimeError if corrupt
        raise error(
            f"cannot read {path} with torch.load(weights_only=True): {str(exc).splitlines()[0]} "
            "flowstore only reads "
            "tensors and plain containers and never unpickles arbitrary objects; re-save the "
            "weights as a plain state_dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from exc
