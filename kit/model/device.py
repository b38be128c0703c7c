"""Settings decided by the device and the backend: XLA, mixed precision, and how training spreads over devices.

    python -c "from kit.model.device import describe; print(describe())"

XLA (`train.jit_compile`): measured on this project's 2-core CPU machine (BENCHMARKS.md, section 3), XLA made
TensorFlow's MobileNetV2 training several times slower, while a GPU wants it; so on TensorFlow `auto` means on
with an accelerator, off on a CPU. On JAX `auto` is always on: XLA is how JAX runs a step (un-jitted, every op
is dispatched from Python one by one), and keras.distribution needs it.

Mixed precision (`train.mixed_precision`): `auto` is mixed_float16 on a GPU, mixed_bfloat16 on a TPU (its
native format), float32 on a CPU.

More than one device (`train.distribute`, `strategy`):
- TensorFlow: `auto` is tf.distribute.MirroredStrategy over the GPUs when there are two or more (Kaggle's
  T4 x2), else the default strategy (one device, nothing added); `mirrored` forces MirroredStrategy (over the
  GPUs, or over every logical CPU device when there is no GPU: how the tests run it on two logical CPUs).
  Multi-worker training (MultiWorkerMirroredStrategy) is not offered: it fails with Keras 3 (keras-team/keras#20585).
- JAX: `auto` is keras.distribution.DataParallel over every device when there are two or more (a TPU v5e-8's
  eight cores, two GPUs), else one device; `data_parallel` forces it (over the CPU's host devices under
  XLA_FLAGS=--xla_force_host_platform_device_count=N: how the tests run it). It is set for the whole process
  before any model is built, as Keras wants: the variables replicated, each batch split over the devices.
data.batch_size stays the GLOBAL batch (kit/train/fit.py): each of n replicas gets batch_size / n. Under
DataParallel a batch that does not split evenly (the last of an epoch) is padded with copies of its own rows
at sample weight 0 (`for_strategy`, `forward`): the losses and metrics count only the real rows.
"""
from __future__ import annotations

import contextlib

import numpy as np

from kit.config import Config
from kit.errors import KitError
from kit.model import backend
from kit.model.backend import accelerator  # noqa: F401 — kit.model.device.accelerator: the one name callers use


def jit_compile(cfg: Config) -> bool:
    """XLA on or off: train.jit_compile (true, false or auto: on with an accelerator, always on JAX)."""
    choice = cfg.train.jit_compile
    if choice != "auto":
        return bool(choice)
    return backend.name() == "jax" or accelerator() is not None


def apply_mixed_precision(cfg: Config) -> str:
    """Set Keras' global dtype policy for this process; return its name."""
    import keras

    choice, found = cfg.train.mixed_precision, accelerator()
    if choice == "auto":
        policy = {"GPU": "mixed_float16", "TPU": "mixed_bfloat16"}.get(found, "float32")
    else:
        policy = ("mixed_bfloat16" if found == "TPU" else "mixed_float16") if choice else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


class DataParallel:
    """A keras.distribution.DataParallel set for the process, shaped like the tf.distribute strategies the
    trainer uses (`scope()`, `num_replicas_in_sync`)."""

    def __init__(self, distribution):
        self.distribution = distribution
        self.devices = list(distribution.device_mesh.devices.flat)
        self.num_replicas_in_sync = len(self.devices)

    @classmethod
    def over(cls, devices: list) -> "DataParallel":
        """Set DataParallel over `devices` for this process: before any variable exists, as Keras wants."""
        import keras

        distribution = keras.distribution.DataParallel(devices=list(devices))
        keras.distribution.set_distribution(distribution)
        return cls(distribution)

    def scope(self):
        return contextlib.nullcontext()  # set for the whole process already (fit and predict need it too)


