"""Augmentation and test-time views: the only module that imports KerasCV.

KerasCV is end-of-life upstream (its layers moved into Keras core and KerasHub). Everything that
touches it is here, so swapping to `keras.layers.RandomBrightness` & co. is a one-file change.

Side-on photos (fast.ai's "transforms_side_on"): a horizontally flipped cat is still a cat, an
upside-down one is not a typical photo. So: horizontal flip, rotation up to ±10°, zoom in up to
1.1x, small brightness/contrast changes. Everything works on float batches in [0, 255].

Two engines give the same distribution of transforms:
- `fused` (default): flip, rotation and zoom folded into ONE affine warp per image (the same
  bilinear/reflect sampling as the ImageProjectiveTransformV3 kernel KerasCV's layers call once
  each, compiled with XLA), then KerasCV's brightness and contrast layers. Several times the
  throughput of the plain chain, because each of its warps resamples the whole batch (BENCHMARKS.md, section 1).
- `keras_cv`: the plain chain of KerasCV layers (RandomFlip, RandomRotation, RandomZoom, ...).
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from kit.config import AugmentConfig
from kit.errors import KitError

VALUE_RANGE = (0, 255)
Augmenter = Callable[[tf.Tensor], tf.Tensor]


def random_affine(images: tf.Tensor, flip: bool, max_degrees: float, max_zoom: float) -> tf.Tensor:
    """Flip, rotate and zoom each image of the batch with one bilinear warp (reflect at the edges)."""
    transforms = random_affine_transforms(tf.shape(images), flip, max_degrees, max_zoom)
    return warp_affine(tf.cast(images, tf.float32), transforms)


def random_affine_transforms(shape: tf.Tensor, flip: bool, max_degrees: float, max_zoom: float) -> tf.Tensor:
    """One random [a0, a1, a2, b0, b1, b2] per image of a batch of `shape`: flip, rotation, zoom about the centre."""
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    angle = tf.random.uniform([batch], -max_degrees, max_degrees) * (math.pi / 180.0)
    scale = 1.0 / tf.random.uniform([batch], 1.0, max(max_zoom, 1.0))  # output->input: < 1 zooms in
    mirror = tf.where(tf.random.uniform([batch]) < 0.5, -1.0, 1.0) if flip else tf.ones([batch])
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # The transform maps output (x, y) to input (a0 x + a1 y + a2, b0 x + b1 y + b2), about the centre.
    a0, a1, b0, b1 = cos * mirror, -sin, sin * mirror, cos
    a2, b2 = cx - a0 * cx - a1 * cy, cy - b0 * cx - b1 * cy
    return tf.stack([a0, a1, a2, b0, b1, b2], axis=1)


def _reflect(coordinate: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Fold a sampling coordinate back inside [0, size - 1] by mirroring at the edges (d c b a | a b c d)."""
    period = 2.0 * size
    coordinate = tf.math.floormod(coordinate + 0.5, period)
    coordinate = tf.where(coordinate >= size, period - coordinate, coordinate) - 0.5
    return tf.clip_by_value(coordinate, 0.0, size - 1.0)


# XLA-compiled: the same bilinear/reflect sampling as TF's ImageProjectiveTransformV3 kernel (the one
# KerasCV's layers call), measured faster on 2 CPU cores (BENCHMARKS.md, section 1) because XLA fuses the
# coordinate maths with the four gathers. Random numbers are drawn outside, so seeding behaves as in plain TF.
@tf.function(jit_compile=True, reduce_retracing=True)
def warp_affine(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Resample each image through its affine map [a0, a1, a2, b0, b1, b2] (output (x, y) -> input)."""
    batch, height, width, channels = tf.unstack(tf.shape(images))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    xs, ys = tf.reshape(xs, [1, -1]), tf.reshape(ys, [1, -1])
    a0, a1, a2, b0, b1, b2 = (transforms[:, i:i + 1] for i in range(6))
    source_x, source_y = _reflect(a0 * xs + a1 * ys + a2, w), _reflect(b0 * xs + b1 * ys + b2, h)
    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    pixels = tf.reshape(images, [batch, height * width, channels])

    def at(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.gather(pixels, y * width + x, batch_dims=1)

    top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx
    return tf.reshape(top * (1.0 - fy) + bottom * fy, tf.shape(images))


def _keras_cv_geometry(cfg: AugmentConfig, seed: int) -> list:
    import keras_cv  # lazy: importing KerasCV costs seconds and only training streams need it

    layers, steps = keras_cv.layers, []
    if cfg.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation_degrees > 0:
        steps.append(layers.RandomRotation(cfg.rotation_degrees / 360.0, fill_mode="reflect", seed=seed + 1))
    if cfg.zoom > 1.0:  # KerasCV: a negative factor zooms in; 1.1x shows 1/1.1 of the image
        steps.append(layers.RandomZoom((-(1.0 - 1.0 / cfg.zoom), 0.0), fill_mode="reflect", seed=seed + 2))
    return steps


def _keras_cv_photometric(cfg: AugmentConfig, seed: int) -> list:
    import keras_cv

    layers, steps = keras_cv.layers, []
    if cfg.brightness > 0:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=VALUE_RANGE, seed=seed + 3))
    if cfg.contrast > 0:
        steps.append(layers.RandomContrast(VALUE_RANGE, cfg.contrast, seed=seed + 4))
    return steps


def build_augmenter(cfg: AugmentConfig, seed: int = 0) -> Augmenter | None:
    """A batch -> batch function applying the configured random transforms, or None if disabled."""
    if cfg.engine not in ("fused", "keras_cv"):
        raise KitError(f"config key 'augment.engine' must be fused or keras_cv, got {cfg.engine!r}")
    if not cfg.enabled:
        return None
    steps: list[Augmenter] = []
    geometric = cfg.flip or cfg.rotation_degrees > 0 or cfg.zoom > 1.0
    if cfg.engine == "fused" and geometric:
        steps.append(lambda images: random_affine(images, cfg.flip, cfg.rotation_degrees, cfg.zoom))
    elif cfg.engine == "keras_cv":
        steps += [lambda images, layer=layer: layer(images, training=True) for layer in _keras_cv_geometry(cfg, seed)]
    steps += [lambda images, layer=layer: layer(images, training=True) for layer in _keras_cv_photometric(cfg, seed)]
    if not steps:
        return None

    def augment(images: tf.Tensor) -> tf.Tensor:
        for step in steps:
            images = step(images)
        return tf.clip_by_value(images, *VALUE_RANGE)

    return augment


def _zoom_centre(images: tf.Tensor, factor: float = 1.1) -> tf.Tensor:
    size = tf.shape(images)[1:3]
    return tf.image.resize(tf.image.central_crop(images, 1.0 / factor), size)


# Test-time views: deterministic transforms whose predictions are averaged (TTA).
TTA_VIEWS: dict[str, Augmenter] = {
    "original": lambda images: images,
    "hflip": tf.image.flip_left_right,
    "zoom": _zoom_centre,
    "zoom_hflip": lambda images: tf.image.flip_left_right(_zoom_centre(images)),
}


def tta_view(name: str) -> Augmenter:
    """The test-time view called `name`; an unknown name is an error listing the known ones."""
    if name not in TTA_VIEWS:
        raise KitError(f"unknown TTA view '{name}' in submit.tta: choose from {', '.join(TTA_VIEWS)}")
    return TTA_VIEWS[name]
