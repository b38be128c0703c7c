"""Input pipeline: kit's cached tf.data stream against keras.utils.image_dataset_from_directory.

    .venv/bin/python bench/run.py --only pipeline      (runs `pipeline_section` in a worker process)

Every variant is measured in the same process, round-robin (A B C ... A B C ...), and the median
pass is kept, so a change of machine load hits all of them alike. The baseline gets the SAME
augmentation (kit's own augmenter, mapped over its batches), so the comparison isolates the input
pipeline: decoding every epoch (Keras) against decoding once into a memory-mapped uint8 cache (kit).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bench.common import Timing, best_of, timed
from bench.images import labels_of


def kit_config(cache_dir: str, image_size: int, batch_size: int, engine: str = "fused", cache: str = "disk"):
    from kit.config import load_config

    cfg = load_config(None, [f"paths.cache_dir={cache_dir}", f"data.image_size={image_size}",
                             f"data.batch_size={batch_size}", f"data.cache={cache}"])
    cfg.augment = dataclasses.replace(cfg.augment, engine=engine)
    return cfg


def epoch(ds) -> dict:
    """Iterate one epoch of (images, labels) or images batches; images/s and images per CPU-second."""
    def run() -> int:
        n = 0
        for batch in ds:
            n += len(batch[0] if isinstance(batch, tuple) else batch)
        return n

    n, timing = timed(run)
    return timing.rate(n)


def warm_up(ds, batches: int = 2) -> None:
    for _ in ds.take(batches):
        pass


def keras_directory(folder: str, image_size: int, batch_size: int, seed: int):
    """The baseline: Keras' own folder loader, as its tutorials use it (parallel decode, shuffled, prefetched)."""
    import keras

    return keras.utils.image_dataset_from_directory(folder, label_mode="binary", image_size=(image_size, image_size),
                                                    batch_size=batch_size, shuffle=True, seed=seed, verbose=False)


