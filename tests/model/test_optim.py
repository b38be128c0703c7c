"""Layer-group learning rates (one optimizer) and the SGDR schedule: the recipe, measured.

Backend-neutral: `make test-jax` runs this file on JAX too (KERAS_BACKEND=jax)."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kit.errors import KitError
from kit.model.optim import (GroupLRAdam, LinearWarmup, epochs_for_cycles, group_multipliers, make_optimizer,
                       sgdr_schedule)

RATIOS = {"low": 0.0, "mid": 0.1, "top": 1.0}


def tiny_model() -> keras.Model:
    """Three Dense layers named after their groups; no dropout, so a step is deterministic."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, activation="tanh", name="low")(inputs)
    x = keras.layers.Dense(5, activation="tanh", name="mid")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="top")(x)
    return keras.Model(inputs, outputs)


def tiny_data(n: int = 16):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("float32")


def multipliers_for(model: keras.Model) -> dict[str, float]:
    groups = [model.get_layer(name).trainable_variables for name in RATIOS]
    return group_multipliers(groups, list(RATIOS.values()))


def gradients(model: keras.Model, x, y) -> dict[str, np.ndarray]:
    """The mean binary cross-entropy's gradient for each trainable variable, by the backend's autodiff."""
    def loss_of(trainable):
        out, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], x, training=True)
        return keras.ops.mean(keras.losses.binary_crossentropy(y[:, None], out))

    trainable = [v.value for v in model.trainable_variables]
    if keras.backend.backend() == "jax":
        import jax

        grads = jax.grad(loss_of)(trainable)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss = loss_of(trainable)
        grads = tape.gradient(loss, trainable)
    return {v.path: keras.ops.convert_to_numpy(g) for v, g in zip(model.trainable_variables, grads)}


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for v in model.trainable_variables}


def group_of(path: str) -> str:
    return path.split("/")[0]


def test_group_multipliers_map_each_path_to_its_group_ratio():
    assert multipliers_for(tiny_model()) == {"low/kernel": 0.0, "low/bias": 0.0, "mid/kernel": 0.1,
                                             "mid/bias": 0.1, "top/kernel": 1.0, "top/bias": 1.0}


def test_one_sgd_step_moves_each_group_by_exactly_its_ratio():
    model = tiny_model()
    x, y = tiny_data()
    lr = 0.5
    optimizer = make_optimizer("sgd", lr, multipliers_for(model))
    grads, before = gradients(model, x, y), snapshot(model)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(grads[v.path]), v) for v in model.trainable_variables])
    for path, start in before.items():
        moved = snapshot(model)[path] - start
        # atol: float32 weights of ~0.5 hold a step to ~3e-8
        np.testing.assert_allclose(moved, -lr * RATIOS[group_of(path)] * grads[path], rtol=1e-5, atol=1e-7)
        if RATIOS[group_of(path)] > 0:
            assert np.abs(moved).max() > 1e-4  # a real step, so the equality above means something
    assert all(np.array_equal(before[p], snapshot(model)[p]) for p in ("low/kernel", "low/bias"))


def test_first_adam_step_size_scales_with_the_multiplier():
    model = tiny_model()
    x, y = tiny_data()
    lr = 0.01
    optimizer = make_optimizer("adam", lr, multipliers_for(model))
    grads, before = gradients(model, x, y), snapshot(model)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(grads[v.path]), v) for v in model.trainable_variables])
    for path, start in before.items():
        moved = snapshot(model)[path] - start
        g = grads[path]  # Keras' first Adam step: lr * g / (|g| + eps / sqrt(1 - beta_2)) ~ lr * sign(g)
        expected = lr * RATIOS[group_of(path)] * g / (np.abs(g) + 1e-7 / math.sqrt(1 - 0.999))
        np.testing.assert_allclose(-moved, expected, rtol=1e-3, atol=2e-8)  # atol: float32 weights ~0.5
        if RATIOS[group_of(path)] > 0:
            assert np.abs(moved).max() == pytest.approx(lr * RATIOS[group_of(path)], rel=0.05)


def test_fit_uses_the_multipliers_and_leaves_a_zero_group_untouched():
    """Through model.fit: update_step really is on the TensorFlow trainer's path."""
    model = tiny_model()
    x, y = tiny_data()
    lr = 0.5
    model.compile(optimizer=make_optimizer("sgd", lr, multipliers_for(model)), loss="binary_crossentropy")
    grads, before = gradients(model, x, y), snapshot(model)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)  # exactly one full-batch step
    after = snapshot(model)
    for path in before:
        np.testing.assert_allclose(after[path] - before[path], -lr * RATIOS[group_of(path)] * grads[path],
                                   rtol=1e-5, atol=1e-7)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # several more steps
    assert np.array_equal(before["low/kernel"], snapshot(model)["low/kernel"])
    assert not np.allclose(before["mid/kernel"], snapshot(model)["mid/kernel"])


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_is_scaled_and_spares_a_frozen_group(name):
    model = tiny_model()
    optimizer = make_optimizer(name, 0.1, multipliers_for(model), weight_decay=0.5)
    before = snapshot(model)
    zeros = [(keras.ops.zeros_like(v.value), v) for v in model.trainable_variables]
    optimizer.apply_gradients(zeros)  # zero gradients: only weight decay moves anything
    after = snapshot(model)
    np.testing.assert_array_equal(after["low/kernel"], before["low/kernel"])
    np.testing.assert_allclose(after["mid/kernel"], before["mid/kernel"] * (1 - 0.5 * 0.1 * 0.1), rtol=1e-6)
    np.testing.assert_allclose(after["top/kernel"], before["top/kernel"] * (1 - 0.5 * 0.1 * 1.0), rtol=1e-6)


