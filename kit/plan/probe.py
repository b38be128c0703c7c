"""A short timed probe of this machine with this config: how fast it decodes, extracts features, trains, predicts.

    python -m kit plan --config configs/dogs-vs-cats-redux.yaml     # probes once, then reads cache/probes/

A few batches through the real code: the tf.data decoder (`pipeline.decoded_stream`) on a sample of the
index's own photos, the feature extractor on the configured engine (its TFLite copy is converted here, and
kept: the run does not convert it again), Keras' forward pass, and the train step of each stage the config
runs (frozen backbone, unfrozen with the layer-group optimizer, the head on feature vectors), each timed
after a warm-up call so tracing is measured apart (`warmup_s`). Rates are images per second. The result is
kept under <cache>/probes/, keyed by what decides the speed (machine, model, image size, batch, engine,
device settings), so `train` and `submit` print their plan without probing again.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kit import paths as kit_paths
from kit.config import Config
from kit.fsutil import write_text_atomic

VERSION = 5  # bump when what is measured changes
DECODE_SAMPLE = 128
STEPS = 5  # timed train steps per stage, after two untimed ones


def probe_key(cfg: Config, n_classes: int, finetune: bool, head: str) -> dict:
    import tensorflow as tf

    from kit.model import device, engine

    return {"version": VERSION, "host": platform.node(), "cpus": engine.cpu_cores(), "tf": tf.__version__,
            "devices": [d.device_type for d in tf.config.list_logical_devices()],
            "model": asdict(cfg.model), "augment": asdict(cfg.augment), "size": cfg.data.image_size,
            "batch": cfg.data.batch_size, "engine": engine.engine_name(cfg), "jit": device.jit_compile(cfg),
            "mixed": cfg.train.mixed_precision, "distribute": cfg.train.distribute, "classes": n_classes,
            "finetune": finetune, "head": head, "group_lr_ratios": cfg.train.group_lr_ratios}


def probe_file(cfg: Config, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return kit_paths.cache_dir(cfg) / "probes" / f"probe-{cfg.model.backbone}-{cfg.data.image_size}px-{digest}.json"


def _rate(images: int, seconds: float) -> float:
    return images / max(seconds, 1e-6)


def decode_rate(paths: list[str], size: int, repeats: int = 4) -> float:
    """Images/s of the pixel cache's decoder (`pipeline.decoded_stream` in _decode_all's batches of 64) in its
    steady state: one stream over `paths` `repeats` times, timed after the first round. A fresh stream of 128
    images is mostly tf.data's set-up and AUTOTUNE's ramp, which 20,000 images spread out (measured: a whole
    short pass put the decode of 20,000 images at 1.3-1.9x its time, BENCHMARKS.md, section 6)."""
    import tempfile

    from kit.data.pipeline import decoded_stream, release_pages

    n = len(paths) * repeats
    with tempfile.TemporaryDirectory() as folder:  # written as the cache is: into a new memory-mapped file
        out = np.lib.format.open_memmap(Path(folder) / "probe.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        done, started = 0, None
        for images in decoded_stream(paths * repeats, size, 64):
            out[done:done + len(images)] = images.numpy()
            release_pages(out, done, done + len(images))
            done += len(images)
            if started is None and done >= len(paths):
                started, timed_from = time.perf_counter(), done
        del out
    return _rate(done - timed_from, time.perf_counter() - started)


def stream_rate(cfg: Config, forward, images: np.ndarray, passes: int = 2) -> tuple[float, float]:
    """(first pass s, images/s) of `forward` over kit's prediction stream of `images`: the tf.data batches and
    the copies the real feature and prediction passes pay, not only the engine."""
    from kit.data.pipeline import prediction_stream

    def one_pass() -> float:
        started = time.perf_counter()
        for batch in prediction_stream(cfg, images, len(images)):
            forward(np.asarray(batch))
        return time.perf_counter() - started

    warmup = one_pass()
    seconds = sum(one_pass() for _ in range(passes))
    return warmup, _rate(passes * len(images), seconds)


def timed_calls(call, batch: np.ndarray, calls: int) -> tuple[float, float]:
    """(first call's seconds, images/s of the next `calls`)."""
    started = time.perf_counter()
    call(batch)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(calls):
        call(batch)
    return warmup, _rate(calls * len(batch), time.perf_counter() - started)


def train_rate(cfg: Config, model, images: np.ndarray, labels: np.ndarray, unfrozen: bool, n_classes: int):
    """(warm-up s, images/s) of model.train_on_batch on augmented batches, frozen or with layer-group rates."""
    from kit.data.pipeline import training_stream
    from kit.model.backbones import set_backbone_trainable
    from kit.train.recipe import compile_model, label_array, optimizer, unfreeze

    if unfrozen:
        chosen = optimizer(cfg, cfg.train.lr, unfreeze(cfg, model))
    else:
        set_backbone_trainable(model, False)
        chosen = optimizer(cfg, cfg.train.head_lr)
    compile_model(model, chosen, cfg, n_classes)
    # Batches pulled from the live stream while training, as fit() does: the augmentation's map competes with
    # the step for the same cores (batches made beforehand put a fine-tune epoch at 0.8x its time).
    stream = iter(training_stream(cfg, images, label_array(labels, n_classes)).repeat())
    started = time.perf_counter()
    model.train_on_batch(*next(stream))  # traces the step: the first epoch's extra cost
    warmup = time.perf_counter() - started
    model.train_on_batch(*next(stream))  # one more untimed: memory still being laid out
    started, done = time.perf_counter(), 0
    for _ in range(STEPS):
        x, y = next(stream)
        model.train_on_batch(x, y)
        done += len(x)
    return warmup, _rate(done, time.perf_counter() - started)


def head_rate(cfg: Config, dim: int, n_classes: int) -> tuple[float, float, float]:
    """(samples/s, seconds per epoch besides its samples, the first call's tracing) of the head on features, as
    kit/train/head.py runs it: timed at two epoch sizes, since each epoch also pays its validation pass and
    callbacks (measured: one size alone put the head's 5-7 s at 1.4-1.7x)."""
    import keras
    import tensorflow as tf

    from kit.data.pipeline import prefetched
    from kit.train.recipe import compile_model, label_array, optimizer

    head = keras.Sequential([keras.Input((dim,)), keras.layers.Dropout(cfg.model.dropout),
                             keras.layers.Dense(1 if n_classes == 2 else n_classes,
                                                activation="sigmoid" if n_classes == 2 else "softmax")])
    compile_model(head, optimizer(cfg, cfg.train.head_lr), cfg, n_classes)
    head.steps_per_execution = 32
    rng, epochs, seconds = np.random.default_rng(0), 4, {}
    for n in (4096, 16384):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        y = label_array(np.arange(n) % n_classes, n_classes)
        # As kit/train/head.py feeds it: tf.data from the arrays, shuffled each epoch, prefetched.
        train = prefetched(tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0).batch(cfg.data.batch_size))
        val = prefetched(tf.data.Dataset.from_tensor_slices((x[:2048], y[:2048])).batch(4096))
        began = time.perf_counter()
        head.fit(train, epochs=1, verbose=0, validation_data=val)  # traced for this dataset first
        seconds.setdefault("first", time.perf_counter() - began)
        started = time.perf_counter()
        head.fit(train, epochs=epochs, verbose=0, validation_data=val)  # in one call, as the head's epochs run
        seconds[n] = (time.perf_counter() - started) / epochs
    rate = (16384 - 4096) / max(seconds[16384] - seconds[4096], 1e-6)
    return rate, max(0.0, seconds[4096] - 4096 / rate), seconds["first"] - seconds[4096]


