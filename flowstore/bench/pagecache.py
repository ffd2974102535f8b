"""The page cache of a set of files: evict them, read them in, count what is resident (the
loader benchmark's warm and cold rounds)."""
from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import numpy as np


def store_files(root) -> list[Path]:
    """Every file under ``root``, sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def evict(paths, *, sync: bool = False) -> None:
    """Drop the files' pages from the page cache. Dirty pages are not dropped: the files must
    have been written back (``sync=True`` does it per file; the store's writer fsyncs its
    shards and :func:`~flowstore.data.rawframes.export_rawframes` ends with os.sync). :func:`resident_bytes` checks."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            if sync:
                os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def prime(paths) -> None:
    """Read every file once so that its pages are in the page cache."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 20):
                pass


_libc = None


def _lib():
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
        _libc = lib
    return _libc


def resident_bytes(paths) -> tuple[int, int]:
    """``(bytes in the page cache, total bytes)`` of the files, from mincore(2).

    Mapping a file does not read it: only pages already cached are reported resident.
    """
    lib = _lib()
    page = mmap.PAGESIZE
    resident = total = 0
    for p in paths:
        size = os.path.getsize(p)
        total += size
        if size == 0:
            continue
        fd = os.open(p, os.O_RDONLY)
        try:
            addr = lib.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), f"mmap of {p} failed")
            try:
                n = (size + page - 1) // page
                vec = (ctypes.c_ubyte * n)()
                if lib.mincore(addr, size, vec) != 0:
                    raise OSError(ctypes.get_errno(), f"mincore of {p} failed")
                resident += int(np.count_nonzero(np.frombuffer(vec, np.uint8) & 1)) * page
            finally:
                lib.munmap(addr, size)
        finally:
            os.close(fd)
    return min(resident, total), total


__all__ = ["evict", "prime", "resident_bytes", "store_files"]
