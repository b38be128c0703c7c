"""Precomputed backbone features: fast.ai's `precompute=True` (TF for Poets' "bottlenecks"), cached on disk.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set train.finetune_epochs=0

With the backbone frozen, every image's pooled backbone output (what the head's dropout and dense
layers consume) never changes, so it is computed once and stored as a float32 .npy under
`cache/features/`. The head then trains on those vectors in memory (train.head=features,
kit/train/head.py): an epoch over thousands of images takes a fraction of a second, and test-time views
cost one cached array each. The forward passes run on `train.feature_engine` (kit/model/engine.py; speed
in BENCHMARKS.md, section 2), and a head-only run works at `train.feature_image_size` when that is set
(`run_config`).

A file is keyed by everything that determines its numbers: a SHA-256 of the backbone's weights
(so ImageNet, a weights file or a fine-tuned run each get their own features, and a submission can
never pair a head with another backbone's features), the model's architecture name, preprocessing
and pooling, the engine, the image size, the image list (paths, sizes, mtimes: the pixel cache's own key), the
test-time view, and for the augmented training passes the augmentation settings and the pass
number. The key is written beside each file as .json. Change any of them and the features are
recomputed; keep them and they are reused.

train.feature_passes = K adds K augmented passes over the training set (pass k uses
build_augmenter(cfg.augment, seed=k) with TF's global seed set to k, applied eagerly batch by batch
in file order, so a pass recomputed after its cache is deleted gives the same pictures); the head
trains on the original features plus all K passes. `predict_views_from_features` is TTA prediction
from cached features, for a head-only run's validation scores and submission.
"""
from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from tqdm import tqdm

from kit import timings
from kit.model import engine
from kit import paths as kit_paths
from kit.data import pipeline
from kit.data.augment import build_augmenter
from kit.config import Config, with_image_size
from kit.errors import KitError
from kit.fsutil import atomic_path, remove_stale_temporaries, require_free_space, write_text_atomic, writing

FEATURES_DIR = "features"
KEY_VERSION = 1  # bump when the way features are computed changes
POOL_LAYER = "head_pool"


# ---- the model's two halves -------------------------------------------------------------------------

_EXTRACTORS: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()


def feature_extractor(model: keras.Model) -> keras.Model:
    """Pixels -> pooled backbone features: the model up to and including `head_pool` (weights shared).

    One per model, so its compiled predict function is traced once, not once per view.
    """
    if model not in _EXTRACTORS:
        _EXTRACTORS[model] = keras.Model(model.inputs, model.get_layer(POOL_LAYER).output, name="features")
    return _EXTRACTORS[model]


def forward_function(cfg: Config, model: keras.Model, identity: dict):
    """The extractor's forward pass on the configured engine (kit/model/engine.py); its TFLite copy is kept on
    disk under the backbone's identity, so the next process (submit, a new experiment) reads it."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    saved = kit_paths.cache_dir(cfg) / FEATURES_DIR / f"engine-{identity['model']}-{digest}.tflite"
    return engine.model_function(cfg, feature_extractor(model), saved, identity["weights_sha256"])


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers after `head_pool` (dropout, optional dense + dropout, head_out): a plain chain."""
    names = [layer.name for layer in model.layers]
    if POOL_LAYER not in names:
        raise KitError(f"model {model.name} has no '{POOL_LAYER}' layer: features need a model from kit.model.backbones")
    return model.layers[names.index(POOL_LAYER) + 1:]


def head_model(model: keras.Model) -> keras.Model:
    """Features -> probabilities through the model's OWN head layers (weights shared, not copied)."""
    pool = model.get_layer(POOL_LAYER)
    features = keras.Input(tuple(pool.output.shape[1:]), name="features")
    x = features
    for layer in head_layers(model):
        x = layer(x)
    return keras.Model(features, x, name="head")


def is_head_only(cfg: Config) -> bool:
    """A run that trains the head on cached features and nothing else (fast.ai's precompute=True)."""
    return cfg.train.head == "features" and cfg.train.finetune_epochs == 0


def refits(cfg: Config) -> bool:
    """Whether the run is trained again on every labelled image (train.refit_all: true, false, or auto: a
    head-only run, whose refit costs seconds; a fine-tuned one's would double its training)."""
    choice = cfg.train.refit_all
    return is_head_only(cfg) if choice == "auto" else bool(choice)


