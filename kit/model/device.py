"""Settings decided by the device: XLA and mixed precision help a GPU and hurt or do nothing on a CPU.

    python -c "from kit.model.device import describe; print(describe())"

Measured on this project's 2-core CPU machine (BENCHMARKS.md, section 3): XLA (`jit_compile=True`) made
MobileNetV2 training several times slower and mixed precision gave nothing, while both are what a
GPU wants. So `auto` means: on when an accelerator is present, off otherwise.

More than one device (`train.distribute`, `strategy`): `auto` is tf.distribute.MirroredStrategy over the GPUs
when there are two or more (Kaggle's T4 x2), else TensorFlow's default strategy (one device, nothing added);
`mirrored` forces MirroredStrategy (over the GPUs, or over every logical CPU device when there is no GPU: how
the tests run it on two logical CPUs); `none` is the default strategy. data.batch_size stays the GLOBAL batch
(kit/train/fit.py): each of n replicas gets batch_size / n. Multi-worker training (MultiWorkerMirroredStrategy)
is not offered: it fails with Keras 3 (keras-team/keras#20585).
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


def strategy(cfg: Config):
    """The tf.distribute strategy train.distribute asks for (auto | none | mirrored); see the module docstring."""
    import tensorflow as tf

    choice = cfg.train.distribute  # checked at load: auto, none or mirrored
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


def is_distributed(chosen) -> bool:
    """True for a real strategy (MirroredStrategy, even over one device); False for None or the default one."""
    return chosen is not None and not type(chosen).__name__.startswith("_DefaultDistributionStrategy")


def for_strategy(dataset, chosen):
    """`dataset` ready for `chosen`: under a real strategy, sharded by DATA (the streams come from memory or
    memory-mapped arrays, not files, so tf.data's default FILE sharding has nothing to split). A single-worker
    MirroredStrategy splits each global batch over its replicas and shards nothing; the policy matters for more
    than one worker. The default strategy gets `dataset` untouched."""
    if not is_distributed(chosen):
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def batch_line(global_batch: int, chosen=None) -> str:
    """"batch 16 per replica x 2 replicas = 32 global": data.batch_size is the global batch."""
    replicas = 1 if chosen is None else chosen.num_replicas_in_sync
    per, rest = divmod(global_batch, replicas)
    per_text = f"{per}" if rest == 0 else f"{per}-{per + 1}"
    line = (f"batch {per_text} per replica x {replicas} replica{'s' if replicas > 1 else ''} = {global_batch} global "
            f"(data.batch_size is the global batch)")
    if rest:
        line += f"; note: {global_batch} does not split evenly over {replicas} replicas"
    return line


def describe(chosen=None) -> str:
    """The accelerator, and the strategy when one is given: 'accelerator: GPU, distribute: mirrored x 2 (...)'."""
    text = f"accelerator: {accelerator() or 'none (CPU)'}"
    if chosen is None:
        return text
    if not is_distributed(chosen):
        return f"{text}, distribute: none (default strategy, one device)"
    devices = ", ".join(getattr(chosen.extended, "worker_devices", ()))
    return f"{text}, distribute: {type(chosen).__name__} x {chosen.num_replicas_in_sync} replicas ({devices})"
