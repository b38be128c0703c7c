"""Stage 1 on cached backbone features: the head alone learns on feature vectors, in seconds.

    python -m kit train --config configs/dogs-vs-cats-redux.yaml --set train.finetune_epochs=0

Used by the train stage (kit/train/fit.py) when train.head=features: before fine-tuning, or as the whole
run when train.finetune_epochs=0 (fast.ai's precompute=True). The features come from kit/model/features.py
(cached on disk, train.feature_passes augmented passes added); the head trained is the model's OWN head
layers, so the full model (raw pixels in) carries the result.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

from kit.config import Config
from kit.data.pipeline import prefetched
from kit.errors import KitError
from kit.fsutil import write_text_atomic
from kit.model import device, features
from kit.model.optim import schedule_values, sgdr_schedule
from kit.runs import RunDir
from kit.train.callbacks import BestEpoch, EpochExtras
from kit.train.recipe import compile_model, label_array, optimizer


class EpochBar(keras.callbacks.Callback):
    """One progress bar over the epochs, showing the validation log loss."""

    def __init__(self, epochs: int):
        super().__init__()
        self.bar = tqdm(total=epochs, desc="head on features", unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.bar.set_postfix(val_log_loss=f"{(logs or {}).get('val_log_loss', float('nan')):.4f}")
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


def _feature_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None, strategy=None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return device.for_strategy(prefetched(ds.batch(batch_size)), strategy)


def feature_arrays(cfg: Config, model: keras.Model, index) -> tuple[tuple, tuple]:
    """((train features, targets), (val features, targets)): the training set with its augmented passes."""
    n_classes, identity = len(index.classes), features.backbone_identity(model)
    train_xy = features.training_features(cfg, model, list(index.train["path"]),
                                          label_array(index.train["label"].to_numpy(), n_classes), identity)
    val_x = features.features(cfg, model, list(index.val["path"]), "val", "original", identity=identity)
    return train_xy, (val_x, label_array(index.val["label"].to_numpy(), n_classes))


def fit_head(cfg: Config, model: keras.Model, train_xy, val_xy, run_dir: RunDir, n_classes: int,
             extra_callbacks=(), choose_epoch: bool = False) -> BestEpoch:
    """Train the model's head on feature arrays (`feature_arrays`) for train.head_epochs; leave the last epoch's
    weights in place (`choose_epoch`: the epoch with the lowest log loss on val_xy, e.g. a fold's held part).

    The last epoch, not the best: the one cosine cycle anneals to a rate near 0, so the head has converged there
    (its validation curve is flat over the last epochs), and an epoch picked on the validation images would
    flatter the score they then report (issue 15). val_xy may be None (the refit on every labelled image:
    kit/train/refit.py). Writes metrics.csv and lr.csv (epochs 0 .. train.head_epochs - 1) and returns the
    BestEpoch (`best`: the kept epoch's validation log loss). train.head_solver=logistic: solved exactly instead
    (kit/train/logistic.py), the same files written. A NaN loss saves the best epoch so far as the
    run's best model and raises. `extra_callbacks`: the plan probe's epoch clock (kit/plan/probe.py times this
    very function).
    """
    from kit.train.logistic import fit_logistic, uses_logistic

    if uses_logistic(cfg):
        return fit_logistic(cfg, features.head_model(model), train_xy, val_xy, run_dir, n_classes)
    t, batch_size = cfg.train, cfg.data.batch_size
    steps_per_epoch = math.ceil(len(train_xy[0]) / batch_size)
    # ONE cosine cycle over all head epochs, not the fine-tuning restarts: a head on fixed features is a
    # (nearly) convex problem with nothing to escape from, and a restart late in the run undoes its
    # annealing. A choice on principle: on the mini competition's cached features the spread over seeds
    # hides the difference.
    schedule = sgdr_schedule(t.head_lr, steps_per_epoch, t.head_epochs, 1.0, t.warmup_epochs)
    # Under the full model's strategy (a MirroredStrategy's variables take updates only inside its scope); the
    # default strategy for a model built without one. data.batch_size is the global batch here too.
    strategy = device.model_strategy(model)
    with strategy.scope():
        head = features.head_model(model)
        compile_model(head, optimizer(cfg, schedule), cfg, n_classes)
    # Per-step Python overhead dominates tiny steps; but several steps per call under a MirroredStrategy fail in
    # Keras 3.15's step loop ("You must feed a value for placeholder tensor 'while/body/.../Placeholder_1'").
    head.steps_per_execution = 1 if device.is_distributed(strategy) else min(steps_per_epoch, 32)
    best = BestEpoch()
    callbacks = [EpochExtras("head"), keras.callbacks.CSVLogger(str(run_dir.metrics)), best,
                 keras.callbacks.TerminateOnNaN(), EpochBar(t.head_epochs), *extra_callbacks]
    val_data = None if val_xy is None else _feature_dataset(*val_xy, 4096, None, strategy)
    history = head.fit(_feature_dataset(*train_xy, batch_size, cfg.data.seed, strategy), epochs=t.head_epochs,
                       verbose=0, shuffle=False, validation_data=val_data, callbacks=callbacks)
    losses = history.history.get("loss", [])
    _write_lr_csv(run_dir, schedule, steps_per_epoch, len(losses))
    if not losses or not np.isfinite(losses[-1]):
        if best.weights is not None:
            head.set_weights(best.weights)  # the model's own head layers: the full model has them too
            run_dir.save_model(model)
        raise KitError(f"training loss became NaN on the cached features: lower train.head_lr "
                       f"(best epoch so far kept in {run_dir.path})")
    if choose_epoch and best.weights is not None:
        head.set_weights(best.weights)
    elif val_xy is not None:
        best.best, best.best_epoch = float(history.history["val_log_loss"][-1]), len(losses)
    return best


def _write_lr_csv(run_dir: RunDir, schedule, steps_per_epoch: int, epochs: int) -> None:
    steps = np.arange(steps_per_epoch * epochs)
    frame = pd.DataFrame({"step": steps, "epoch": steps // steps_per_epoch, "lr": schedule_values(schedule, steps)})
    write_text_atomic(run_dir.lr, frame.to_csv(index=False))
