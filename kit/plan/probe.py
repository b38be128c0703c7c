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

VERSION = 8  # bump when what is measured changes
DECODE_SAMPLE = 512  # distinct photos decoded once, cold (decode_rate)
RATE_SAMPLE = 128  # of them, decoded into the batches the model's rates are measured on
STEPS = 5  # timed train steps per stage, after two untimed ones


def probe_key(cfg: Config, n_classes: int, finetune: bool, head: str) -> dict:
    import tensorflow as tf

    from kit.model import backend, device, engine

    devices = [d.platform for d in backend.jax_devices()] or [d.device_type for d in tf.config.list_logical_devices()]
    return {"version": VERSION, "host": platform.node(), "cpus": engine.cpu_cores(), "tf": tf.__version__,
            "backend": backend.name(), "devices": devices,
            "model": asdict(cfg.model), "augment": asdict(cfg.augment), "size": cfg.data.image_size,
            "batch": cfg.data.batch_size, "engine": engine.engine_name(cfg), "jit": device.jit_compile(cfg),
            "mixed": cfg.train.mixed_precision, "distribute": cfg.train.distribute, "classes": n_classes,
            "finetune": finetune, "head": head, "group_lr_ratios": cfg.train.group_lr_ratios,
            "solver": cfg.train.head_solver}


def probe_file(cfg: Config, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return kit_paths.cache_dir(cfg) / "probes" / f"probe-{cfg.model.backbone}-{cfg.data.image_size}px-{digest}.json"


def _rate(images: int, seconds: float) -> float:
    return images / max(seconds, 1e-6)


def drop_from_page_cache(paths: list[str]) -> None:
    """Ask the OS to forget the files' cached pages, so they are read from disk as a first run reads them."""
    for p in paths if hasattr(os, "posix_fadvise") else []:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def decode_rate(paths: list[str], size: int) -> float:
    """Images/s of the pixel cache's decoder (`pipeline.decoded_stream` in _decode_all's batches of 64) over
    distinct photos read cold from disk, timed after the first quarter (tf.data's set-up and AUTOTUNE's ramp).

    Cold as the cache build meets them (a first run; on Kaggle /kaggle/input is read for the first time). 128
    photos decoded 4 times (warm) put the decode of 20,000 at 0.72x its time; cold, 0.99x (BENCHMARKS.md, 6)."""
    import tempfile

    from kit.data.pipeline import decoded_stream, release_pages

    drop_from_page_cache(paths)
    skip = max(1, len(paths) // 4)
    with tempfile.TemporaryDirectory() as folder:  # written as the cache is: into a new memory-mapped file
        out = np.lib.format.open_memmap(Path(folder) / "probe.npy", mode="w+", dtype=np.uint8,
                                        shape=(len(paths), size, size, 3))
        done, timed_from = 0, 0
        began = started = time.perf_counter()
        for images in decoded_stream(paths, size, 64):
            out[done:done + len(images)] = images.numpy()
            release_pages(out, done, done + len(images))
            done += len(images)
            if not timed_from and done >= skip:
                started, timed_from = time.perf_counter(), done
        out.flush()  # as the cache build does: the timed part pays its share of the writeback
        del out
    if done <= timed_from:  # too few photos for a ramp: the whole pass, set-up and all
        return _rate(done, time.perf_counter() - began)
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
    stream = training_stream(cfg, images, label_array(labels, n_classes)).repeat().as_numpy_iterator()
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


def head_rate(cfg: Config, model, dim: int, n_classes: int) -> tuple[float, float, float]:
    """(samples/s, seconds per epoch besides its samples, seconds per call besides its epochs) of the head on
    features: kit/train/head.py's own fit_head, callbacks, lr.csv and all, on random vectors at two training
    set sizes, each epoch timed (a bare model.fit put the real head at 0.73-0.81x its time: the callbacks)."""
    import contextlib
    import dataclasses
    import io
    import tempfile

    import keras

    from kit.runs import RunDir
    from kit.train.head import fit_head
    from kit.train.recipe import label_array

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self.began)

    epochs, rng, measured = 4, np.random.default_rng(0), {}
    probe_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head_epochs=epochs))
    val = (rng.normal(size=(4096, dim)).astype(np.float32), label_array(np.arange(4096) % n_classes, n_classes))
    for n in (4096, 32768):
        x, y = rng.normal(size=(n, dim)).astype(np.float32), label_array(np.arange(n) % n_classes, n_classes)
        clock = Clock()
        with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stderr(io.StringIO()):  # no bars
            started = time.perf_counter()
            fit_head(probe_cfg, model, (x, y), val, RunDir(Path(folder)), n_classes, extra_callbacks=[clock])
            total = time.perf_counter() - started
        steady = float(np.median(clock.epochs[1:]))  # the first epoch also traces
        measured[n] = (steady, total - epochs * steady)
    per_sample = max((measured[32768][0] - measured[4096][0]) / (32768 - 4096), 1e-9)
    return 1 / per_sample, max(0.0, measured[4096][0] - 4096 * per_sample), measured[32768][1]


