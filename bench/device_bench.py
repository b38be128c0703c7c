"""XLA, mixed precision and tf.distribute on this machine: MobileNetV2 fine-tuning speed under each setting.

    .venv/bin/python bench/run.py --only device      (one worker process per setting: the dtype
                                                      policy is global and XLA caches compiled code)

The step is kit's own: `kit.model.backbones.build_model`, the backbone unfrozen with BatchNorm frozen, compiled
by `kit.train.recipe.compile_model` (which asks `kit.model.device.jit_compile`), the dtype policy set by
`kit.model.device.apply_mixed_precision` — so these rows measure exactly what `train.jit_compile` and
`train.mixed_precision` switch. `distribute_fit` (one process, passes taking turns) measures `train.distribute`
auto against none through the same calls kit.train.fit makes.
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


# ---- train.distribute: auto vs none, one process, passes taking turns -----------------------------------

def distribute_fit(image_size: int = 128, batch_size: int = 16, steps: int = 6, rounds: int = 16,
                   backbone: str = "mobilenet_v2") -> dict:
    """Fine-tuning passes of `steps` batches under train.distribute=auto and =none, taking turns in ABBA order
    (auto, none, none, auto, ...) after one untimed pass each (tracing). Each block of two rounds gives one paired
    ratio auto / none (its passes summed: a load that rises or falls steadily cancels); their median and range.

    Each setting goes through what kit.train.fit does with it: `device.strategy(cfg)`, the model built and
    compiled in its scope (stage 2: `recipe.unfreeze`, layer-group optimizer), kit's training stream (cached
    images in memory, augmented) through `device.for_strategy`, and `model.fit`.
    """
    from bench.common import best_of, median, timed
    from kit.config import load_config
    from kit.data.pipeline import training_stream
    from kit.model import device
    from kit.model.backbones import build_model
    from kit.train.recipe import compile_model, optimizer, unfreeze

    rng = np.random.default_rng(0)
    n = batch_size * steps  # one epoch = `steps` batches
    images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
    settings, runs = ("auto", "none"), {}
    for name in settings:
        cfg = load_config(None, ["model.weights=none", f"model.backbone={backbone}", f"data.image_size={image_size}",
                                 f"data.batch_size={batch_size}", f"train.distribute={name}"])
        device.apply_mixed_precision(cfg)  # float32 here, as kit.train.fit sets it
        chosen = device.strategy(cfg)
        with chosen.scope():
            model = build_model(cfg, 2)
            compile_model(model, optimizer(cfg, cfg.train.lr, unfreeze(cfg, model)), cfg, 2)
        stream = device.for_strategy(training_stream(cfg, images, labels), chosen)
        fit = lambda m=model, s=stream: m.fit(s, epochs=1, verbose=0, shuffle=False)  # noqa: E731
        _, first = timed(fit)
        runs[name] = {"fit": fit, "strategy": device.describe(chosen), "distributed": device.is_distributed(chosen),
                      "replicas": chosen.num_replicas_in_sync, "first_pass_seconds": round(first.seconds, 2),
                      "passes": []}
    for i in range(rounds):
        for name in settings if i % 2 == 0 else settings[::-1]:
            runs[name]["passes"].append(timed(runs[name]["fit"])[1].rate(n))
    blocks = {"wall": [], "cpu": []}
    for j in range(0, rounds, 2):  # same images in both: the rate ratio is none's time / auto's time
        auto, none = runs["auto"]["passes"][j:j + 2], runs["none"]["passes"][j:j + 2]
        for kind, key in (("wall", "seconds"), ("cpu", "cpu_seconds")):
            blocks[kind].append(sum(p[key] for p in none) / sum(p[key] for p in auto))
    out = {"image_size": image_size, "batch_size": batch_size, "steps": steps, "rounds": rounds, "backbone": backbone,
           "blocks": len(blocks["wall"])}
    for kind, values in blocks.items():
        out[f"paired_{'ratio' if kind == 'wall' else 'cpu_ratio'}"] = {
            "median": median(values), "low": min(values), "high": max(values), "all": [round(v, 3) for v in values]}
    for name in settings:
        run = runs[name]
        out[name] = {k: v for k, v in run.items() if k not in ("fit", "passes")} | {"median": best_of(run["passes"])}
    return out
