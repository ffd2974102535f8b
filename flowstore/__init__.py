"""flowstore: video -> dense optical flow -> 8-bit quantized, sharded LMDB/HDF5 store."""
import os as _os

# FFmpeg and OpenCV print a warning per bad packet or unopenable file; flowstore reports those
# itself (failures.jsonl), so keep the console readable unless the user asks otherwise.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"


def open_store(path, **kwargs):
    """Open a flow store for reading; see :class:`flowstore.store.reader.StoreReader`."""
    from .store.reader import StoreReader

    return StoreReader(path, **kwargs)


def run_recipe(path, overrides=(), **kwargs):
    """Run a TOML recipe (e.g. ``pipelines/demo.toml``) as ``flowstore run`` does; see
    :func:`flowstore.cli.recipe.run_recipe`."""
    from .cli.recipe import run_recipe as run

    return run(path, overrides, **kwargs)


__all__ = ["__version__", "open_store", "run_recipe"]
