"""Loader workers reuse their shared-memory batch buffers, but never one the main process still uses."""

import ctypes
import os

import pytest
import torch
from conftest import write_frames

from tsnctl.data import batch_buffers
from tsnctl.data.batch_buffers import SentBatch, private_uint8, received, shared_uint8
from tsnctl.data.dataset import ClipSettings
from tsnctl.data.lists import Sample
from tsnctl.data.views import FrameViews
from tsnctl.engine.loaders import clip_loader, set_loader_epoch


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    monkeypatch.setattr(batch_buffers, "_POOL", batch_buffers._Pool())


def _batch(fill: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    clips = shared_uint8((2, 3, 8, 8, 3))
    clips.fill_(fill)
    return clips.permute(0, 1, 4, 2, 3), torch.tensor([0, 1]), []


def test_a_buffer_is_reused_only_once_nothing_refers_to_its_batch():
    received(*_batch(1))  # as the main process on arrival; nothing keeps the batch
    first_ptr = batch_buffers._POOL.received[-1].data_ptr()
    clips, _, _ = received(*_batch(2))  # this arrival frees the first buffer
    held_numpy = clips[0].numpy()  # a numpy view keeps the second batch in use
    third, _, _ = _batch(3)
    assert third.untyped_storage().data_ptr() == first_ptr  # the free buffer, rewritten
    received(third, torch.tensor([0, 1]), [])
    fourth, _, _ = _batch(4)  # the third is still held here, the second through numpy only
    received(fourth, torch.tensor([0, 1]), [])
    fifth, _, _ = _batch(5)
    assert fifth.untyped_storage().data_ptr() not in {clips.untyped_storage().data_ptr(),
                                                      third.untyped_storage().data_ptr(),
                                                      fourth.untyped_storage().data_ptr()}
    assert (held_numpy == 2).all() and (clips == 2).all() and (third == 3).all() and (fourth == 4).all()


def test_a_full_pool_falls_back_to_fresh_buffers():
    held = [_batch(i)[0] for i in range(batch_buffers.SLOTS + 3)]  # never received: all stay out
    assert len({c.untyped_storage().data_ptr() for c in held}) == len(held)
    assert all(bool((c == i).all()) for i, c in enumerate(held))
    assert len(batch_buffers._POOL.slots) <= batch_buffers.SLOTS


def test_sent_batches_unpickle_as_plain_tuples_and_register():
    batch = SentBatch(_batch(7))
    rebuild, args = batch.__reduce__()  # what unpickling calls, the tensors rebuilt from their shared memory
    restored = rebuild(*args)
    assert type(restored) is tuple and torch.equal(restored[0], batch[0])
    assert any(s.data_ptr() == batch[0].untyped_storage().data_ptr() for s in batch_buffers._POOL.received)


def _buffer_id(clips) -> int:
    tensor = clips.frames if isinstance(clips, FrameViews) else clips
    return os.fstat(tensor.untyped_storage()._share_fd_cpu_()[0]).st_ino


def test_worker_batches_held_by_the_loop_stay_intact_while_others_are_reused(tmp_path):
    """Two workers, clips of mixed frame sizes: batches the loop keeps equal the in-process batches after
    the whole epoch, and the batches it drops leave their buffers to the next ones."""
    folders = [write_frames(tmp_path / f"c{i}", 10, height=60 + 8 * (i % 3), width=80, seed=i) for i in range(6)]
    samples = [Sample(f.name, f, i, 10) for i, f in enumerate(folders)] * 8
    for mode, crop in (("train", "center"), ("test", "ten")):
        settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=56, mode=mode, crop=crop, seed=1)
        loader = clip_loader(samples, settings, batch_size=2, num_workers=2, shuffle=mode == "train")
        in_process = clip_loader(samples, settings, batch_size=2, num_workers=0, shuffle=mode == "train")
        for epoch in range(2):
            set_loader_epoch(loader, epoch)
            set_loader_epoch(in_process, epoch)
            held, buffers = [], []
            for k, (clips, labels, _) in enumerate(loader):
                buffers.append(_buffer_id(clips))
                if k % 4 == 0:
                    held.append((clips, labels))
            expected = [(c, lab) for k, (c, lab, _) in enumerate(in_process) if k % 4 == 0]
            for (got, got_labels), (want, want_labels) in zip(held, expected, strict=True):
                as_views = (lambda c: c.views()) if isinstance(got, FrameViews) else (lambda c: c)
                assert torch.equal(as_views(got), as_views(want)) and torch.equal(got_labels, want_labels)
            assert len(buffers) == 24
            assert len(set(buffers)) < len(buffers)  # dropped batches' buffers came back


def test_a_forked_child_does_not_write_into_its_parents_buffers():
    received(*_batch(1))
    received(*_batch(2))  # the first buffer is free again, in the parent
    free = [s for s in batch_buffers._POOL.slots if batch_buffers._flag(s).value == 0]
    assert len(free) == 1
    address = free[0].data_ptr() + batch_buffers.HEADER
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a pool of its own (the parent's buffers are not even mapped here)
        try:
            _batch(9)
            os.write(write, b"1")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert ctypes.string_at(address, 2 * 3 * 8 * 8 * 3) == bytes([1]) * (2 * 3 * 8 * 8 * 3)
    assert _batch(3)[0].untyped_storage().data_ptr() == free[0].data_ptr()  # the parent still reuses it


def test_private_buffers_without_workers_are_reused_once_dropped():
    first = private_uint8((4, 8, 8, 3)).fill_(1)
    first_ptr = first.data_ptr()
    view = first[1:].permute(0, 3, 1, 2)  # the loop still holds the batch through a view
    del first
    second = private_uint8((4, 8, 8, 3)).fill_(2)
    assert second.data_ptr() != first_ptr and (view == 1).all()
    del view
    third = private_uint8((2, 8, 8, 3)).fill_(3)  # smaller: fits in the first batch's memory
    assert third.data_ptr() == first_ptr and (second == 2).all()
