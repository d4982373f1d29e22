"""Shared-memory batch buffers that a loader worker reuses once the main process has let go of them.

Fresh shared memory is what building a batch cost beyond its stages: on this kind of VM a new 8 MB
mapping costs ~7 ms to fault in, more than decoding the frames written into it, while writing into pages
already mapped costs ~0.2 ms. So each worker keeps up to ``SLOTS`` buffers and writes batch after batch
into them. A buffer may only be rewritten when no tensor of the main process refers to it any more (the
loops may hold a batch as long as they like), which only the main process can tell. The protocol:

- every buffer starts with a ``HEADER``-byte header; its first byte is 1 while a batch in it is out
  (set by the worker before it writes the batch) and 0 once it is free again;
- a worker's batch crosses to the main process as a ``SentBatch``, whose unpickling there calls
  ``received``: the main process keeps the buffer's storage and, at each later arrival, frees (header
  byte 0, reference dropped) every buffer whose storage nothing but itself still uses (torch's storage
  use count: any tensor, view or numpy array of the batch counts; a pinned copy does not);
- a worker takes a free buffer large enough, else replaces a free smaller one, else adds one, and when
  all ``SLOTS`` are out allocates a buffer it does not keep (what every batch cost before).

Only the process that receives batches frees buffers, and only the process that made a buffer writes
batches into it (a forked child forgets its parent's buffers).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
import threading
from collections.abc import Callable

import numpy as np
import torch

HEADER = 64  # bytes before a batch: keeps the batch 64-byte aligned
SLOTS = 6  # buffers a worker keeps: the DataLoader's 4 batches in flight per worker, and 2 held by the loop
_OUT, _FREE = 1, 0


class _Pool:
    """The buffers this process made (worker side) and the buffers it received (main side)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.slots: list[torch.UntypedStorage] = []
        self.received: list[torch.UntypedStorage] = []
        self.private: list[torch.UntypedStorage] = []  # batch buffers of a loader without workers
        self.lock = threading.Lock()


_POOL = _Pool()


def _pool() -> _Pool:
    global _POOL
    if _POOL.pid != os.getpid():  # a forked child: its parent's buffers are not its own to write or free
        _POOL = _Pool()
    return _POOL


def shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized uint8 tensor of ``shape`` in shared memory, in a reused buffer when one is free
    (its header marked out until the process receiving it lets go, see ``received``)."""
    size = int(np.prod(shape))
    pool = _pool()
    with pool.lock:
        storage = _take_shared(pool, HEADER + size)
        _flag(storage).value = _OUT
    return torch.empty(0, dtype=torch.uint8).set_(storage, HEADER, shape, _contiguous_strides(shape))


def private_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized uint8 tensor of ``shape`` for a loader without workers: in the memory of an earlier
    batch once no tensor refers to that batch any more (fresh pages cost ~4 ms per 8 MB here)."""
    size = int(np.prod(shape))
    pool = _pool()
    with pool.lock:
        storage = _take(pool.private, size, lambda s: _uses(s) == 1, torch.UntypedStorage, 3)
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape, _contiguous_strides(shape))


def _take_shared(pool: _Pool, nbytes: int) -> torch.UntypedStorage:
    return _take(pool.slots, nbytes, lambda s: _flag(s).value == _FREE, _new_shared, SLOTS)


def _take(slots: list[torch.UntypedStorage], nbytes: int, is_free: Callable[[torch.UntypedStorage], bool],
          new: Callable[[int], torch.UntypedStorage], slots_max: int) -> torch.UntypedStorage:
    """The smallest free buffer of ``slots`` that holds ``nbytes``, else a new one, kept in ``slots`` (in
    place of the largest free one, too small) while they number under ``slots_max``."""
    free = [s for s in slots if is_free(s)]
    fits = [s for s in free if s.nbytes() >= nbytes]
    if fits:
        return min(fits, key=lambda s: s.nbytes())
    storage = new(nbytes + nbytes // 8)  # some room: clips of mixed sizes vary the batch size
    if free:
        slots.remove(max(free, key=lambda s: s.nbytes()))
    if len(slots) < slots_max:
        slots.append(storage)
    return storage


def received(clips: object, labels: torch.Tensor, bad: list) -> tuple[object, torch.Tensor, list]:
    """Called where a batch arrives (its unpickling in the main process, or a benchmark playing both
    sides): frees the buffers of earlier batches that nothing uses any more, then keeps this one's."""
    tensor = getattr(clips, "frames", clips)  # FrameViews: its frames buffer
    pool = _pool()
    with pool.lock:
        kept = []
        for storage in pool.received:
            if _uses(storage) == 1:  # only our reference is left
                _flag(storage).value = _FREE
            else:
                kept.append(storage)
        if isinstance(tensor, torch.Tensor) and tensor.is_shared() and tensor.storage_offset() == HEADER:
            kept.append(tensor.untyped_storage())
        pool.received = kept
    return clips, labels, bad


class SentBatch(tuple):
    """A worker's ``(clips, labels, bad)`` batch that, unpickled in the main process, registers its buffer
    there (``received``) and becomes a plain tuple."""

    def __reduce__(self):
        return received, tuple(self)


def _uses(storage: torch.UntypedStorage) -> int:
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return use_count(storage._cdata) if use_count else 0  # 0: this torch cannot tell, nothing is freed


def _flag(storage: torch.UntypedStorage) -> ctypes.c_uint8:
    return ctypes.c_uint8.from_address(storage.data_ptr())


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for side in reversed(shape):
        strides.append(step)
        step *= side
    return tuple(reversed(strides))


def _new_shared(nbytes: int) -> torch.UntypedStorage:
    storage = torch.UntypedStorage._new_shared(nbytes)
    _prefault(storage.data_ptr(), storage.nbytes())
    return storage


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14
_PREFAULT_MIN = 1 << 20  # smaller buffers fault in few pages: not worth the call


def _prefault(address: int, size: int) -> None:
    """Map every page of a fresh shared-memory buffer in one call: faulting 9,000 tmpfs pages one write
    at a time costs more than writing the 37 MB of a 25x10 clip. Best effort: older kernels refuse it."""
    if sys.platform != "linux" or size < _PREFAULT_MIN:
        return
    start = address & ~(mmap.PAGESIZE - 1)
    _libc().madvise(start, size + address - start, _MADV_POPULATE_WRITE)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