def run_config(cfg: Config) -> Config:
    """The config a run works with: a head-only run's data.image_size is train.feature_image_size when set, its
    model.pooling train.feature_pooling (measured: avg_max helps frozen features and hurts fine-tuning); and
    submit.tta=[auto] resolved (`with_tta`).

    A frozen ImageNet backbone gives better features a little above the size it was trained at, because
    its random-resized-crop training showed objects larger than a whole photo at that size shows them
    (FixRes, Touvron et al. 2019; measured in the competition config's comment). A run that fine-tunes
    adapts the backbone to its size instead, so both its stages keep data.image_size.
    """
    size, pooling, head_only = cfg.train.feature_image_size, cfg.train.feature_pooling, is_head_only(cfg)
    cfg = with_tta(cfg, mirrored_in_training(asdict(cfg.train), asdict(cfg.augment)))
    if pooling and head_only and pooling != cfg.model.pooling:  # train.feature_pooling, as the size
        cfg = replace(cfg, model=replace(cfg.model, pooling=pooling))
    return with_image_size(cfg, size) if size and head_only else cfg


def with_pooling_of(cfg: Config, model: keras.Model) -> Config:
    """cfg with model.pooling as the loaded model has it (a head-only run's train.feature_pooling), so the plan
    reads the probe its training measured."""
    from kit.model.backbones import POOLING

    kind = type(model.get_layer(POOL_LAYER))
    pooling = next((name for name, make in POOLING.items() if type(make()) is kind), cfg.model.pooling)
    return cfg if pooling == cfg.model.pooling else replace(cfg, model=replace(cfg.model, pooling=pooling))


def mirrored_in_training(train: dict, augment: dict) -> bool:
    """Whether a run with these train and augment settings (a run folder's saved config) saw mirrored pictures:
    any training on augmented images with augment.flip, or a head on features with augmented passes of them."""
    flips = bool(augment.get("enabled", True) and augment.get("flip", True))
    on_features_alone = train.get("head") == "features" and train.get("finetune_epochs") == 0
    return flips and (not on_features_alone or bool(train.get("feature_passes")))


def saw_mirrored(run_dir) -> bool:
    """Whether a run folder's model was trained on mirrored pictures, by its saved config."""
    saved = run_dir.saved_config()
    return mirrored_in_training(saved.get("train") or {}, saved.get("augment") or {})


def with_tta(cfg: Config, mirrored: bool) -> Config:
    """submit.tta=[auto] resolved: [original, hflip] for a model that saw mirrored pictures in training,
    [original] for one that never did. Measured on the mini competition (256 px features, a logistic head on
    un-mirrored ones, kit's split): the mirrored view alone 0.0388 log loss against 0.0253, averaged with the
    original 0.0275-0.0287: a mirrored photo is one that head has never seen, and it costs a pass per image."""
    if list(cfg.submit.tta) != ["auto"]:
        return cfg
    return replace(cfg, submit=replace(cfg.submit, tta=["original", "hflip"] if mirrored else ["original"]))


# ---- the cache key ----------------------------------------------------------------------------------

def backbone_identity(model: keras.Model) -> dict:
    """What makes the feature extractor's numbers: architecture, preprocessing, pooling, weights' digest."""
    digest = engine.weights_digest(feature_extractor(model).weights)  # trainable and BatchNorm statistics alike
    preprocess = model.get_layer("preprocess")
    return {"model": model.name, "input_shape": list(model.inputs[0].shape[1:]),
            "preprocess": [type(preprocess).__name__, _plain(preprocess.get_config(), drop=("name", "trainable"))],
            "pooling": type(model.get_layer(POOL_LAYER)).__name__, "weights_sha256": digest}


def _plain(config: dict, drop=()) -> dict:
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in drop}, default=str))


def feature_key(cfg: Config, identity: dict, paths: Sequence[str], view: str, augment_pass: int = 0) -> dict:
    key = {"version": KEY_VERSION, **identity, "engine": engine.engine_name(cfg), "image_size": cfg.data.image_size,
           "images": len(paths), "images_key": pipeline.cache_key(paths, cfg.data.image_size), "view": view}
    if augment_pass:
        key.update(augment_pass=augment_pass, augment=asdict(cfg.augment))
    return key


def feature_file(cfg: Config, key: dict, name: str) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    view = f"aug{key['augment_pass']}" if key.get("augment_pass") else key["view"]
    return (kit_paths.cache_dir(cfg) / FEATURES_DIR /
            f"{name}-{view}-{key['model']}-{key['image_size']}px-{key['images']}-{digest}.npy")


# ---- computing and caching --------------------------------------------------------------------------