def measure(cfg: Config, sample_paths: list[str], labels: np.ndarray, n_classes: int, finetune: bool,
            head: str) -> dict:
    """Every rate this config's steps need, measured now."""
    from kit.data.pipeline import decoded_stream
    from kit.model import engine, features
    from kit.model.backbones import build_model

    started = time.perf_counter()
    size, batch = cfg.data.image_size, cfg.data.batch_size
    rates = {"decode": decode_rate(sample_paths, size)}
    images = np.concatenate([b.numpy() for b in decoded_stream(sample_paths, size, batch)])
    began = time.perf_counter()
    model = build_model(cfg, n_classes)  # what every training or prediction process pays first
    rates["build_s"] = time.perf_counter() - began
    identity = features.backbone_identity(model)
    began = time.perf_counter()
    extract = features.forward_function(cfg, model, identity)  # converts the TFLite copy once, kept on disk
    rates["engine_prepare_s"] = time.perf_counter() - began
    pixels = images[:min(len(images), 64)].astype(np.float32)
    rates["engine_warmup_s"], rates["engine"] = stream_rate(cfg, extract, images)
    rates["feature_dim"] = int(features.feature_extractor(model).output.shape[-1])
    # A whole model's TFLite copy (submit, predict) converts like the extractor: the full graph, traced once.
    full_started = time.perf_counter()
    if engine.engine_name(cfg) == "tflite":
        engine.to_tflite(model)
    rates["model_convert_s"] = time.perf_counter() - full_started
    if finetune or head == "images":
        rates["keras_warmup_s"], rates["keras"] = timed_calls(model.predict_on_batch, pixels[:batch], 2)
    if head == "images":
        rates["frozen_warmup_s"], rates["frozen"] = train_rate(cfg, model, images, labels, False, n_classes)
    if head == "features":  # "none": submit only needs the decoder and the engine
        rates["head"], rates["head_epoch_s"], rates["head_setup_s"] = head_rate(cfg, rates["feature_dim"], n_classes)
    if finetune:
        rates["finetune_warmup_s"], rates["finetune"] = train_rate(cfg, model, images, labels, True, n_classes)
    rates["probe_s"] = time.perf_counter() - started
    return rates


def read_probe(cfg: Config, key: dict) -> dict | None:
    try:
        saved = json.loads(probe_file(cfg, key).read_text())
        return saved["rates"] if saved.get("key") == json.loads(json.dumps(key, default=str)) else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def rates_for(cfg: Config, index, finetune: bool, head: str) -> tuple[dict, Path, bool]:
    """(rates, their file, True if measured now): read from <cache>/probes/ when this machine measured them
    (for submit, head="none", a training probe of the same model and size does as well: it measured more)."""
    n_classes = len(index.classes)
    key = probe_key(cfg, n_classes, finetune, head)
    path = probe_file(cfg, key)
    candidates = [key] if head != "none" else [probe_key(cfg, n_classes, f, h) for f in (True, False)
                                                for h in ("features", "images")] + [key]
    for candidate in candidates:
        rates = read_probe(cfg, candidate)
        if rates is not None:
            return rates, probe_file(cfg, candidate), False
    pool = index.train.sample(min(DECODE_SAMPLE, len(index.train)), random_state=0)
    rates = measure(cfg, list(pool["path"]), pool["label"].to_numpy(), n_classes, finetune, head)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"key": key, "rates": rates}, indent=2, default=str) + "\n")
    except OSError:
        pass  # a read-only cache: the plan still prints, it is only measured again next time
    return rates, path, True


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or would be made)."""
    import shutil

    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free if os.path.exists(folder) else 0
