"""One optimizer with a learning rate per layer group, and the SGDR (cosine with restarts) schedule.

    python -c "from kit.model.optim import sgdr_schedule; s = sgdr_schedule(1e-3, 10, 1, 2); \
print([float(s(i)) for i in (0, 9, 10, 29, 30)])"

Keras 3 has no per-layer learning rate. `make_optimizer` returns a normal Keras optimizer (Adam,
AdamW or SGD) whose every step for a variable is scaled by that variable's multiplier, looked up
by `variable.path` (e.g. "block_16_project/kernel"). One optimizer, one state, one checkpoint; the
multipliers are part of its config, so they save and load with a `.keras` model.

Why overriding `update_step` works under `model.fit` on TensorFlow: the trainer's train_step calls
`optimizer.apply_gradients` -> BaseOptimizer.apply -> `_backend_apply_gradients` ->
TFOptimizer._backend_update_step -> `_distributed_tf_update_step`, which calls
`self.update_step(grad, var, learning_rate)` for each variable. There `var` is the raw
tf.Variable, not the Keras Variable, so it has no `.path`: the multipliers are resolved to a
tuple indexed like the optimizer's variables in `build` (which sees the Keras Variables) and
looked up in `update_step` by `_get_variable_index`, which accepts either kind.
"""
from __future__ import annotations

import math
import warnings

import keras
import numpy as np

from kit.errors import KitError


