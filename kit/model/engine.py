"""The frozen backbone's forward pass: through TFLite's XNNPACK kernels on a CPU, through Keras elsewhere.

    from kit.model.engine import model_function
    extract = model_function(cfg, extractor)   # float32 (n, H, W, 3) pixels -> (n, dim) features

Precomputed features (kit/model/features.py) need nothing but the forward pass of a FROZEN model, which
is what TFLite's interpreter is built for: on a CPU it is several times Keras' speed with features equal
to float precision (BENCHMARKS.md, section 2). Converting takes a few seconds: the model is traced once,
its variables frozen into constants and the graph converted in memory (`TFLiteConverter.from_keras_model`
goes through a SavedModel on disk and is several times slower).

`train.feature_engine`: `auto` (TFLite without an accelerator, Keras with a GPU/TPU, since the
interpreter runs on the CPU only, and Keras on the JAX backend: the conversion traces the model as
TensorFlow), `tflite` (TensorFlow backend only) or `keras`. The engine is part of the features' cache key.
The same function runs a whole trained model when `submit` or `predict` has many images
(kit.model.inference.ENGINE_MIN_IMAGES).
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
import weakref
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from kit.config import Config
from kit.errors import KitError
from kit.fsutil import atomic_path

TFLITE_BATCH = 8  # measured: 8-16 images per call beat 32 and 64 (cache-friendly), 1 costs call overhead


def engine_name(cfg: Config) -> str:
    """'tflite' or 'keras': what computes this machine's features under `train.feature_engine`."""
    from kit.model import backend

    choice = cfg.train.feature_engine  # checked at load: auto, tflite or keras
    if choice == "tflite":
        backend.require_tensorflow("train.feature_engine=tflite", "set train.feature_engine=auto (Keras on JAX)")
    if choice != "auto":
        return choice
    return "keras" if backend.accelerator() or not backend.is_tensorflow() else "tflite"


_COPIES: "weakref.WeakKeyDictionary[keras.Model, tuple[str, TFLiteRunner]]" = weakref.WeakKeyDictionary()


def model_function(cfg: Config, model: keras.Model, saved: Path | None = None,
                   digest: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A model's forward pass (float32 pixels in) on the configured engine: a feature extractor or a whole run.

    The TFLite copy holds the weights it was converted with, so it is kept per model and `digest` of its
    weights (weights_digest(model.weights) unless given: ~15 ms for MobileNetV2) and made again when they
    change. `saved`: where the copy is kept between processes (read if there, else converted and written);
    its name must carry the digest.
    """
    if engine_name(cfg) == "keras":
        from kit.model.device import forward

        return forward(model)
    digest = digest or weights_digest(model.weights)
    cached = _COPIES.get(model)
    if cached is None or cached[0] != digest:
        _COPIES[model] = (digest, _runner(model, saved))
    return _COPIES[model][1]


def _runner(model: keras.Model, saved: Path | None) -> "TFLiteRunner":
    if saved is not None and saved.is_file():
        try:
            return TFLiteRunner(saved.read_bytes(), threads=cpu_cores())
        except (ValueError, RuntimeError):  # a damaged copy (the interpreter refuses it) is converted again
            pass
    flatbuffer = to_tflite(model)
    if saved is not None:
        with atomic_path(saved, suffix=".tflite") as tmp:
            tmp.write_bytes(flatbuffer)
    return TFLiteRunner(flatbuffer, threads=cpu_cores())


def weights_digest(variables) -> str:
    """SHA-256 of variables' paths, dtypes, shapes and values: what a converted copy or cached features depend on."""
    digest = hashlib.sha256()
    for variable in variables:
        value = keras.ops.convert_to_numpy(variable)
        digest.update(f"{variable.path}:{value.dtype}:{value.shape}\n".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def to_tflite(model: keras.Model) -> bytes:
    """The model (in inference mode) as a float32 TFLite flatbuffer, built in memory."""
    import tensorflow as tf
    # The public converters either go through a SavedModel on disk (from_keras_model: slow) or keep variables
    # as resources (from_concrete_functions: not initialised, NaN out). Freezing first and converting the
    # plain graph is the fast way (trace, freeze, convert).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
    traced = tf.function(lambda x: model(x, training=False), input_signature=[spec]).get_concrete_function()
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "consider providing trackable_obj": that path takes 8 s, this one 1.3 s
    try:
        return tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(traced)]).convert()
    finally:
        absl.setLevel(level)


class TFLiteRunner:
    """Calls a one-input, one-output TFLite model on batches of any length, TFLITE_BATCH images at a time."""

    def __init__(self, flatbuffer: bytes, threads: int, batch: int = TFLITE_BATCH):
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice: LiteRT is the same runtime
            self.interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise KitError(f"a feature extractor has one input and one output, this one {len(inputs)} and {len(outputs)}")
        self.input, self.output, self.batch = inputs[0]["index"], outputs[0]["index"], batch
        self.shape = [batch, *(int(d) for d in inputs[0]["shape"][1:])]
        self.interpreter.resize_tensor_input(self.input, self.shape)
        self.interpreter.allocate_tensors()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if list(images.shape[1:]) != self.shape[1:]:
            raise KitError(f"the feature extractor takes images of shape {self.shape[1:]}, got {list(images.shape[1:])}")
        parts = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            if len(chunk) < self.batch:  # the last one: padded, so the interpreter never re-plans its memory
                chunk = np.concatenate([chunk, np.zeros((self.batch - len(chunk), *chunk.shape[1:]), np.float32)])
            self.interpreter.set_tensor(self.input, chunk)
            self.interpreter.invoke()
            parts.append(self.interpreter.get_tensor(self.output)[:len(images) - start].copy())
        return np.concatenate(parts) if parts else np.zeros((0, *self.interpreter.get_output_details()[0]["shape"][1:]),
                                                            np.float32)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
