"""Feature extraction: images/s through MobileNetV2 on kit's engine, on Keras, fed by kit and by a naive loop.

    .venv/bin/python bench/run.py --only features      (runs `feature_section` in a worker process)

- ceiling (Keras): the forward pass through Keras' predict_on_batch on in-memory batches, no input
  pipeline: what a plain Keras script gets at best;
- ceiling (TFLite): the same batches through kit.model.engine's TFLite runner (what `train.feature_engine:
  auto` picks on a CPU), with the largest difference between its features and Keras';
- kit: `kit.model.features.features` (pixel cache + prefetched tf.data stream + the engine), once with the
  pixel cache still to build and the engine still to convert (cold) and once with both done (warm:
  a second feature set, e.g. the hflip view, reads the same pixels);
- naive: PIL decode and resize in a Python loop, then Keras' predict_on_batch, one batch after another.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from bench.common import best_of, timed


def model_config(cache_dir: str, image_size: int, batch_size: int, weights: str):
    from kit.config import load_config

    return load_config(None, [f"paths.cache_dir={cache_dir}", f"data.image_size={image_size}",
                              f"data.batch_size={batch_size}", "model.backbone=mobilenet_v2",
                              f"model.weights={weights}"])


def ceiling(extractor, n: int, image_size: int, batch_size: int) -> dict:
    """The forward pass alone: `n` images in batches already in memory."""
    import tensorflow as tf

    batch = tf.random.uniform([batch_size, image_size, image_size, 3], 0, 255, seed=1)

    def run() -> int:
        done = 0
        while done < n:
            extractor.predict_on_batch(batch)
            done += batch_size
        return done

    done, timing = timed(run)
    return timing.rate(done)


def naive(extractor, files: list[str], image_size: int, batch_size: int) -> dict:
    """What a first script does: open, convert and resize each file with PIL, then predict the batch."""
    from PIL import Image

    def run() -> int:
        for start in range(0, len(files), batch_size):
            batch = []
            for path in files[start:start + batch_size]:
                with Image.open(path) as image:
                    batch.append(np.asarray(image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)))
            extractor.predict_on_batch(np.stack(batch).astype(np.float32))
        return len(files)

    done, timing = timed(run)
    return timing.rate(done)


def kit_features(cfg, model, files: list[str], identity: dict) -> dict:
    """kit.features.features with the feature cache emptied first (the pixel cache is kept)."""
    from kit.model import features

    shutil.rmtree(Path(cfg.paths.cache_dir) / features.FEATURES_DIR, ignore_errors=True)
    out, timing = timed(lambda: features.features(cfg, model, files, "bench", identity=identity))
    assert out.shape[0] == len(files)
    return timing.rate(len(files))


def tflite_ceiling(runner, n: int, image_size: int, batch_size: int) -> dict:
    """kit.model.engine's TFLite runner alone: `n` images in batches already in memory."""
    batch = np.random.default_rng(1).uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)

    def run() -> int:
        done = 0
        while done < n:
            runner(batch)
            done += batch_size
        return done

    done, timing = timed(run)
    return timing.rate(done)


def feature_section(files: list[str], work: str, image_size: int = 224, batch_size: int = 32,
                    weights: str = "none", repeats: int = 2) -> dict:
    """Section 2: both ceilings, kit (cold, then warm) and naive, the warm ones taking turns."""
    from kit.model import engine
    from kit.model import features
    from kit.model.backbones import build_model, set_backbone_trainable

    cfg = model_config(str(Path(work) / "cache-features"), image_size, batch_size, weights)
    model = build_model(cfg, 2)
    set_backbone_trainable(model, False)
    extractor = features.feature_extractor(model)
    identity = features.backbone_identity(model)
    probe = np.random.default_rng(2).uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    expected = extractor.predict_on_batch(probe)  # builds and warms up Keras' predict function
    cold = kit_features(cfg, model, files, identity)  # converts the engine's copy: part of a cold pass
    runner, convert = timed(lambda: engine.TFLiteRunner(engine.to_tflite(extractor), threads=engine.cpu_cores()))
    passes = {"ceiling": [], "tflite_ceiling": [], "kit_warm": [], "naive": []}
    for _ in range(repeats):
        passes["ceiling"].append(ceiling(extractor, len(files), image_size, batch_size))
        passes["tflite_ceiling"].append(tflite_ceiling(runner, len(files), image_size, batch_size))
        passes["kit_warm"].append(kit_features(cfg, model, files, identity))
        passes["naive"].append(naive(extractor, files, image_size, batch_size))
    return {"images": len(files), "image_size": image_size, "batch_size": batch_size, "weights": weights,
            "repeats": repeats, "engine": engine.engine_name(cfg), "kit_cold": cold,
            "tflite_convert_seconds": convert.seconds,
            "tflite_max_abs_diff": float(np.abs(runner(probe) - expected).max()),
            "feature_scale": float(np.abs(expected).max()),
            **{name: best_of(rates) for name, rates in passes.items()}}
