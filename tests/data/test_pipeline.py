"""The tf.data pipeline: cache keyed by its settings, order kept for prediction, pairs kept in training."""
import errno
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kit.data import pipeline
from kit.data.augment import build_augmenter, random_affine, warp_affine
from kit.config import AugmentConfig
from kit.errors import KitError
from tests.fixtures import dead_pid, free_space, running_process, temporary_name


def colour_images(folder, n, size=24):
    """n JPEGs whose flat colour encodes their index (red = 10 * i)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"  # PNG: lossless, so colours survive exactly
        Image.new("RGB", (size + i, size), (10 * i, 100, 200)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def small(cfg):
    cfg.data.image_size, cfg.data.batch_size = 16, 4
    return cfg


def test_disk_cache_built_once_and_keyed_by_settings(small, tmp_path, monkeypatch):
    paths = colour_images(tmp_path / "img", 10)
    images = pipeline.load_images(small, paths, "train")
    assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8
    assert [int(round(v)) for v in images[:, 8, 8, 0]] == [10 * i for i in range(10)]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].startswith("train-16px-10-")

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been reused")
    monkeypatch.setattr(pipeline, "_decode_all", no_decoding)
    np.testing.assert_array_equal(pipeline.load_images(small, paths, "train"), images)
    monkeypatch.undo()

    small.data.image_size = 12  # another size: another cache, the first one kept
    assert pipeline.load_images(small, paths, "train").shape == (10, 12, 12, 3)
    os.utime(paths[0], ns=(1, 1))  # a changed file: a new key
    pipeline.load_images(small, paths, "train")
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_unreadable_image_named_and_no_cache_left(small, tmp_path):
    paths = colour_images(tmp_path / "img", 5)
    with open(paths[3], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(KitError, match=r"cannot decode image .*3\.png"):
        pipeline.load_images(small, paths, "train")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_too_little_free_space_for_the_disk_cache_is_refused_with_the_numbers(small, tmp_path, monkeypatch):
    paths = colour_images(tmp_path / "img", 10)
    small.data.image_size = 224
    cache = tmp_path / "cache"
    (cache / "val-224px-2-0123456789abcdef.npy").parent.mkdir()
    (cache / "val-224px-2-0123456789abcdef.npy").write_bytes(b"an earlier cache")
    monkeypatch.setattr(shutil, "disk_usage", free_space(1.2e6))
    monkeypatch.setattr(pipeline, "_decode_all", lambda *a: pytest.fail("nothing may be written"))
    with pytest.raises(KitError) as error:
        pipeline.load_images(small, paths, "train")
    assert str(error.value) == (f"the pixel cache for train (10 images at 224px) needs 69 MB in {cache}, 1 MB free: "
                                "free space, set paths.cache_dir to a bigger disk, or data.cache=none")
    assert sorted(p.name for p in cache.iterdir()) == ["val-224px-2-0123456789abcdef.npy"]
    # the size asked for is what the file takes, plus the header and a margin
    pixels = 25_000 * 224 * 224 * 3 + 4096
    assert pipeline.cache_bytes(25_000, 224) == pixels + pipeline.CACHE_MARGIN and pixels > 3.7e9
    assert pipeline.cache_bytes(100_000, 224) == 4 * pixels - 3 * 4096 + (4 * pixels - 3 * 4096) // 100


def test_a_disk_that_fills_up_while_caching_is_an_error_not_a_bus_error(small, tmp_path, monkeypatch):
    paths = colour_images(tmp_path / "img", 10)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(KitError, match=r"^the pixel cache for train \(10 images at 16px\) needs 8 kB in .*cache, "
                                       r".* free \(the disk filled up\): free space, set paths.cache_dir"):
        pipeline.load_images(small, paths, "train")
    assert not any((tmp_path / "cache").iterdir())  # the temporary file is gone


def test_temporaries_of_killed_runs_are_removed_and_a_running_ones_kept(small, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    with running_process() as alive:
        killed = cache / temporary_name("train-16px-10-0123456789abcdef.npy", dead_pid(), ".npy")
        busy = cache / temporary_name("val-16px-10-0123456789abcdef.npy", alive, ".npy")
        for path in (killed, busy):
            path.write_bytes(b"\0" * 100_000)
        images = pipeline.load_images(small, colour_images(tmp_path / "img", 10), "train")
        assert images.shape == (10, 16, 16, 3) and not killed.exists() and busy.exists()
    printed = capsys.readouterr().out
    assert re.search(rf"removed {re.escape(str(killed))} \(10\d kB\), left by an interrupted run", printed)


def test_a_cache_folder_that_cannot_be_written_names_the_setting(small, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    small.paths.cache_dir = str(blocker / "cache")
    with pytest.raises(KitError, match=rf"^cannot write {blocker / 'cache'}: \[Errno 20\] Not a directory.*: a "
                                       r"part of that path is a file, not a folder: set paths.cache_dir to a folder, "
                                       r"or set data.cache=none$"):
        pipeline.load_images(small, colour_images(tmp_path / "img", 3), "train")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("mode", ["disk", "memory", "none"])
def test_prediction_stream_keeps_id_order_and_views(small, tmp_path, mode):
    small.data.cache = mode
    paths = colour_images(tmp_path / "img", 10)
    images = pipeline.load_images(small, paths, "test")
    batches = list(pipeline.prediction_stream(small, images, len(paths), paths))
    reds = np.concatenate([b.numpy()[:, 8, 8, 0] for b in batches])
    np.testing.assert_allclose(reds, [10 * i for i in range(10)], atol=1)
    flipped = next(iter(pipeline.prediction_stream(small, images, len(paths), paths, view="hflip"))).numpy()
    np.testing.assert_allclose(flipped, batches[0].numpy()[:, :, ::-1, :])
    with pytest.raises(KitError, match="unknown TTA view 'upside'"):
        pipeline.prediction_stream(small, images, len(paths), paths, view="upside")


@pytest.mark.parametrize("mode", ["disk", "none"])
def test_training_stream_shuffles_each_epoch_and_keeps_pairs(small, tmp_path, mode):
    small.data.cache = mode
    small.augment.enabled = False
    paths = colour_images(tmp_path / "img", 12)
    images = pipeline.load_images(small, paths, "train")
    labels = np.arange(12, dtype=np.int32)  # label = index, so pairs can be checked
    stream = pipeline.training_stream(small, images, labels, paths)
    epochs = []
    for _ in range(2):
        seen = []
        for x, y in stream:
            np.testing.assert_allclose(x.numpy()[:, 8, 8, 0], 10 * y.numpy(), atol=1)
            seen += list(y.numpy())
        assert sorted(seen) == list(range(12))  # every image once per epoch
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(12))


def test_every_stream_runs_without_the_autotuner(small, tmp_path):
    """Its thread held up deleting a finished iterator for up to tens of seconds (kit.pipeline.prefetched)."""
    paths = colour_images(tmp_path / "img", 4)
    images = pipeline.load_images(small, paths, "train")
    streams = [pipeline.training_stream(small, images, np.zeros(4, np.float32), paths),
               pipeline.prediction_stream(small, images, 4, paths), pipeline.decoded_stream(paths, 16, 2)]
    assert [stream.options().autotune.enabled for stream in streams] == [False, False, False]


def test_augmenter_stays_in_range_and_changes_images():
    rng = np.random.default_rng(0)
    batch = tf.constant(rng.uniform(0, 255, (8, 32, 32, 3)), tf.float32)
    for engine in ("fused", "keras_cv"):
        out = build_augmenter(AugmentConfig(engine=engine))(batch).numpy()
        assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 255
        assert np.abs(out - batch.numpy()).mean() > 1.0
    assert build_augmenter(AugmentConfig(enabled=False)) is None
    with pytest.raises(KitError, match="augment.engine"):
        build_augmenter(AugmentConfig(engine="magic"))


def test_fused_warp_with_flip_only_is_an_exact_mirror_or_identity():
    batch = tf.constant(np.random.default_rng(1).uniform(0, 255, (16, 20, 20, 3)), tf.float32)
    out = random_affine(batch, flip=True, max_degrees=0.0, max_zoom=1.0).numpy()
    original, mirrored = batch.numpy(), batch.numpy()[:, :, ::-1]
    kinds = [np.allclose(o, a, atol=1e-3) for o, a in zip(out, original)]
    mirrors = [np.allclose(o, m, atol=1e-3) for o, m in zip(out, mirrored)]
    assert all(k or m for k, m in zip(kinds, mirrors)) and any(kinds) and any(mirrors)


def test_fused_warp_matches_tensorflows_projective_transform_kernel():
    # Rotations and zooms large enough to sample outside the image, so the reflect fill is pinned too.
    rng = np.random.default_rng(2)
    batch = tf.constant(rng.uniform(0, 255, (6, 24, 20, 3)), tf.float32)
    angle, scale = rng.uniform(-0.6, 0.6, 6), rng.uniform(0.7, 1.3, 6)
    mirror = np.where(rng.uniform(size=6) < 0.5, -1.0, 1.0)
    a0, a1, b0, b1 = np.cos(angle) * scale * mirror, -np.sin(angle) * scale, np.sin(angle) * scale * mirror, np.cos(angle) * scale
    a2, b2 = 9.5 - a0 * 9.5 - a1 * 11.5 + rng.uniform(-3, 3, 6), 11.5 - b0 * 9.5 - b1 * 11.5
    transforms = np.stack([a0, a1, a2, b0, b1, b2], axis=1).astype(np.float32)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=batch, transforms=np.concatenate([transforms, np.zeros((6, 2), np.float32)], axis=1),
        output_shape=[24, 20], interpolation="BILINEAR", fill_mode="REFLECT", fill_value=0.0)
    np.testing.assert_allclose(warp_affine(batch, tf.constant(transforms)).numpy(), expected.numpy(), atol=0.05)


def test_released_cache_pages_keep_their_pixels_and_leave_resident_memory(tmp_path):
    """release_pages after a write or a read: the file holds every pixel, and the process holds few pages."""
    from kit.data.pipeline import release_pages

    def resident_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    path = tmp_path / "cache.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(1200, 128, 128, 3))
    before = resident_mb()
    for start in range(0, 1200, 100):  # as _decode_all writes the cache: a batch, then its pages released
        rows[start:start + 100] = start // 100 + 1
        release_pages(rows, start, start + 100)
    assert resident_mb() - before < 20  # 56 MB written, not held
    rows.flush()
    del rows
    cache = np.load(path, mmap_mode="r")
    before = resident_mb()
    for start in range(0, 1200, 100):
        assert (np.asarray(cache[start:start + 100]) == start // 100 + 1).all()
        release_pages(cache, start, start + 100)
    assert resident_mb() - before < 20
    release_pages(np.zeros((3, 2)), 0, 3)  # not memory-mapped: nothing to do