def augmented(ds, augmenter):
    """`ds` with `augmenter` mapped over its batches, as kit's training_stream does it."""
    import tensorflow as tf

    return ds.map(lambda x, y: (augmenter(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def round_robin(streams: dict, repeats: int) -> dict:
    """Each stream's median epoch over `repeats` passes, the streams taking turns."""
    for ds in streams.values():
        warm_up(ds)
    passes = {name: [] for name in streams}
    for _ in range(repeats):
        for name, ds in streams.items():
            passes[name].append(epoch(ds))
    return {name: best_of(rates) for name, rates in passes.items()}


def pipeline_section(files: list[str], class_dir: str, work: str, image_size: int = 224, batch_size: int = 32,
                     repeats: int = 3, seed: int = 42) -> dict:
    """Section 1: first epoch (cache build), cached epochs, decode-only, both augmentation engines."""
    from kit.data import pipeline
    from kit.data.augment import build_augmenter

    cfg = kit_config(str(Path(work) / "cache-pipeline"), image_size, batch_size)
    cfg_cv = kit_config(cfg.paths.cache_dir, image_size, batch_size, engine="keras_cv")
    labels = labels_of(files)
    images, build = timed(lambda: pipeline.load_images(cfg, files, "bench"))
    first = epoch(pipeline.training_stream(cfg, images, labels, files))
    first_total = Timing(build.seconds + first["seconds"], build.cpu_seconds + first["cpu_seconds"]).rate(len(files))
    keras_ds = lambda: keras_directory(class_dir, image_size, batch_size, seed)  # noqa: E731
    streams = {
        "kit_fused": pipeline.training_stream(cfg, images, labels, files),
        "keras_fused": augmented(keras_ds(), build_augmenter(cfg.augment, seed=seed)),
        "kit_keras_cv": pipeline.training_stream(cfg_cv, images, labels, files),
        "keras_keras_cv": augmented(keras_ds(), build_augmenter(cfg_cv.augment, seed=seed)),
        "kit_plain": pipeline.training_stream(cfg, images, labels, files, augment=False),
        "kit_decode": pipeline.decoded_stream(files, image_size, batch_size),
        "keras_plain": keras_ds(),
    }
    return {"images": len(files), "image_size": image_size, "batch_size": batch_size, "repeats": repeats,
            "cache_build": build.rate(len(files)), "first_epoch": first, "first_epoch_total": first_total,
            "streams": round_robin(streams, repeats), "augment_parts": augmentation_parts(cfg, batch_size),
            "kit_resize": dict(pipeline.RESIZE)}


def augmentation_parts(cfg, batch_size: int, batches: int = 8) -> dict:
    """Each part of the augmentation alone on an in-memory batch: where an augmented epoch's time goes."""
    import tensorflow as tf

    from kit.data.augment import build_augmenter

    size, a = cfg.data.image_size, cfg.augment
    x = tf.random.uniform([batch_size, size, size, 3], 0, 255, seed=2)
    parts = {"fused: all": a,
             "fused: flip + rotation + zoom warp only": dataclasses.replace(a, brightness=0.0, contrast=0.0),
             "brightness + contrast only": dataclasses.replace(a, flip=False, rotation_degrees=0.0, zoom=1.0),
             "keras_cv chain: all": dataclasses.replace(a, engine="keras_cv")}
    functions = {name: build_augmenter(settings, seed=1) for name, settings in parts.items()}
    functions["baseline: the same warp in TF's ImageProjectiveTransformV3 kernel (not XLA)"] = \
        lambda images: _warp(images, "BILINEAR")
    functions["alternative: the same warp, nearest-neighbour"] = lambda images: _warp(images, "NEAREST")
    functions["alternative: flip + zoom as one crop_and_resize (no rotation)"] = _flip_zoom_crop
    compiled = {name: tf.function(augment) for name, augment in functions.items()}
    for fn in compiled.values():
        fn(x).numpy()  # trace (and XLA-compile) once, outside the timing
    runs = {name: [] for name in compiled}
    for _ in range(3):  # interleaved rounds, the median kept: one slow moment must not decide a row
        for name, fn in compiled.items():
            _, timing = timed(lambda: [fn(x).numpy() for _ in range(batches)])
            runs[name].append(timing.rate(batches * batch_size))
    return {name: best_of(rates) for name, rates in runs.items()}


def _warp(images, interpolation: str, degrees: float = 10.0, zoom: float = 1.1):
    """kit's fused warp (same random transforms) done by TF's ImageProjectiveTransformV3 kernel: a comparison."""
    import tensorflow as tf

    from kit.data.augment import random_affine_transforms

    transforms = random_affine_transforms(tf.shape(images), True, degrees, zoom)
    transforms = tf.pad(transforms, [[0, 0], [0, 2]])  # the kernel's 8 parameters: no projective part
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms,
                                                output_shape=tf.shape(images)[1:3], interpolation=interpolation,
                                                fill_mode="REFLECT", fill_value=0.0)


def _flip_zoom_crop(images, zoom: float = 1.1):
    """Flip and zoom in one tf.image.crop_and_resize (a box with x1 > x2 samples a mirrored crop): a candidate."""
    import tensorflow as tf

    batch, size = tf.shape(images)[0], tf.shape(images)[1:3]
    side = 1.0 / tf.random.uniform([batch], 1.0, zoom)
    top, left = (1.0 - side) * tf.random.uniform([batch]), (1.0 - side) * tf.random.uniform([batch])
    flip = tf.random.uniform([batch]) < 0.5
    x1, x2 = tf.where(flip, left + side, left), tf.where(flip, left, left + side)
    boxes = tf.stack([top, x1, top + side, x2], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size)


def cache_mode(files: list[str], work: str, mode: str, image_size: int = 224, batch_size: int = 32,
               epochs: int = 2) -> dict:
    """One `data.cache` setting in a fresh process: cache build, then `epochs` augmented epochs."""
    from kit.data import pipeline

    cfg = kit_config(str(Path(work) / f"cache-{mode}"), image_size, batch_size, cache=mode)
    labels = labels_of(files)
    images, build = timed(lambda: pipeline.load_images(cfg, files, "bench"))
    stream = pipeline.training_stream(cfg, images, labels, files)
    passes = [epoch(stream) for _ in range(epochs)]
    return {"mode": mode, "images": len(files), "load": build.rate(len(files)), "epochs": passes}


def parallelism(files: list[str], work: str, image_size: int = 224, batch_size: int = 32, repeats: int = 2,
                settings: tuple = ("autotune", 1, 2)) -> dict:
    """tf.data parallelism and prefetch depth: AUTOTUNE (kit) against fixed values, decode and augment."""
    import tensorflow as tf

    from kit.data import pipeline

    cfg = kit_config(str(Path(work) / "cache-parallelism"), image_size, batch_size)
    labels = labels_of(files)
    images = pipeline.load_images(cfg, files, "bench")
    results = {str(s): {"decode": [], "augmented": []} for s in settings}
    original = pipeline.AUTOTUNE
    try:
        for _ in range(repeats):
            for setting in settings:
                # kit.data.pipeline reads AUTOTUNE at call time for every map and prefetch it builds
                pipeline.AUTOTUNE = tf.data.AUTOTUNE if setting == "autotune" else int(setting)
                decode = pipeline.decoded_stream(files, image_size, batch_size)
                stream = pipeline.training_stream(cfg, images, labels, files)
                warm_up(stream)
                results[str(setting)]["decode"].append(epoch(decode))
                results[str(setting)]["augmented"].append(epoch(stream))
    finally:
        pipeline.AUTOTUNE = original
    return {"images": len(files), "settings": {name: {kind: best_of(rates) for kind, rates in kinds.items()}
                                               for name, kinds in results.items()}}


def sizes_of(files: list[str]) -> dict:
    """Mean width and height of (up to 200 of) the pictures, for the record."""
    from PIL import Image

    dims = []
    for path in files[:200]:
        with Image.open(path) as image:
            dims.append(image.size)
    return {"mean_width": round(float(np.mean([d[0] for d in dims]))),
            "mean_height": round(float(np.mean([d[1] for d in dims])))}