def test_optimizer_saves_and_loads_with_the_model(tmp_path):
    model = tiny_model()
    x, y = tiny_data()
    schedule = sgdr_schedule(0.05, steps_per_epoch=4, cycle_epochs=1, cycle_mult=2, warmup_epochs=0.5)
    model.compile(optimizer=make_optimizer("adam", schedule, multipliers_for(model)), loss="binary_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, GroupLRAdam)
    assert dict(loaded.optimizer.lr_multipliers) == multipliers_for(model)
    assert int(loaded.optimizer.iterations) == 4
    assert isinstance(loaded.optimizer._learning_rate, LinearWarmup)
    for step in (0, 1, 2, 5, 9):
        assert math.isclose(float(loaded.optimizer._learning_rate(step)), float(schedule(step)), rel_tol=1e-6)
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    frozen = snapshot(loaded)["low/kernel"]
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)  # the multipliers still act after loading
    assert np.array_equal(frozen, snapshot(loaded)["low/kernel"])
    assert int(loaded.optimizer.iterations) == 8


def test_backup_and_restore_resumes_the_iteration_count(tmp_path):
    x, y = tiny_data()

    def fresh():
        model = tiny_model()
        model.compile(optimizer=make_optimizer("adam", sgdr_schedule(0.05, 4, 1, 2), multipliers_for(model)),
                      loss="binary_crossentropy")
        return model

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    first = fresh()
    first.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[backup])
    resumed = fresh()
    history = resumed.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[backup])
    assert len(history.history["loss"]) == 2  # epoch 1 was restored, not re-run
    assert int(resumed.optimizer.iterations) == 12


def test_sgdr_restarts_where_the_cycles_say():
    base, alpha = 0.1, 0.05
    schedule = sgdr_schedule(base, steps_per_epoch=10, cycle_epochs=2, cycle_mult=2, alpha=alpha)
    lr = lambda step: float(schedule(step))  # noqa: E731

    def cosine(fraction):  # within a cycle: base -> alpha * base
        return base * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * fraction)) + alpha)

    for restart in (0, 20, 60, 140):  # cycles of 20, 40, 80 steps
        assert math.isclose(lr(restart), base, rel_tol=1e-6)
    assert math.isclose(lr(10), cosine(0.5), rel_tol=1e-5)
    assert math.isclose(lr(19), cosine(19 / 20), rel_tol=1e-5) and abs(lr(19) - alpha * base) < 0.01 * base
    assert math.isclose(lr(59), cosine(39 / 40), rel_tol=1e-5) and abs(lr(59) - alpha * base) < 0.01 * base
    assert math.isclose(lr(40), cosine(0.5), rel_tol=1e-5)
    assert epochs_for_cycles(2, 2, 3) * 10 == 140


def test_warmup_ramps_linearly_then_starts_the_cycles():
    schedule = sgdr_schedule(0.1, steps_per_epoch=10, cycle_epochs=1, cycle_mult=1, warmup_epochs=0.5)
    lr = [float(schedule(step)) for step in range(30)]
    np.testing.assert_allclose(lr[:5], [0.02, 0.04, 0.06, 0.08, 0.1], rtol=1e-6)
    assert math.isclose(lr[5], 0.1, rel_tol=1e-6) and math.isclose(lr[15], 0.1, rel_tol=1e-6)  # restarts shift by 5
    assert lr[14] < 0.01 and lr[10] == pytest.approx(0.05, rel=1e-5)


def test_epochs_for_cycles():
    assert epochs_for_cycles(1, 2, 3) == 7
    assert epochs_for_cycles(1, 1, 4) == 4
    assert epochs_for_cycles(0.5, 3, 2) == 2
    assert epochs_for_cycles(1, 2, 0) == 0


@pytest.mark.parametrize("call, message", [
    (lambda: group_multipliers([[], []], [0.1, 0.5, 1.0]), "has 3 values for 2 layer groups"),
    (lambda: group_multipliers([[]], [-1.0]), "must be >= 0"),
    (lambda: make_optimizer("lion", 0.1, {}), "unknown optimizer 'lion'"),
    (lambda: make_optimizer("adam", 0.1, {}, weight_decay=-1), "weight decay must be >= 0"),
    (lambda: sgdr_schedule(0.1, 10, 0.01, 2), "at least one step"),
    (lambda: sgdr_schedule(0.1, 10, 1, 0), "cycle_mult must be > 0"),
    (lambda: sgdr_schedule(0.1, 10, 1, 2, warmup_epochs=-1), "warmup_epochs must be >= 0"),
])
def test_bad_settings_are_one_line_kit_errors(call, message):
    with pytest.raises(KitError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_two_variables_with_one_path_are_refused():
    a, b = tiny_model(), tiny_model()  # same layer names, so the same variable paths
    with pytest.raises(ValueError, match="share the path 'low/kernel'"):
        group_multipliers([a.get_layer("low").trainable_variables, b.get_layer("low").trainable_variables], [1, 1])


def test_multipliers_naming_no_variable_warn():
    model = tiny_model()
    optimizer = GroupLRAdam(learning_rate=0.1, lr_multipliers={"gone/kernel": 0.5})
    with pytest.warns(UserWarning, match="1 learning-rate multipliers name no trainable variable"):
        optimizer.build(model.trainable_variables)
    assert optimizer.lr_scale(model.trainable_variables[0]) == 1.0