class _GroupLR:
    """Mixin over a Keras optimizer: the step of each variable times its group's multiplier."""

    def __init__(self, *args, lr_multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._scales = ()

    def build(self, variables):
        super().build(variables)
        # Variables no multiplier names (e.g. a head added later) train at the full rate.
        self._scales = tuple(self.lr_multipliers.get(v.path, 1.0) for v in variables)
        unknown = set(self.lr_multipliers) - {v.path for v in variables}
        if unknown:
            warnings.warn(f"{len(unknown)} learning-rate multipliers name no trainable variable, "
                          f"e.g. {sorted(unknown)[0]!r}: they are ignored")

    def lr_scale(self, variable) -> float:
        """The multiplier of `variable` (a Keras Variable or the tf.Variable inside it)."""
        return self._scales[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        scale = self.lr_scale(variable)
        if scale == 0.0:  # a frozen group: no update, and its optimizer state stays put
            return
        super().update_step(gradient, variable, learning_rate * scale)

    def _apply_weight_decay(self, variables):
        # Decoupled weight decay is a step too: scale it the same way (and spare frozen groups).
        if self.weight_decay is None:
            return
        for variable in variables:
            scale = self.lr_scale(variable)
            if scale != 0.0 and self._use_weight_decay(variable):
                lr = keras.ops.cast(self.learning_rate, variable.dtype) * scale
                wd = keras.ops.cast(self.weight_decay, variable.dtype)
                variable.assign(variable - variable * wd * lr)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="kit")
class GroupLRAdam(_GroupLR, keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable."""


@keras.saving.register_keras_serializable(package="kit")
class GroupLRAdamW(_GroupLR, keras.optimizers.AdamW):
    """AdamW with a learning-rate multiplier per variable (weight decay scaled alike)."""


@keras.saving.register_keras_serializable(package="kit")
class GroupLRSGD(_GroupLR, keras.optimizers.SGD):
    """SGD (momentum optional) with a learning-rate multiplier per variable."""


OPTIMIZERS = {"adam": GroupLRAdam, "adamw": GroupLRAdamW, "sgd": GroupLRSGD}


def make_optimizer(name: str, schedule_or_lr, multipliers: dict[str, float], weight_decay: float = 0.0,
                   **options) -> keras.optimizers.Optimizer:
    """An optimizer from OPTIMIZERS by name; `options` go to its constructor (e.g. momentum=0.9)."""
    if name not in OPTIMIZERS:
        raise KitError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")
    if weight_decay < 0:
        raise KitError(f"weight decay must be >= 0, got {weight_decay}: check train.weight_decay")
    if name != "adamw" and weight_decay == 0:
        weight_decay = None  # Keras: None = no decay step at all; AdamW insists on a number
    return OPTIMIZERS[name](learning_rate=schedule_or_lr, lr_multipliers=multipliers,
                            weight_decay=weight_decay, **options)


def group_multipliers(groups: list[list[keras.Variable]], ratios: list[float]) -> dict[str, float]:
    """{variable.path: ratio of its group}: ratios[0] for the lowest group ... ratios[-1] for the head."""
    if len(groups) != len(ratios):
        raise KitError(f"train.group_lr_ratios has {len(ratios)} values for {len(groups)} layer groups: "
                       f"give one ratio per group")
    if any(r < 0 for r in ratios):
        raise KitError(f"train.group_lr_ratios must be >= 0 (0 = frozen), got {ratios}")
    multipliers: dict[str, float] = {}
    for group, ratio in zip(groups, ratios):
        for variable in group:
            if variable.path in multipliers:  # two variables, one key: the multipliers would be ambiguous
                raise ValueError(f"two trainable variables share the path {variable.path!r}")
            multipliers[variable.path] = float(ratio)
    return multipliers


@keras.saving.register_keras_serializable(package="kit")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Ramp linearly up to `after(0)` over `warmup_steps` steps, then follow `after`, shifted.

    Step s < warmup_steps gets after(0) * (s + 1) / warmup_steps, so the first step already
    moves and the last warm-up step reaches the full rate; step s >= warmup_steps gets
    after(s - warmup_steps), so the cycles of `after` start when the warm-up ends.
    """

    def __init__(self, after, warmup_steps: int):
        self.after = after
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.warmup_steps
        ramp = self.after(0) * (step + 1.0) / max(warm, 1)
        return keras.ops.where(step < warm, ramp, self.after(keras.ops.maximum(step - warm, 0.0)))

    def get_config(self):
        return {"after": keras.saving.serialize_keras_object(self.after), "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["after"]), config["warmup_steps"])


def sgdr_schedule(base_lr: float, steps_per_epoch: int, cycle_epochs: float, cycle_mult: float,
                  warmup_epochs: float = 0.0, alpha: float = 0.0) -> keras.optimizers.schedules.LearningRateSchedule:
    """Cosine annealing with warm restarts (SGDR): cycles of cycle_epochs, cycle_epochs*mult, ...

    Each cycle starts at base_lr and falls to alpha*base_lr; an optional linear warm-up of
    warmup_epochs comes first and delays the cycles by that much.
    """
    first_cycle = round(cycle_epochs * steps_per_epoch)
    if steps_per_epoch < 1 or first_cycle < 1:
        raise KitError(f"an SGDR cycle must last at least one step, got train.cycle_epochs={cycle_epochs} "
                       f"x {steps_per_epoch} steps per epoch: raise train.cycle_epochs")
    if cycle_mult <= 0:
        raise KitError(f"train.cycle_mult must be > 0 (1 = equal cycles, 2 = each twice as long), got {cycle_mult}")
    if warmup_epochs < 0:
        raise KitError(f"train.warmup_epochs must be >= 0, got {warmup_epochs}")
    schedule = keras.optimizers.schedules.CosineDecayRestarts(
        base_lr, first_decay_steps=first_cycle, t_mul=cycle_mult, m_mul=1.0, alpha=alpha)
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    return LinearWarmup(schedule, warmup_steps) if warmup_steps > 0 else schedule


def schedule_values(schedule, steps) -> np.ndarray:
    """The rate of `schedule` at each of `steps` (float64), computed in one compiled call on either backend
    (step by step: Keras' restart schedule does not broadcast over a vector of steps)."""
    steps = np.asarray(steps, np.float32)
    if not len(steps):
        return np.zeros(0)
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.jit(jax.vmap(lambda s: keras.ops.cast(schedule(s), "float32")))(steps), np.float64)
    import tensorflow as tf

    each_step = tf.function(lambda s: tf.map_fn(lambda i: tf.cast(schedule(i), tf.float32), s))
    return each_step(tf.constant(steps)).numpy().astype(np.float64)


def epochs_for_cycles(cycle_epochs: float, cycle_mult: float, n_cycles: int) -> float:
    """Epochs that n whole SGDR cycles take (warm-up not included): 1, 2, 4 -> 7 for n=3."""
    if n_cycles < 0:
        raise ValueError(f"n_cycles must be >= 0, got {n_cycles}")
    if math.isclose(cycle_mult, 1.0):
        return cycle_epochs * n_cycles
    return cycle_epochs * (cycle_mult ** n_cycles - 1) / (cycle_mult - 1)
