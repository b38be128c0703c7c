"""XLA and mixed precision on this machine: MobileNetV2 fine-tuning steps per second under each setting.

    .venv/bin/python bench/run.py --only device      (one worker process per setting: the dtype
                                                      policy is global and XLA caches compiled code)

The step is kit's own: `kit.model.backbones.build_model`, the backbone unfrozen with BatchNorm frozen, compiled
by `kit.train.recipe.compile_model` (which asks `kit.model.device.jit_compile`), the dtype policy set by
`kit.model.device.apply_mixed_precision` — so these rows measure exactly what `train.jit_compile` and
`train.mixed_precision` switch.
"""
from __future__ import annotations

import time

import numpy as np


def train_step(jit_compile: str, mixed_precision: str, image_size: int = 224, batch_size: int = 32,
               max_steps: int = 5, budget_seconds: float = 60.0) -> dict:
    """First step (tracing/compiling) timed apart, then steps until `max_steps` or `budget_seconds` (min 1)."""
    import keras

    from kit.model import device
    from kit.config import load_config
    from kit.model.backbones import build_model, set_backbone_trainable
    from kit.train.recipe import compile_model

    cfg = load_config(None, ["model.weights=none", f"data.image_size={image_size}",
                             f"train.jit_compile={jit_compile}", f"train.mixed_precision={mixed_precision}"])
    policy = device.apply_mixed_precision(cfg)
    model = build_model(cfg, 2)
    set_backbone_trainable(model, True, freeze_batchnorm=True)
    compile_model(model, keras.optimizers.Adam(1e-4), cfg, 2)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch_size, 1)).astype(np.float32)
    started = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - started
    steps, wall, cpu = 0, time.perf_counter(), time.process_time()
    while steps < max_steps and (steps == 0 or time.perf_counter() - wall < budget_seconds):
        model.train_on_batch(x, y)
        steps += 1
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    return {"jit_compile": device.jit_compile(cfg), "policy": policy, "image_size": image_size,
            "batch_size": batch_size, "first_step_seconds": round(first, 2), "steps": steps,
            "seconds_per_step": seconds / steps, "images_per_s": steps * batch_size / seconds,
            "images_per_cpu_s": steps * batch_size / cpu_seconds if cpu_seconds else None}
