"""flowstore: video -> dense optical flow -> 8-bit quantized, sharded LMDB/HDF5 store."""
__version__ = "0.1.0"


def open_store(path, **kwargs):
    """Open a flow store for reading; see :class:`flowstore.store.reader.StoreReader`."""
    from .store.reader import StoreReader

    return StoreReader(path, **kwargs)


__all__ = ["__version__", "open_store"]