def save_load_seconds(model) -> float:
    """A best.keras saved and loaded again, as a run does (kit/runs.py: RunDir.save_model, load_model)."""
    import tempfile

    import keras

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder) / "probe.keras")
        keras.saving.load_model(Path(folder) / "probe.keras", compile=False)
    return time.perf_counter() - started


def measure(cfg: Config, sample_paths: list[str], labels: np.ndarray, n_classes: int, finetune: bool,
            head: str) -> dict:
    """Every rate this config's steps need, measured now."""
    import keras

    from kit.data.pipeline import decoded_stream
    from kit.model import device, engine, features
    from kit.model.backbones import build_model
    from kit.train import logistic

    started = time.perf_counter()
    size, batch = cfg.data.image_size, cfg.data.batch_size
    rates = {"decode": decode_rate(sample_paths, size)}
    sample_paths, labels = sample_paths[:RATE_SAMPLE], labels[:RATE_SAMPLE]
    images = np.concatenate([b.numpy() for b in decoded_stream(sample_paths, size, batch)])
    keras.utils.set_random_seed(cfg.data.seed)  # as a run builds it: weights=none gives the run's own features
    began = time.perf_counter()
    model = build_model(cfg, n_classes)  # what every training or prediction process pays first
    rates["build_s"] = time.perf_counter() - began
    identity = features.backbone_identity(model)
    rates["identity"] = identity  # the feature caches' key: the plan sees which are on disk already
    rates["save_load_s"] = save_load_seconds(model)
    began = time.perf_counter()
    extract = features.forward_function(cfg, model, identity)  # converts the TFLite copy once, kept on disk
    rates["engine_prepare_s"] = time.perf_counter() - began
    pixels = images[:min(len(images), 64)].astype(np.float32)
    rates["engine_warmup_s"], rates["engine"] = stream_rate(cfg, extract, images)
    rates["feature_dim"] = int(features.feature_extractor(model).output.shape[-1])
    # A whole model's TFLite copy (submit, predict) converts like the extractor: the full graph, traced once.
    # A head-only run's submit predicts from features: its probe skips the conversion (the extractor's stands in).
    tflite, full = engine.engine_name(cfg) == "tflite", finetune or head != "features"
    full_started = time.perf_counter()
    if tflite and full:
        engine.to_tflite(model)
    rates["model_convert_s"] = time.perf_counter() - full_started if full else rates["engine_prepare_s"] * tflite
    if finetune or head == "images":
        rates["keras_warmup_s"], rates["keras"] = timed_calls(device.forward(model), pixels[:batch], 2)
    if head == "images":
        rates["frozen_warmup_s"], rates["frozen"] = train_rate(cfg, model, images, labels, False, n_classes)
    if head == "features" and logistic.uses_logistic(cfg):  # no epochs to time: one fit of its solver
        rates["logistic_row_s"] = logistic.row_seconds(rates["feature_dim"], n_classes)
    elif head == "features":  # "none": submit only needs the decoder and the engine
        rates["head"], rates["head_epoch_s"], rates["head_setup_s"] = head_rate(cfg, model, rates["feature_dim"],
                                                                                  n_classes)
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
