"""The fast data path keeps the reference's numbers: uint8 clips normalized per batch, chunked test passes,
per-epoch randomness with persistent workers."""

import cv2
import numpy as np
import pytest
import torch
from conftest import write_frames

from tsnctl.data import transforms as T
from tsnctl.data.dataset import ClipDataset, ClipSettings, load_clip
from tsnctl.data.decode import read_frame_folder, read_image
from tsnctl.data.lists import Sample
from tsnctl.data.sampling import sample_rng
from tsnctl.data.views import FrameViews
from tsnctl.engine.evaluate import chunked_logits
from tsnctl.engine.loaders import clip_loader, model_input, set_loader_epoch
from tsnctl.errors import UserError
from tsnctl.models.tsn import TSN


def reference_float_path(views_hwc: np.ndarray) -> np.ndarray:
    """The reference's per-clip float path: stack as float32, transpose, x/255, minus mean, over std."""
    imgs = np.stack(views_hwc).astype("float32").transpose(0, 3, 1, 2)
    mean = np.array(T.MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(T.STD, dtype=np.float32).reshape(3, 1, 1)
    imgs = imgs / 255.0
    imgs -= mean
    imgs /= std
    return imgs


def test_uint8_clips_normalized_per_batch_equal_the_float_path(tmp_path):
    folders = [write_frames(tmp_path / f"clip{i}", 12, height=60, width=80, seed=i) for i in range(3)]
    samples = [Sample(f.name, f, i, 12) for i, f in enumerate(folders)]
    settings = ClipSettings("frames", num_seg=4, short_side=64, crop_size=56, crop="ten")
    loader = clip_loader(samples, settings, batch_size=2, num_workers=0)
    batches = [(clips, labels) for clips, labels, _ in loader]
    assert isinstance(batches[0][0], FrameViews) and batches[0][0].frames.dtype == torch.uint8
    assert batches[0][0].shape == (2, 40, 3, 56, 56)
    got = torch.cat([model_input(clips, torch.device("cpu")) for clips, _ in batches])
    for i, sample in enumerate(samples):
        hwc = load_clip(sample, settings, np.random.default_rng(0)).permute(0, 2, 3, 1).numpy()
        # bit for bit: the same float32 operations in the same order
        np.testing.assert_array_equal(got[i].numpy(), reference_float_path(hwc))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("mode, crop", [("train", "center"), ("test", "center"), ("test", "three"), ("test", "ten")])
def test_batches_hold_each_clips_own_views(tmp_path, mode, crop, shared):
    """Views written straight into a batch buffer (in shared memory, as in a worker) equal the clip's own."""
    folders = [write_frames(tmp_path / f"clip{i}", 9 + i, height=60, width=80, seed=i) for i in range(3)]
    samples = [Sample(f.name, f, i, 9 + i) for i, f in enumerate(folders)]
    settings = ClipSettings("frames", num_seg=4, short_side=64, crop_size=56, mode=mode, crop=crop, seed=3)
    dataset = ClipDataset(samples, settings)
    keys = [(7, 2), (7, 0), (7, 1)]
    clips, labels, bad = dataset.load_batch(keys, shared=shared)
    assert isinstance(clips, FrameViews) == (crop != "center" and mode == "test")  # 4 frames travel, not 40 views
    buffer = clips.frames if isinstance(clips, FrameViews) else clips
    assert buffer.is_shared() == shared and not bad and labels.tolist() == [2, 0, 1]
    assert clips.shape == (3, settings.views, 3, 56, 56)
    views = clips.views() if isinstance(clips, FrameViews) else clips
    for clip, (epoch, index) in zip(views, keys, strict=True):
        assert torch.equal(clip, load_clip(samples[index], settings, sample_rng(3, epoch, index)))


@pytest.mark.parametrize("crop", ["three", "ten"])
def test_frame_views_cut_any_range_of_views(tmp_path, crop):
    folders = [write_frames(tmp_path / f"clip{i}", 12, height=60, width=80, seed=i) for i in range(2)]
    settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=48, crop=crop)
    clips, _, _ = ClipDataset([Sample(f.name, f, 0, 12) for f in folders], settings).load_batch([0, 1])
    whole = clips.views()
    assert whole.movedim(2, -1).is_contiguous()  # each view [c, c, 3] in memory, like the loader's batches
    for start, stop in [(0, 1), (2, 7), (5, 6), (4, settings.views), (0, settings.views)]:
        assert torch.equal(clips.views(start, stop), whole[:, start:stop])
    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=5).eval()
    cpu = torch.device("cpu")
    with torch.no_grad():
        expected = chunked_logits(model, whole, cpu, 0)
        for max_views in (0, 4, 14):
            torch.testing.assert_close(chunked_logits(model, clips, cpu, max_views), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("crop", ["ten", "three"])
def test_batches_of_mixed_size_clips_equal_each_clip_alone(tmp_path, crop):
    """Clips of different frame sizes (landscape, portrait, one already at the short side, one unreadable)
    travel as frames in one batch: their views and model input are those of each clip on its own."""
    sizes = [(60, 80), (100, 64), (64, 120), (75, 90)]  # (height, width)
    samples = [Sample(f"c{i}", write_frames(tmp_path / f"c{i}", 8, height=h, width=w, seed=i), i, 8)
               for i, (h, w) in enumerate(sizes)]
    samples.insert(2, Sample("gone", tmp_path / "gone", 9, 8))
    settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=48, crop=crop)
    for shared in (False, True):
        clips, labels, bad = ClipDataset(samples, settings).load_batch(list(range(5)), shared=shared)
        assert isinstance(clips, FrameViews) and clips.shape == (4, settings.views, 3, 48, 48)
        assert labels.tolist() == [0, 1, 2, 3] and [b.name for b in bad] == ["gone"]
        alone = torch.stack([load_clip(s, settings, np.random.default_rng(0)) for s in samples if s.name != "gone"])
        assert torch.equal(clips.views(), alone)
        assert torch.equal(clips.views(5, 17), alone[:, 5:17])
        expected = T.normalize(alone.contiguous())  # the formula, not the table
        assert torch.equal(model_input(clips, torch.device("cpu")), expected)
        assert torch.equal(clips.normalized(5, 17), expected[:, 5:17])


