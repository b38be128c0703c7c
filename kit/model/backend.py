"""Which Keras backend runs this process, what devices it sees, and a clear refusal where a feature needs TensorFlow.

    KERAS_BACKEND=jax python -m kit train --config configs/dogs-vs-cats-redux.yaml
    python -c "from kit.model.backend import describe; print(describe())"

Keras 3 runs the same model code on TensorFlow (the default) or JAX. Kaggle's TPU image ships
`tensorflow-cpu` and `jax[tpu]`: there TensorFlow sees no TPU and only JAX can use it, so `KERAS_BACKEND=jax`
is how kit trains on a TPU (keras.distribution.DataParallel, kit/model/device.py). tf.data stays the input
pipeline on both backends (it runs on the CPU either way).

TensorFlow-only: the TFLite engine (kit/model/engine.py; on JAX `train.feature_engine=auto` means Keras),
SavedModel/TFLite export (kit/submit/export.py) and MirroredStrategy; `require_tensorflow` refuses them in
one line that says how to get them. Weights (.keras, .weights.h5, BackupAndRestore's backups) read the same
on both backends, so a run started on one continues on the other.
"""
from __future__ import annotations

from kit.errors import KitError


def name() -> str:
    """'tensorflow', 'jax' (or 'torch', 'numpy': not supported by kit) — Keras' backend of this process."""
    import keras

    return keras.backend.backend()


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def check_supported() -> None:
    """Refuse a backend kit does not run on, before anything is built."""
    if name() not in ("tensorflow", "jax"):
        raise KitError(f"kit runs on the TensorFlow or JAX backend, this process has KERAS_BACKEND={name()}: "
                       f"set KERAS_BACKEND=tensorflow (the default) or jax")


def require_tensorflow(feature: str, instead: str = "") -> None:
    """A KitError unless the backend is TensorFlow: `feature` needs it (`instead`: what to do on this one)."""
    if is_tensorflow():
        return
    hint = f"{instead}, or " if instead else ""
    raise KitError(f"{feature} needs the TensorFlow backend and this process runs on {name()}: "
                   f"{hint}run it with KERAS_BACKEND=tensorflow (the run's weights read the same on both)")


def jax_devices() -> list:
    """JAX's devices (TPU cores, GPUs, or the CPU's host devices), [] when JAX is not the backend."""
    if name() != "jax":
        return []
    import jax

    return list(jax.devices())


def accelerator() -> str | None:
    """'GPU' or 'TPU' when the backend computes on one, else None (the CPU)."""
    if name() == "jax":
        platforms = {d.platform for d in jax_devices()}
        return next((kind.upper() for kind in ("tpu", "gpu") if kind in platforms), None)
    import tensorflow as tf

    for kind in ("TPU", "GPU"):
        if tf.config.list_logical_devices(kind):
            return kind
    return None


def describe() -> str:
    """'backend jax (2 cpu devices)' or 'backend tensorflow'."""
    if name() != "jax":
        return f"backend {name()}"
    devices = jax_devices()
    kinds = sorted({d.platform for d in devices})
    return f"backend jax ({len(devices)} {'/'.join(kinds)} device{'s' if len(devices) != 1 else ''})"
