"""Keras on JAX vs Keras on TensorFlow, on this CPU: training and prediction speed, and the scores they reach.

    .venv/bin/python bench/run.py --only backend        (needs JAX in .venv: make venv-jax)

`speed` is a worker job (bench/worker.py), run once per backend in its own process (KERAS_BACKEND is fixed at
Keras' import), in the order TensorFlow, JAX, JAX, TensorFlow so a load that rises or falls steadily cancels:
fine-tuning passes of MobileNetV2 through what kit.train.fit does (device.strategy, the layer-group optimizer,
kit's augmented training stream, model.fit), then kit's prediction path on cached pixels
(kit.model.inference.predict_views: the engine `auto` picks, TFLite on TensorFlow and Keras on JAX, and Keras'
own forward pass on both). `scores` runs the demo and a short real run (the head on cached 224 px features:
download, train, submit) on each backend as kit's own commands.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import PYTHON, ROOT, bench_env, run_measured, tail

BACKENDS = ("tensorflow", "jax")
REAL_RUN = ["train.finetune_epochs=0", "train.members=[]", "train.refit_all=false", "train.feature_image_size=224"]


def backend_vars(backend: str) -> dict:
    """What a measured process needs to run on `backend` (JAX: its CPU devices, no accelerator plug-ins tried)."""
    return {"KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}


def backend_env(keras_home: str | None, backend: str) -> dict:
    return {**bench_env(keras_home), **backend_vars(backend)}


def _rate(images: int, wall: float, cpu: float) -> dict:
    return {"per_s": images / wall, "per_cpu_s": images / cpu if cpu else None, "seconds": wall}


def _timed(fn, images: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return _rate(images, time.perf_counter() - wall, time.process_time() - cpu)


def speed(image_size: int = 224, batch_size: int = 32, steps: int = 6, rounds: int = 3,
          predict_images: int = 256, weights: str = "none") -> dict:
    """Images/s of fine-tuning (model.fit passes of `steps` batches) and of prediction, on this process's backend."""
    import keras

    from kit.config import load_config
    from kit.data.pipeline import training_stream
    from kit.model import backend, device, engine
    from kit.model.backbones import build_model
    from kit.model.inference import predict_views
    from kit.train.recipe import compile_model, optimizer, unfreeze

    cfg = load_config(None, [f"model.weights={weights}", f"data.image_size={image_size}",
                             f"data.batch_size={batch_size}"])
    device.apply_mixed_precision(cfg)
    chosen = device.strategy(cfg)
    rng = np.random.default_rng(0)
    n = batch_size * steps
    images = rng.integers(0, 256, (max(n, predict_images), image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
    keras.utils.set_random_seed(0)
    with chosen.scope():
        model = build_model(cfg, 2)
        compile_model(model, optimizer(cfg, cfg.train.lr, unfreeze(cfg, model)), cfg, 2)
    stream = device.for_strategy(training_stream(cfg, images[:n], labels), chosen)
    fit = lambda: model.fit(stream, epochs=1, verbose=0, shuffle=False)  # noqa: E731
    first = _timed(fit, n)
    passes = [_timed(fit, n) for _ in range(rounds)]
    model.trainable = False
    pixels = images[:predict_images]
    paths = [f"p{i}.jpg" for i in range(predict_images)]  # names only: the pixels are given
    predict = lambda: predict_views(cfg, model, pixels, paths, ["original"], progress=False)  # noqa: E731
    predict()  # the engine's copy converted (TensorFlow) / the forward pass compiled (JAX), untimed
    predicted = [_timed(predict, predict_images) for _ in range(rounds)]
    forward = device.forward(model)
    batches = [pixels[i:i + batch_size].astype(np.float32) for i in range(0, predict_images, batch_size)]
    forward(batches[0])
    keras_pass = [_timed(lambda: [forward(b) for b in batches], predict_images) for _ in range(rounds)]
    best = lambda runs: max(runs, key=lambda r: r["per_s"])  # noqa: E731 — the least disturbed pass
    return {"backend": backend.name(), "describe": device.describe(chosen), "jit": device.jit_compile(cfg),
            "engine": engine.engine_name(cfg), "image_size": image_size, "batch_size": batch_size, "steps": steps,
            "rounds": rounds, "weights": weights, "first_pass_seconds": round(first["seconds"], 2),
            "train": best(passes), "train_passes": passes, "predict": best(predicted),
            "predict_keras": best(keras_pass), "predict_images": predict_images}


def demo_score(work: Path, backend: str, timeout: float) -> dict:
    """`kit demo` on `backend` in a folder of its own: its validation and hidden-test log loss."""
    folder = work / f"demo-{backend}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "configs", folder / "configs")
    log = work / "logs" / f"demo-{backend}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    done = run_measured([PYTHON, "-m", "kit", "demo", "--config", "configs/demo.yaml", "--set", "train.plan=false"],
                        log, env=backend_env(None, backend), cwd=folder, timeout=timeout)
    if done["returncode"] != 0:
        raise RuntimeError(f"demo on {backend} failed: {tail(log)}")
    test = re.search(r"scores test log loss ([0-9.]+)", log.read_text())
    (summary,) = [json.loads(p.read_text()) for p in (folder / "demo" / "runs").glob("*/summary.json")]
    return {"seconds": done["seconds"], "test_log_loss": float(test.group(1)) if test else None,
            "val_log_loss": summary["val_log_loss_calibrated"]}


def real_score(real_zip: Path, work: Path, keras_home: str, backend: str, timeout: float) -> dict:
    """The head on cached 224 px features (download, train, submit: section 4's kit path) on `backend`: its
    out-of-fold validation log loss after TTA and calibration, and the wall time of each command."""
    from bench import end_to_end

    done = end_to_end.kit_path(f"real-{backend}", real_zip, work, keras_home, REAL_RUN + ["train.plan=false"],
                               timeout, extra_env=backend_vars(backend))
    return {"seconds": done["seconds"], "steps": {k: v["seconds"] for k, v in done["steps"].items()},
            "val_log_loss": done["summary"]["val_log_loss_calibrated"],
            "val_log_loss_tta": done["summary"]["val_log_loss_tta"]}
