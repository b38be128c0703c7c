"""The learning-rate range test: batch losses, divergence, untouched weights, a sensible suggestion, outputs."""
import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kit import paths as kit_paths
from kit.config import LrFindConfig, load_config
from kit.errors import KitError
from kit.model import features
from kit.runs import RunDir
from kit.train import fit, lr_find
from tests.model.test_features import fixed_weights


def logistic(d: int) -> keras.Model:
    inputs = keras.Input((d,))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dropout(0.2)(inputs)))


def linear_problem(d=32, n=2400, noise=0.1, seed=0):
    """A noisy linear rule: the kind of problem a logistic head on backbone features solves."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)

    def sample(count):
        x = rng.normal(size=(count, d)).astype(np.float32)
        y = (x @ w > 0).astype(np.float32)
        flip = rng.random(count) < noise
        y[flip] = 1 - y[flip]
        return x, y[:, None]
    return sample(n), sample(600)


def stream(x, y, batch_size=32, seed=0):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat().batch(batch_size)


def adam(model):
    model.compile(keras.optimizers.Adam(1e-6), "binary_crossentropy")


def test_callback_records_each_batch_loss_at_exponential_rates():
    """Keras logs a running mean per epoch; the callback must see every batch's own loss."""
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones")(inputs))
    x = np.array([[0.0]] * 4 + [[-1.0]] * 4, np.float32)  # batches alternate: loss ln 2, then ln(1 + e)
    ds = tf.data.Dataset.from_tensor_slices((x, np.ones((8, 1), np.float32))).batch(4).repeat()
    test = lr_find.LRRangeTest(1e-12, 1e-10, steps=11, smoothing=0.5, diverge=100)
    model.compile(keras.optimizers.SGD(1e-12), "binary_crossentropy")
    model.fit(ds, epochs=1, steps_per_epoch=11, callbacks=[test], verbose=0, shuffle=False)
    frame = test.frame()
    assert len(frame) == 11 and not test.diverged
    np.testing.assert_allclose(frame["loss"][::2], np.log(2), rtol=1e-5)
    np.testing.assert_allclose(frame["loss"][1::2], np.log1p(np.e), rtol=1e-5)
    np.testing.assert_allclose(frame["lr"].iloc[[0, 5, 10]], [1e-12, 1e-11, 1e-10], rtol=1e-9)
    # Bias-corrected EMA: the first point is the first loss, not half of it.
    assert frame["smoothed"].iloc[0] == pytest.approx(np.log(2), rel=1e-5)
    assert frame["smoothed"].iloc[1] == pytest.approx((0.25 * np.log(2) + 0.5 * np.log1p(np.e)) / 0.75, rel=1e-5)


def test_suggestion_falls_where_training_is_best_and_weights_are_untouched():
    """Adam on a logistic head: fixed-rate runs put the best rate at 1e-2..3e-2 (measured: 0.46 log loss
    after 2 epochs at 1e-2, 0.48 at 3e-2, 0.55 at 3e-3, 0.71 at 3e-1). The suggestion must land in 3e-3..1e-1
    and one epoch at it must beat one epoch at a thirtieth of it and at thirty times it."""
    (xt, yt), (xv, yv) = linear_problem()
    keras.utils.set_random_seed(1)
    model = logistic(32)
    before = [w.copy() for w in model.get_weights()]
    frame, diverged = lr_find.range_test(model, stream(xt, yt), adam, LrFindConfig())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the caller's model untouched
    assert getattr(model, "optimizer", None) is None  # and never compiled
    frame["centred"] = lr_find.centred_curve(frame)
    suggestion = lr_find.suggest(frame)
    assert suggestion["method"] == "steepest descent"
    assert 3e-3 <= suggestion["lr"] <= 1e-1 and suggestion["lr"] < suggestion["min_lr"]

    def val_loss(lr):
        keras.utils.set_random_seed(0)
        trial = logistic(32)
        trial.compile(keras.optimizers.Adam(lr), "binary_crossentropy")
        trial.fit(xt, yt, batch_size=32, epochs=1, verbose=0)
        return trial.evaluate(xv, yv, verbose=0)
    best = val_loss(suggestion["lr"])
    assert best < val_loss(suggestion["lr"] / 30) and best < val_loss(suggestion["lr"] * 30)