def test_frames_are_decoded_into_one_clip_array_and_must_share_a_size(tmp_path):
    folder = write_frames(tmp_path / "clip", 6, height=60, width=80, seed=0)
    singles = [read_image(folder / f"img_{i + 1:05d}.jpg") for i in (4, 1, 4, 0)]
    assert np.array_equal(read_frame_folder(folder, [4, 1, 4, 0]), np.stack(singles))
    cv2.imwrite(str(folder / "img_00003.jpg"), np.zeros((60, 81, 3), np.uint8))
    with pytest.raises(UserError, match=r"clip: frames differ in size \(\(60, 80, 3\), \(60, 81, 3\)\)"):
        read_frame_folder(folder, [0, 2])


def test_a_test_batch_of_only_unreadable_clips_is_empty(tmp_path):
    settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=48, crop="ten")
    clips, labels, bad = ClipDataset([Sample("gone", tmp_path / "gone", 0, 8)], settings).load_batch([0])
    assert clips.shape == (0, 30, 3, 48, 48) and len(labels) == 0 and len(bad) == 1


def test_chunked_views_give_the_same_scores():
    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=7).eval()
    clips = torch.randint(0, 256, (2, 10, 3, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")
    with torch.no_grad():
        whole = chunked_logits(model, clips, cpu, 0)
        torch.testing.assert_close(whole, model(model_input(clips, cpu)))
        for max_views in (3, 7):  # both leave a short last chunk
            torch.testing.assert_close(chunked_logits(model, clips, cpu, max_views), whole, rtol=1e-5, atol=1e-5)


def test_persistent_workers_follow_the_epoch(tmp_path):
    folder = write_frames(tmp_path / "clip", 40, height=60, width=80)
    samples = [Sample("clip", folder, 0, 40), Sample("clip", folder, 1, 40)]
    settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=56, mode="train", seed=5)
    loader = clip_loader(samples, settings, batch_size=2, num_workers=1, shuffle=True, seed=0)
    assert loader.persistent_workers
    dataset = ClipDataset(samples, settings)
    for epoch in (0, 1, 2):
        set_loader_epoch(loader, epoch)
        ((clips, labels, _),) = list(loader)
        for clip, label in zip(clips, labels.tolist(), strict=True):
            expected = load_clip(samples[label], settings, sample_rng(5, epoch, label))
            assert torch.equal(clip, expected), f"epoch {epoch}: a worker drew another epoch's crops"
            assert torch.equal(clip, dataset[(epoch, label)][0])


def write_bframe_video(path, num_frames: int, height: int = 64, width: int = 96):
    """An H.264 mp4 with B-frames (decode order != presentation order); frame i shows a bar at x = 3*i."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"bf": "3", "g": "40"} if codec == "libx264" else {}
        stream.codec_context.max_b_frames = 3
        for i in range(num_frames):
            image = np.full((height, width, 3), 40, np.uint8)
            image[:, (3 * i) % width : (3 * i) % width + 6] = (250, 200, 30)
            image[: height // 2, :, 2] = (5 * i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def reference_extraction(video, folder) -> list[bytes]:
    """The reference's extraction: ``cv2.VideoCapture`` (FFmpeg's default threads), ``cv2.imwrite`` q95."""
    import cv2

    folder.mkdir(parents=True)
    capture, files = cv2.VideoCapture(str(video)), []
    while (frame := capture.read()[1]) is not None:
        cv2.imwrite(str(folder / "frame.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        files.append((folder / "frame.jpg").read_bytes())
    return files


def test_extracted_files_are_byte_identical_to_the_reference(tmp_path, example_avi):
    from tsnctl.bench import synthetic
    from tsnctl.prepare.extract import extract_video

    h264 = tmp_path / "textured.mp4"
    synthetic.write_h264(h264, synthetic.render_frames(70, height=96, width=128))  # > 2 write batches
    for video in (h264, write_bframe_video(tmp_path / "bframes.mp4", 30), example_avi):
        expected = reference_extraction(video, tmp_path / "reference" / video.name)
        for threads in (1, 0):  # one decoding thread per worker, or FFmpeg's choice
            folder = tmp_path / "frames" / f"{video.name}-{threads}"
            assert extract_video(video, folder, threads=threads)[0] == len(expected)
            assert [(folder / f"img_{i:05d}.jpg").read_bytes() for i in range(1, len(expected) + 1)] == expected


def test_video_path_matches_the_extracted_frames(tmp_path):
    from tsnctl.data.decode import count_folder_frames, read_frame_folder, read_video
    from tsnctl.prepare.extract import extract_video

    video = write_bframe_video(tmp_path / "clip.mp4", 60)
    folder = tmp_path / "frames" / "clip.mp4"
    extracted, _ = extract_video(video, folder)
    assert extracted == count_folder_frames(folder) == 60
    rng = np.random.default_rng(0)
    for indices in ([0, 1, 2], [59], [7, 3, 3, 40, 21], sorted(rng.choice(60, 8, replace=False).tolist())):
        seen = []
        from_video = read_video(video, lambda n, ids=indices, seen=seen: seen.append(n) or ids)
        from_frames = read_frame_folder(folder, indices)
        assert seen == [60]
        assert from_video.shape == from_frames.shape
        diff = np.abs(from_video.astype(int) - from_frames.astype(int))
        assert diff.mean() < 1.5, f"{indices}: frames differ by more than JPEG loss"
        # every frame is nearer its own JPEG than the JPEG of its neighbours: no off-by-one
        for k, i in enumerate(indices):
            for j in (i - 1, i + 1):
                if 0 <= j < 60:
                    other = read_frame_folder(folder, [j])[0].astype(int)
                    assert np.abs(from_video[k].astype(int) - other).mean() > diff[k].mean() + 1


def test_normalize_table_is_bit_identical_to_the_formula():
    """The CPU lookup table gives exactly the bits of the reference's float32 formula ((x/255 - mean)/std,
    each step rounded to float32): every value of every channel, in the loader's layout."""
    values = torch.arange(256, dtype=torch.uint8)
    pixels = torch.stack([values.roll(k) for k in range(3)], -1).view(1, 16, 16, 3)  # every value per channel
    batch = torch.cat([pixels, torch.randint(0, 256, (5, 16, 16, 3), dtype=torch.uint8)])
    clips = batch.permute(0, 3, 1, 2)  # [N, 3, H, W], each image [H, W, 3] in memory
    mean = torch.tensor(T.MEAN).view(3, 1, 1)
    std = torch.tensor(T.STD).view(3, 1, 1)
    formula = (clips.float() / 255.0 - mean) / std
    table = T.normalize(clips)
    assert table.stride() == clips.stride() and table.dtype == torch.float32
    assert torch.equal(table, formula)
    np.testing.assert_array_equal(table.numpy(), reference_float_path(batch.numpy()))


