"""The tf.data input pipeline: parallel decode and resize, a cache of resized images, batches.

    from kit.data.pipeline import load_images, training_stream, prediction_stream
    images = load_images(cfg, paths, "train")       # decoded once, then read from the cache
    stream = training_stream(cfg, images, labels)      # shuffled, augmented, batched, prefetched

Resized images are kept as uint8 in one array per image list: on disk as a memory-mapped .npy
(`data.cache: disk`, the default: 25,000 images at 224 px are 3.7 GB), in RAM (`memory`), or
not at all (`none`: every epoch decodes the JPEGs again). The file name carries a key of every
setting that produced it (the files, their sizes and times, the image size, the resize method),
so a change of any of them builds a new cache instead of reading a stale one. Before a disk cache is
written its size is checked against the free space (a refusal with both numbers, not a "Bus error" later)
and its blocks are reserved; the temporaries of killed runs in the cache folder are removed (only those
whose writer is gone: kit.fsutil.remove_stale_temporaries).
Batches hold float32 pixels in [0, 255]; each model does its own preprocessing.
"""
from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from kit import paths as kit_paths
from kit.data.augment import build_augmenter, tta_view
from kit import timings
from kit.config import Config
from kit.errors import KitError
from kit.fsutil import (atomic_path, gigabytes, remove_stale_temporaries, require_free_space,
                        require_writable, writing)

AUTOTUNE = tf.data.AUTOTUNE
# Part of the cache key. Plain bilinear, no antialiasing: that is how Keras' ImageNet backbones saw their
# training images, and it measured better here (MobileNetV2 features + the same logistic head, 600
# validation photos: log loss 0.0376 without antialiasing, 0.0416 with it).
RESIZE = {"method": "bilinear", "antialias": False, "version": 2}
CACHE_MARGIN = 64 * 1024 * 1024  # bytes kept free beyond a disk cache (1% for big ones)


def prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` prefetched, with tf.data's autotuner off.

    The autotuner's background thread made deleting a finished iterator wait for its next wake-up:
    0-25 s at the end of a pass over 2,000 images here (seen in a native stack: ~Iterator waiting on
    Model::OptimizeLoop), so at every epoch end and after every prediction pass. Off, AUTOTUNE still
    means one parallel call per core, and the throughput was the same (augmented 224-px stream,
    3 rounds: 553/724/705 img/s off vs 530/696/710 on, the "on" rounds paying up to 4.7 s more to delete).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(AUTOTUNE).with_options(options)


def decode_resize(path: tf.Tensor, size: int) -> tf.Tensor:
    """Read one image file (JPEG, PNG, GIF or BMP, by content) as a size x size x 3 uint8 tensor."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, [size, size], method=RESIZE["method"], antialias=RESIZE["antialias"])
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decoded_stream(paths: Sequence[str], size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of decoded, resized uint8 images in the order of `paths` (parallel, prefetched)."""
    ds = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    ds = ds.map(lambda p: decode_resize(p, size), num_parallel_calls=AUTOTUNE, deterministic=True)
    return prefetched(ds.batch(batch_size))


def cache_key(paths: Sequence[str], size: int) -> str:
    """A digest of everything that determines the cached pixels."""
    digest = hashlib.sha256(json.dumps({"size": size, "resize": RESIZE}).encode())
    for p in paths:
        stat = os.stat(p)
        digest.update(f"{p}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(paths: Sequence[str], size: int, out: np.ndarray, desc: str) -> None:
    """Decode every image into `out`, with a progress bar; a file that fails is named."""
    done, batch_size = 0, 64
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        try:
            for batch in decoded_stream(paths, size, batch_size):
                out[done:done + len(batch)] = batch.numpy()
                release_pages(out, done, done + len(batch))  # written: the page cache has them, not our RSS
                done += len(batch)
                bar.update(len(batch))
        except tf.errors.OpError as error:
            bad = _first_unreadable(paths[done:done + batch_size])
            raise KitError(f"cannot decode image {bad} ({str(error).splitlines()[0][:120]}): rerun `make data` to "
                           "re-check the images; if it passes this file, TensorFlow cannot read what Pillow can: "
                           "save it as PNG or remove it") from None


def _first_unreadable(paths: Sequence[str]) -> str:
    for p in paths:
        try:
            tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
        except tf.errors.OpError:
            return str(p)
    return "(one of " + ", ".join(map(str, paths[:3])) + ", ...)"


def cache_file(cfg: Config, paths: Sequence[str], name: str) -> Path:
    size = cfg.data.image_size
    return kit_paths.cache_dir(cfg) / f"{name}-{size}px-{len(paths)}-{cache_key(paths, size)}.npy"


def load_images(cfg: Config, paths: Sequence[str], name: str) -> np.ndarray | None:
    """Resized uint8 images for `paths`, from the cache (built on first use); None if cache=none."""
    size, mode = cfg.data.image_size, cfg.data.cache
    paths = [str(p) for p in paths]
    if mode == "none":
        return None
    if mode == "memory":
        images = np.empty((len(paths), size, size, 3), np.uint8)
        with timings.step(f"decode {name}", len(paths)):
            _decode_all(paths, size, images, f"decoding {name}")
        return images
    if mode != "disk":
        raise KitError(f"config key 'data.cache' must be disk, memory or none, got {mode!r}")
    final = cache_file(cfg, paths, name)
    for stale, freed in remove_stale_temporaries(final.parent):  # what killed runs left (their writer is gone)
        print(f"removed {stale} ({gigabytes(freed)}), left by an interrupted run", flush=True)
    if not final.exists():  # written under a temporary name: an interrupted build is never used
        _build_disk_cache(final, paths, size, name)
    return np.load(final, mmap_mode="r")


def cache_bytes(n: int, size: int) -> int:
    """What a disk cache of `n` images at `size` px needs: the pixels, the .npy header, and a margin."""
    pixels = n * size * size * 3 + 4096
    return pixels + max(CACHE_MARGIN, pixels // 100)


def _build_disk_cache(final: Path, paths: list[str], size: int, name: str) -> None:
    """Write the memory-mapped cache under a temporary name, its blocks reserved first.

    Writing a memory-mapped file on a full disk is a SIGBUS ("Bus error"), not an exception: so the free
    space is checked first (a message with the numbers), then the whole file is allocated (posix_fallocate
    fails with ENOSPC instead), and only then are pixels written.
    """
    folder = final.parent
    fix = "free space, set paths.cache_dir to a bigger disk, or data.cache=none"
    require_writable(folder, "paths.cache_dir", also=", or set data.cache=none")
    what = f"the pixel cache for {name} ({len(paths):,} images at {size}px)"
    require_free_space(folder, cache_bytes(len(paths), size), what, fix)
    with writing(folder, "paths.cache_dir", also=", or set data.cache=none"), \
            atomic_path(final, suffix=".npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        _reserve(tmp, what, folder, fix)
        with timings.step(f"decode {name}", len(paths)):
            _decode_all(paths, size, images, f"caching {name} at {size}px")
            images.flush()  # the pixels on disk are part of the cache's cost (GBs of writeback at full size)
        del images


def _reserve(path: Path, what: str, folder: Path, fix: str) -> None:
    """Allocate every block of `path` now, so that writing through the memory map cannot hit a full disk."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(folder).free
            raise KitError(f"{what} needs {gigabytes(os.fstat(fd).st_size)} in {folder}, {gigabytes(free)} free "
                           f"(the disk filled up): {fix}") from None
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


class JoinedImages:
    """Two image caches read as one array, `first`'s rows then `second`'s: train + validation for the refit on
    every labelled image (kit/train/refit.py) with no third copy of the pixels on disk."""

    def __init__(self, first: np.ndarray, second: np.ndarray):
        self.parts, self.split = (first, second), len(first)
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        out, low = np.empty((len(rows), *self.shape[1:]), np.uint8), rows < self.split
        out[low], out[~low] = self.parts[0][rows[low]], self.parts[1][rows[~low] - self.split]
        return out

    def release(self, first: int, end: int) -> None:
        release_pages(self.parts[0], min(first, self.split), min(end, self.split))
        release_pages(self.parts[1], max(first - self.split, 0), max(end - self.split, 0))


def release_pages(images: np.ndarray, first: int, end: int) -> None:
    """Unmap rows [first, end) of a memory-mapped cache from this process once they are copied out.

    The pages stay in the OS page cache (a later read is a cheap minor fault), but they stop counting in the
    process's resident memory: without this, reading a 25,000-image cache once leaves several GB resident
    (BENCHMARKS.md, "full size"), and a machine with less memory than the cache starts to swap."""
    if isinstance(images, JoinedImages):
        return images.release(first, end)
    mapping = getattr(images, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise") or end <= first:
        return
    row = images.strides[0]
    start = images.offset + first * row
    aligned = start - start % mmap.PAGESIZE
    try:
        mapping.madvise(mmap.MADV_DONTNEED, aligned, images.offset + end * row - aligned)
    except (OSError, ValueError):  # a platform without it: the memory is the OS's to manage then
        pass


def _batches(images: np.ndarray | None, paths: Sequence[str], size: int, labels: np.ndarray | None,
             order: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """(float32 images, labels) batches for the index stream `order`, from the cache or the files."""
    label_tensor = None if labels is None else tf.constant(labels)

    def with_labels(indices: tf.Tensor, batch: tf.Tensor):
        batch = tf.cast(batch, tf.float32)
        return batch if label_tensor is None else (batch, tf.gather(label_tensor, indices))

    if images is None:
        path_tensor = tf.constant([str(p) for p in paths])
        decoded = order.map(lambda i: (i, decode_resize(tf.gather(path_tensor, i), size)),
                            num_parallel_calls=AUTOTUNE, deterministic=True)
        return decoded.batch(batch_size).map(with_labels)

    def gather(indices: np.ndarray) -> np.ndarray:
        # Sorted reads are sequential on a memory-mapped file; the batch order is restored after.
        by_position = np.argsort(indices)
        out = np.empty((len(indices), size, size, 3), np.uint8)
        out[by_position] = images[indices[by_position]]
        release_pages(images, int(indices.min()), int(indices.max()) + 1)
        return out

    def load(indices: tf.Tensor):
        batch = tf.numpy_function(gather, [indices], tf.uint8, stateful=False)
        batch.set_shape([None, size, size, 3])
        return with_labels(indices, batch)

    return order.batch(batch_size).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def training_stream(cfg: Config, images: np.ndarray | None, labels: np.ndarray,
                    paths: Sequence[str] = (), augment: bool = True) -> tf.data.Dataset:
    """Shuffled (anew each epoch), augmented, batched (images, labels) for fit()."""
    n = len(labels)
    order = tf.data.Dataset.range(n).shuffle(n, seed=cfg.data.seed, reshuffle_each_iteration=True)
    ds = _batches(images, paths, cfg.data.image_size, labels, order, cfg.data.batch_size)
    augmenter = build_augmenter(cfg.augment, seed=cfg.data.seed) if augment else None
    if augmenter is not None:
        ds = ds.map(lambda x, y: (augmenter(x), y), num_parallel_calls=AUTOTUNE)
    return prefetched(ds)


def prediction_stream(cfg: Config, images: np.ndarray | None, n: int, paths: Sequence[str] = (),
                      view: str = "original", labels: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches in the order of the ids (never shuffled), seen through the test-time `view`."""
    transform = tta_view(view)
    order = tf.data.Dataset.range(n)
    ds = _batches(images, paths, cfg.data.image_size, labels, order, cfg.data.batch_size)
    if labels is None:
        ds = ds.map(transform, num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda x, y: (transform(x), y), num_parallel_calls=AUTOTUNE, deterministic=True)
    return prefetched(ds)
