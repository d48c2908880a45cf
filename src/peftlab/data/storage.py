"""Where decoded images live: in RAM, or past IN_MEMORY_LIMIT in a memory-mapped file (reserved up
front, unlinked at once) under $PEFTLAB_CACHE_DIR."""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError


def memory_budget() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4  # a quarter of the RAM
    except (ValueError, OSError, AttributeError):
        return 2 << 30


# decoded splits larger than this go to a memory-mapped file instead of RAM (half of the RAM: the
# decode cache above may hold a quarter more)
IN_MEMORY_LIMIT = 2 * memory_budget()


def cache_dir() -> Path:
    """Where decoded images that do not fit in memory are mapped: $PEFTLAB_CACHE_DIR, else ~/.cache/peftlab."""
    return Path(os.environ.get("PEFTLAB_CACHE_DIR") or Path.home() / ".cache" / "peftlab").expanduser()


def _allocate(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor for decoded images: in RAM up to IN_MEMORY_LIMIT bytes, else backed by
    a file under cache_dir(), mapped into memory. The file is unlinked at once (nothing is left behind,
    even after a kill); the OS keeps the pages it has room for and reads the rest back as batches need
    them. Its disk space is reserved up front, so a full disk is a clear error here and not a crash
    (SIGBUS) in the middle of decoding."""
    import mmap

    n = int(np.prod(shape))
    if n <= IN_MEMORY_LIMIT:
        return torch.empty(shape, dtype=torch.uint8)
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="decoded-", suffix=".u8", dir=folder)
    except OSError as e:
        raise UserError(
            f"cannot create a file in {folder} for the decoded images ({e.strerror}); set "
            "PEFTLAB_CACHE_DIR to a writable folder"
        ) from e
    try:
        os.posix_fallocate(fd, 0, n) if hasattr(os, "posix_fallocate") else os.ftruncate(fd, n)
        buf = mmap.mmap(fd, n)
    except OSError as e:
        raise UserError(
            f"the decoded images need {n / 2**30:.1f} GiB, more than fit in memory, and {folder} "
            f"cannot hold them ({e.strerror}); set PEFTLAB_CACHE_DIR to a folder with room, or "
            "lower --train-size"
        ) from e
    finally:
        os.close(fd)
        os.unlink(path)
    arr = np.frombuffer(buf, dtype=np.uint8).reshape(shape)  # keeps buf (the mapping) alive
    t = torch.from_numpy(arr)  # keeps arr alive, as long as any tensor shares its storage
    MAPPED.add(t.untyped_storage().data_ptr())
    weakref.finalize(arr, MAPPED.discard, t.untyped_storage().data_ptr())
    return t


MAPPED: set[int] = set()  # data pointers of the tensors _allocate mapped to files


def is_mapped(images: torch.Tensor) -> bool:
    """Whether images live in a memory-mapped file (decoded splits larger than IN_MEMORY_LIMIT)."""
    return images.untyped_storage().data_ptr() in MAPPED
