"""Settings decided by the device: XLA and mixed precision help a GPU and hurt or do nothing on a CPU.

    python -c "from kit.model.device import describe; print(describe())"

Measured on this project's 2-core CPU machine (BENCHMARKS.md, section 3): XLA (`jit_compile=True`) made
MobileNetV2 training several times slower and mixed precision gave nothing, while both are what a
GPU wants. So `auto` means: on when an accelerator is present, off otherwise.
"""
from __future__ import annotations

from kit.config import Config


def accelerator() -> str | None:
    """'GPU' or 'TPU' when TensorFlow sees one, else None."""
    import tensorflow as tf

    for kind in ("TPU", "GPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return None


def jit_compile(cfg: Config) -> bool:
    """XLA on or off: train.jit_compile (true, false or auto: on with an accelerator)."""
    choice = cfg.train.jit_compile
    return accelerator() is not None if choice == "auto" else bool(choice)


def apply_mixed_precision(cfg: Config) -> str:
    """Set Keras' global dtype policy for this process; return its name."""
    import keras

    choice = cfg.train.mixed_precision
    wanted = (accelerator() == "GPU") if choice == "auto" else bool(choice)
    policy = "mixed_float16" if wanted else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe() -> str:
    return f"accelerator: {accelerator() or 'none (CPU)'}"