def test_model_input_reuses_its_memory_only_once_nothing_refers_to_it():
    """The float buffer is recycled (fresh pages cost more than normalizing), but a result that is still
    held, even only through a view or a numpy array, is never overwritten."""
    first = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)
    second = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)
    expected = T.normalize(first.contiguous())  # another layout: the formula, in memory of its own
    for keep in (lambda t: t, lambda t: t[:, 1:], lambda t: t.numpy()):
        result = T.normalize(first)
        held, address = keep(result), result.data_ptr()
        del result
        other = T.normalize(second)
        assert other.data_ptr() != address
        np.testing.assert_array_equal(np.asarray(held), np.asarray(keep(expected)))
        del held, other
    address = T.normalize(first).data_ptr()  # dropped at once
    assert T.normalize(second).data_ptr() == address


def test_model_input_made_under_inference_mode_can_still_feed_training():
    """predict runs under inference mode; the recycled buffer must not turn later training input into an
    inference tensor (autograd refuses to save those)."""
    clips = torch.randint(0, 256, (1, 2, 8, 8, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)  # loader layout
    with torch.inference_mode():
        T.normalize(clips)  # allocates the spare buffer; dropped at once
    conv = torch.nn.Conv2d(3, 2, 3)
    conv(T.normalize(clips).flatten(0, 1)).sum().backward()
    assert conv.weight.grad is not None


def test_normalize_is_the_same_for_every_memory_layout():
    hwc = torch.randint(0, 256, (2, 5, 16, 24, 3), dtype=torch.uint8)
    loader_layout = hwc.permute(0, 1, 4, 2, 3)  # what to_tensor + collate produce: [H, W, C] in memory
    contiguous = loader_layout.contiguous()
    odd = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)  # numel not a multiple of the tile
    expected = reference_float_path(contiguous.reshape(-1, 3, 16, 24).permute(0, 2, 3, 1).numpy())
    for clips in (loader_layout, contiguous):
        out = T.normalize(clips)
        assert out.shape == clips.shape and out.dtype == torch.float32
        np.testing.assert_array_equal(out.reshape(-1, 3, 16, 24).numpy(), expected)
    np.testing.assert_array_equal(T.normalize(odd).numpy(), reference_float_path(odd.permute(0, 2, 3, 1).numpy()))