class OneDevice:
    """JAX on one device: no keras.distribution."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def check_choice(cfg: Config) -> None:
    """Refuse a train.distribute this backend does not have, before any run folder exists."""
    choice = cfg.train.distribute
    if backend.name() == "jax" and choice == "mirrored":
        raise KitError("train.distribute=mirrored is TensorFlow's MirroredStrategy and this process runs on JAX: "
                       "set train.distribute=data_parallel (or auto), or KERAS_BACKEND=tensorflow")
    if backend.name() != "jax" and choice == "data_parallel":
        raise KitError("train.distribute=data_parallel is keras.distribution on the JAX backend (a prototype on "
                       "TensorFlow): run with KERAS_BACKEND=jax, or set train.distribute=mirrored")


def strategy(cfg: Config):
    """What train.distribute asks for on this backend (auto | none | mirrored | data_parallel); module docstring."""
    check_choice(cfg)
    choice = cfg.train.distribute
    if backend.name() == "jax":
        import keras

        devices = backend.jax_devices()
        if choice == "data_parallel" or (choice == "auto" and len(devices) > 1):
            return DataParallel.over(devices)
        keras.distribution.set_distribution(None)  # none left over from an earlier run in this process
        return OneDevice()
    return _tf_strategy(choice)


def _tf_strategy(choice: str):
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if choice == "none" or (choice == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()  # the default strategy: what a plain model.fit uses anyway
    devices = tuple(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    return _MIRRORED[devices]


# One MirroredStrategy per device set and process: each new one numbers its collective ops (the gradients'
# all-reduce) from the same start, and TensorFlow caches a collective's shape by that number, so a second
# strategy's first step met the first one's shapes ("Shape mismatch in the collective instance 100"): seen
# when a run is resumed in the process that was training it.
_MIRRORED: dict = {}


def for_prediction(cfg: Config):
    """Before a trained model is loaded to predict: on JAX the distribution train.distribute asks for (a TPU's
    8 cores predict together, `forward` pads the batches); on TensorFlow nothing (one device predicts)."""
    return strategy(cfg) if backend.name() == "jax" else None


def model_strategy(model):
    """The strategy `model` was built under: TensorFlow's model.distribute_strategy; on JAX the process's."""
    return model.distribute_strategy if backend.name() != "jax" else _jax_strategy()


def _jax_strategy():
    """The process's keras.distribution as kit's strategy: DataParallel, or one device without one."""
    import keras

    current = keras.distribution.distribution()
    return DataParallel(current) if isinstance(current, keras.distribution.DataParallel) else OneDevice()


def default_strategy():
    """One device on this backend, for code handed no strategy (a model built outside kit's train stage)."""
    if backend.name() == "jax":
        return OneDevice()
    import tensorflow as tf

    return tf.distribute.get_strategy()


def is_distributed(chosen) -> bool:
    """True for a real strategy (MirroredStrategy even over one device, DataParallel); False for one device."""
    if chosen is None or isinstance(chosen, OneDevice):
        return False
    return isinstance(chosen, DataParallel) or not type(chosen).__name__.startswith("_DefaultDistributionStrategy")


def for_strategy(dataset, chosen):
    """`dataset` ready for `chosen`. MirroredStrategy: sharded by DATA (the streams come from memory or
    memory-mapped arrays, not files, so tf.data's default FILE sharding has nothing to split; a single-worker
    MirroredStrategy splits each global batch over its replicas and shards nothing). DataParallel: each
    (x, y) batch padded to a multiple of the devices, as (x, y, sample weight) with weight 0 on the padding.
    One device: `dataset` untouched."""
    if not is_distributed(chosen):
        return dataset
    import tensorflow as tf

    if isinstance(chosen, DataParallel):
        return dataset.map(lambda x, y: padded_batch(x, y, chosen.num_replicas_in_sync))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def padded_batch(x, y, multiple: int):
    """(x, y, weights) with rows repeated from the batch's start to a multiple of `multiple`, weight 0 on them:
    real rows, so BatchNorm's batch statistics (when it trains) see photos, not zeros."""
    import tensorflow as tf

    size = tf.shape(x)[0]
    padded = size + (-size) % multiple
    rows = tf.range(padded) % size
    weights = tf.cast(tf.range(padded) < size, tf.float32)
    return tf.gather(x, rows), tf.gather(y, rows), weights


def forward(model):
    """model.predict_on_batch for numpy batches of any length; under a DataParallel distribution (set for the
    process) each batch is padded to a multiple of the devices and the padding's outputs dropped."""
    devices = data_parallel_devices()
    if devices <= 1:
        return lambda batch: np.asarray(model.predict_on_batch(batch))

    def padded(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        extra = (-len(batch)) % devices
        rows = np.arange(len(batch) + extra) % max(len(batch), 1)
        return np.asarray(model.predict_on_batch(batch[rows]))[:len(batch)]

    return padded


def data_parallel_devices() -> int:
    """How many devices the process's keras.distribution splits a batch over (1 without one)."""
    return _jax_strategy().num_replicas_in_sync if backend.name() == "jax" else 1


def batch_line(global_batch: int, chosen=None) -> str:
    """"batch 16 per replica x 2 replicas = 32 global": data.batch_size is the global batch."""
    replicas = 1 if chosen is None else chosen.num_replicas_in_sync
    per, rest = divmod(global_batch, replicas)
    per_text = f"{per}" if rest == 0 else f"{per}-{per + 1}"
    line = (f"batch {per_text} per replica x {replicas} replica{'s' if replicas > 1 else ''} = {global_batch} global "
            f"(data.batch_size is the global batch)")
    if rest:
        line += f"; note: {global_batch} does not split evenly over {replicas} replicas"
        if isinstance(chosen, DataParallel):
            line += f" (each batch padded to {global_batch + replicas - rest} with rows at weight 0: wasted work)"
    return line


def describe(chosen=None) -> str:
    """The backend, accelerator and strategy: 'backend jax (8 tpu devices), accelerator: TPU, distribute: ...'."""
    text = f"{backend.describe()}, accelerator: {accelerator() or 'none (CPU)'}"
    if chosen is None:
        return text
    if not is_distributed(chosen):
        return f"{text}, distribute: none (default strategy, one device)"
    if isinstance(chosen, DataParallel):
        names = ", ".join(f"{d.platform}:{d.id}" for d in chosen.devices)
        return f"{text}, distribute: DataParallel x {chosen.num_replicas_in_sync} devices ({names})"
    devices = ", ".join(getattr(chosen.extended, "worker_devices", ()))
    return f"{text}, distribute: {type(chosen).__name__} x {chosen.num_replicas_in_sync} replicas ({devices})"