def features(cfg: Config, model: keras.Model, paths: Sequence[str], name: str, view: str = "original",
             augment_pass: int = 0, identity: dict | None = None) -> np.ndarray:
    """(n, dim) float32 features of `paths` seen through `view` (or augmentation pass k > 0), cached.

    `name` ("train", "val", "test") names the files and the shared pixel cache.
    """
    paths = [str(p) for p in paths]
    size = tuple(model.inputs[0].shape[1:3])
    if size != (cfg.data.image_size,) * 2:
        raise KitError(f"the model takes {size[0]}px images but data.image_size is {cfg.data.image_size}: "
                       f"set data.image_size={size[0]}")
    identity = identity or backbone_identity(model)
    key = feature_key(cfg, identity, paths, view, augment_pass)
    final = feature_file(cfg, key, name)
    if final.exists():
        return np.load(final)
    with writing(final.parent, "paths.cache_dir"):
        final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)  # what a killed run left; never a running process's file
    dim = feature_extractor(model).output.shape[-1]
    require_free_space(final.parent, len(paths) * dim * 4 + 64 * 2 ** 20, f"the feature cache for {name}",
                       "free space, set paths.cache_dir to a bigger disk")  # before minutes of forward passes
    out = _compute(cfg, model, paths, name, view, augment_pass, identity)
    with writing(final.parent, "paths.cache_dir"), timings.step(f"features {name}"):  # writing is part of it
        write_text_atomic(final.with_suffix(".json"), json.dumps(key, indent=2) + "\n")
        with atomic_path(final, suffix=".npy") as tmp:  # an interrupted run never leaves a partial file
            np.save(tmp, out)
    return out


def _compute(cfg: Config, model: keras.Model, paths: list[str], name: str, view: str,
             augment_pass: int, identity: dict) -> np.ndarray:
    """Forward passes over every image, with a progress bar (rate, ETA)."""
    import tensorflow as tf

    out = np.empty((len(paths), feature_extractor(model).output.shape[-1]), np.float32)
    augment = None
    if augment_pass:
        augment = build_augmenter(cfg.augment, seed=augment_pass)  # not None: the config requires augment.enabled
        tf.random.set_seed(augment_pass)  # the fused augmenter draws from TF's global generator
    if not paths:
        return out
    images = pipeline.load_images(cfg, paths, name)  # the pixel cache other stages share
    stream = pipeline.prediction_stream(cfg, images, len(paths), paths, view="original" if augment else view)
    label = f"aug{augment_pass}" if augment else view
    forward, done = forward_function(cfg, model, identity), 0
    with timings.step(f"features {name}", len(paths)), \
            tqdm(total=len(paths), desc=f"features {name}/{label}", unit="img") as bar:
        for batch in stream:
            if augment is not None:
                batch = augment(batch)  # eagerly, in order: the same pass gives the same pictures
            out[done:done + len(batch)] = forward(np.asarray(batch))
            done += len(batch)
            bar.update(len(batch))
    return out


def training_features(cfg: Config, model: keras.Model, paths: Sequence[str], labels: np.ndarray,
                      identity: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The original training features plus `train.feature_passes` augmented passes, and their labels."""
    passes = cfg.train.feature_passes
    identity = identity or backbone_identity(model)
    parts = [features(cfg, model, paths, "train", "original", k, identity) for k in range(passes + 1)]
    return np.concatenate(parts), np.concatenate([labels] * (passes + 1))


def predict_views_from_features(cfg: Config, model: keras.Model, paths: Sequence[str], views: Sequence[str],
                                name: str) -> np.ndarray:
    """Probabilities averaged over test-time `views`, from cached features and the model's head.

    Same shapes as kit.model.inference.predict_views: binary -> P(class 1) per image, else (n, classes).
    Features missing from the cache are computed (and cached) first.
    """
    identity, head = backbone_identity(model), head_model(model)
    total = None
    for view in views:
        vectors = features(cfg, model, paths, name, view, identity=identity)
        probabilities = probabilities_of(head, vectors)
        total = probabilities if total is None else total + probabilities
    mean = total / len(views)
    return mean[:, 0] if mean.shape[1] == 1 else mean


def probabilities_of(head: keras.Model, vectors: np.ndarray) -> np.ndarray:
    """The head's outputs for feature vectors in one eager call: a few small ops over the whole array beat
    tracing a predict function, and there are no batches for a DataParallel distribution to split unevenly."""
    return keras.ops.convert_to_numpy(head(vectors, training=False)).astype(np.float64)