def test_dct_scaled_decoding_gives_the_scale_size_and_close_pixels(tmp_path):
    """data.jpeg_dct_scale: a JPEG at least twice the short side decodes reduced, then lands on exactly the
    size Scale gives the full image; a smaller one decodes in full, as by default."""
    ys, xs = np.mgrid[0:300, 0:410]
    smooth = np.stack([xs * 0.5, ys * 0.7, (xs + ys) * 0.3], -1).astype(np.uint8)
    large = tmp_path / "large.jpg"
    cv2.imwrite(str(large), smooth)
    full = T.scale(read_image(large)[None], 64)[0]
    reduced = read_image(large, dct_short_side=64)
    assert reduced.shape == full.shape == (64, 87, 3)
    diff = np.abs(reduced.astype(int) - full)
    assert 0 < diff.mean() < 2  # decoded another way (not the full image), the same picture: a smooth image
    assert np.array_equal(read_image(large, dct_short_side=200), read_image(large))  # 300 < 2 x 200: in full

    folder = write_frames(tmp_path / "clip", 8, height=300, width=410)
    sample = Sample("clip", folder, 0, 8)
    for crop in ("center", "ten"):
        exact = ClipSettings("frames", num_seg=2, short_side=64, crop_size=56, crop=crop)
        fast = ClipSettings("frames", num_seg=2, short_side=64, crop_size=56, crop=crop, jpeg_dct_scale=True)
        a, b = (load_clip(sample, s, np.random.default_rng(0)) for s in (exact, fast))
        assert a.shape == b.shape and (a.int() - b.int()).abs().float().mean() < 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_frame_views_cut_on_the_gpu_equal_the_cpu_views(tmp_path):
    folder = write_frames(tmp_path / "clip", 12, height=60, width=80)
    settings = ClipSettings("frames", num_seg=3, short_side=64, crop_size=48, crop="ten")
    clips, _, _ = ClipDataset([Sample("clip", folder, 0, 12)], settings).load_batch([0])
    gpu = torch.device("cuda")
    assert torch.equal(clips.pin_memory().to(gpu).views(3, 17).cpu(), clips.views(3, 17))
    torch.manual_seed(0)
    model = TSN("resnet18", num_classes=5).eval()
    with torch.no_grad():
        expected = chunked_logits(model, clips, torch.device("cpu"), 0)
        got = chunked_logits(model.to(gpu), clips, gpu, 7).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