def test_divergence_stops_the_test_early():
    (xt, yt), _ = linear_problem(d=8, noise=0.0)
    settings = LrFindConfig(start_lr=1e-4, end_lr=1e4, steps=200, diverge=4.0)
    frame, diverged = lr_find.range_test(logistic(8), stream(xt, yt), lambda m: m.compile(
        keras.optimizers.SGD(1e-4), "binary_crossentropy"), settings)
    assert diverged and 3 <= len(frame) < 200
    last = frame["smoothed"].iloc[-1]
    assert not np.isfinite(frame["loss"].iloc[-1]) or last > 4.0 * frame["smoothed"].iloc[:-1].min()


def test_suggest_picks_the_steepest_fall_before_the_minimum():
    lr = np.logspace(-6, 0, 100)
    x = np.log10(lr)
    loss = 0.7 - 0.6 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -1, (x + 1) ** 2 * 5, 0)  # falls fastest at 1e-3
    frame = pd.DataFrame({"lr": lr, "loss": loss, "smoothed": loss})
    suggestion = lr_find.suggest(frame)
    assert suggestion["lr"] == pytest.approx(1e-3, rel=0.2)
    assert 1e-2 < suggestion["min_lr"] < 1e-1 + 1e-9


def test_no_descent_suggests_a_tenth_of_the_last_stable_rate():
    """An already trained model: flat loss, then a blow-up. The minimum is at the start; min / 10 would be useless."""
    lr = np.logspace(-6, -1, 30)
    loss = np.where(lr < 3e-3, 0.03, 0.9)
    loss[:3] = [0.02, 0.01, 0.02]
    frame = pd.DataFrame({"lr": lr, "loss": loss, "smoothed": loss})
    suggestion = lr_find.suggest(frame, diverged=True)
    assert suggestion["method"].startswith("no descent")
    assert suggestion["lr"] == pytest.approx(lr[-2] / 10)


@pytest.fixture
def tiny(indexed, competition_zip, tmp_path):
    return indexed(competition_zip, "data.image_size=32", "data.batch_size=8", f"model.weights={fixed_weights(tmp_path)}",
                   "train.head=features", "train.head_epochs=2", "train.finetune_epochs=0", "lr_find.steps=30")


def test_run_head_stage_writes_plot_csv_and_summary(tiny, capsys, monkeypatch):
    png = lr_find.run(tiny)
    folder = png.parent
    assert folder.parent == kit_paths.runs_dir(tiny) / "lr_find"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    frame = pd.read_csv(folder / "lr_find.csv")
    assert list(frame.columns) == ["lr", "loss", "smoothed", "centred"] and 3 <= len(frame) <= 30
    assert (np.diff(np.log(frame["lr"])) > 0).all()
    summary = json.loads((folder / "lr_find.json").read_text())
    assert summary["stage"] == "head" and summary["rate_key"] == "train.head_lr"
    out = capsys.readouterr().out
    assert f"suggested train.head_lr={summary['suggestion']['lr']:.2e}" in out and str(png) in out
    assert (folder / "config.yaml").is_file()

    def no_computing(*args, **kwargs):
        raise AssertionError("the training features should come from the cache")
    monkeypatch.setattr(features, "_compute", no_computing)
    second = lr_find.run(tiny)
    assert second != png and second.is_file()  # a second folder, the first kept


def test_run_finetune_stage_from_a_run_leaves_the_run_alone(tiny, capsys):
    tiny.train.run_name = "head"
    run = RunDir(fit.run(tiny))
    before = run.best_model.read_bytes()
    tiny.lr_find.stage, tiny.lr_find.steps = "finetune", 12
    png = lr_find.run(tiny, run_name="head")
    assert png.is_file() and run.best_model.read_bytes() == before
    summary = json.loads((png.parent / "lr_find.json").read_text())
    assert summary["rate_key"] == "train.lr" and summary["run"] == str(run.path)
    assert "suggested train.lr=" in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [
    ("start_lr=1.0", "start_lr .* must be below lr_find.end_lr"), ("stage=everything", "one of head, finetune"),
    ("steps=3", "from 10 to"), ("smoothing=1.0", "< 1"), ("diverge=1.0", "> 1")])
def test_bad_settings_are_clear_errors_at_load(setting, message):
    with pytest.raises(KitError, match=f"lr_find.*{message}"):
        load_config(None, [f"lr_find.{setting}"])
